r"""Recurrent layers (RNN, LSTM, GRU) and their backpropagation through time.

A recurrent layer unrolled over T time steps is a layered net whose layers share their
weights ("tied weights"). The backward rule is the one of that layered net: one pass
backward over the time steps per layer and direction, carrying the gradient of the hidden
(and cell) state from step t to step t-1, and the gradient of each tied weight is the sum
over the steps of the per-step gradients. That sum is taken in one matmul at the end:
with the pre-activation gradients of all steps stacked as rows, dA (N, G*H), and the
inputs and previous hidden states stacked alike, X (N, I) and Hprev (N, H),

    grad_W_ih = dA^T X,   grad_W_hh = dA_h^T Hprev,   grad_b = column sums,   grad_X = dA W_ih

Layout. Every sequence layout (time-major, ``batch_first``, unbatched, ``PackedSequence``)
is turned into rows in time-major order: step t owns rows [off_t, off_t + B_t), where B_t
(the batch size at step t) is non-increasing, as in a ``PackedSequence``. At step t only
the first B_t sequences are active; the state rows of the others are left untouched, so a
sequence that has ended keeps its last state (forward direction) and one that has not
started yet keeps its initial state (reverse direction). The backward visits the steps in
the opposite order and uses the same rule, so both directions need no special casing.

Gate conventions are torch's (weights stacked in this order): LSTM (i, f, g, o), GRU
(r, z, n). Dropout between layers (training, ``dropout > 0``) uses the keep mask drawn
from a generator seeded with ``seed + layer``; the backward regenerates it.

Saved for backward per layer and direction (rows of all steps): LSTM: Hprev, Cprev, the
activated gates, C; GRU: Hprev, the gates (r, z, n) and W_hn h + b_hn; RNN: Y only, its
Hprev is rebuilt in the backward from Y and h0 (step t read the state step t-1 wrote: copies,
no arithmetic, so the gradients are unchanged). Plus the input, h0/c0, the weights and the
(dropped-out) input of every layer above the first. Nothing is recomputed by running the
forward again.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import backend
from ._util import backward_from_per_sample, first_order_only, opmath, own
from ._rule import Rule


@dataclass(frozen=True)
class RNNOptions:
    mode: str                     # "LSTM", "GRU", "RNN_TANH", "RNN_RELU"
    num_layers: int
    bidirectional: bool
    has_biases: bool
    proj: bool                    # LSTM with proj_size > 0 (weight_hr present)
    dropout: float                # between layers; 0.0 unless training
    batch_first: bool
    unbatched: bool               # input (T, I), states (L*D, H)
    batch_sizes: tuple | None     # PackedSequence input: batch size per step; None otherwise

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def per_direction(self):      # weights per layer and direction
        return 2 + 2 * self.has_biases + self.proj


def layer_weights(opts: RNNOptions, params, layer: int, direction: int):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer and direction (None where absent)."""
    k = opts.per_direction
    w = list(params[(layer * opts.directions + direction) * k:][:k])
    w_ih, w_hh = w[0], w[1]
    b_ih, b_hh = (w[2], w[3]) if opts.has_biases else (None, None)
    w_hr = w[-1] if opts.proj else None
    return w_ih, w_hh, b_ih, b_hh, w_hr


def _steps(opts: RNNOptions, x: torch.Tensor):
    """[(row offset, batch size)] per time step, and the batch size."""
    if opts.batch_sizes is not None:
        sizes = list(opts.batch_sizes)
    elif opts.unbatched:
        sizes = [1] * x.shape[0]
    else:
        t, b = (x.shape[1], x.shape[0]) if opts.batch_first else (x.shape[0], x.shape[1])
        sizes = [b] * t
    offs, o = [], 0
    for s in sizes:
        offs.append((o, s))
        o += s
    return offs, (sizes[0] if sizes else (x.shape[0] if opts.batch_first else x.shape[1]))


def _to_rows(opts: RNNOptions, x: torch.Tensor) -> torch.Tensor:
    if opts.batch_sizes is not None or opts.unbatched:
        return x  # (N, F) already
    if opts.batch_first:
        x = x.transpose(0, 1)
    return x.reshape(-1, x.shape[-1])  # (T*B, F)


def _from_rows(opts: RNNOptions, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if opts.batch_sizes is not None or opts.unbatched:
        return y
    t, b = (like.shape[1], like.shape[0]) if opts.batch_first else (like.shape[0], like.shape[1])
    y = y.reshape(t, b, y.shape[-1])
    return y.transpose(0, 1).contiguous() if opts.batch_first else y


def _state_in(opts, s, sorted_indices):
    """h0/c0 as given -> (L*D, B, H) in the row order of the steps."""
    if opts.unbatched:
        return s.unsqueeze(1)
    return s if sorted_indices is None else s.index_select(1, sorted_indices)


def _state_out(opts, s, unsorted_indices):
    if opts.unbatched:
        return s.squeeze(1)
    return s if unsorted_indices is None else s.index_select(1, unsorted_indices)


def _dropout_keep(seed, layer, shape, p, device):
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + layer)
    return torch.rand(shape, generator=gen, device=device) >= p


def _keep_scale(p):
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def _tied_sum(a, b, per):
    r"""The gradient of a weight tied over the steps: sum over rows r of a_r b_r^T (sum of a_r for a
    bias, b None); per example (B, ...) when ``per`` (an :class:`_Examples`) is given."""
    if per is not None:
        return per.outer(a, b)
    return a.sum(0) if b is None else a.t().matmul(b)


class _Examples:
    r"""Which example each row of the stacked steps belongs to, for the per-sample rule.

    Step t owns rows [off_t, off_t + B_t), its j-th row being the j-th sequence in the steps'
    order (sorted by length for a PackedSequence). Rows are laid out as (B, T, F) per example
    (zeros at the steps a shorter sequence does not have), so the per-example tied-weight
    gradients are one batched matmul over the steps: grad_W[n] = sum_t a[n, t] b[n, t]^T.
    Results are returned in the caller's example order (``unsorted_indices``).
    """

    def __init__(self, steps, batch, unsorted_indices, device):
        self.batch, self.t = batch, len(steps)
        self.uniform = all(bs == batch for _, bs in steps)
        self.pos = None if self.uniform else torch.cat(
            [torch.arange(bs, device=device) * self.t + t for t, (_, bs) in enumerate(steps)])
        self.unsorted = unsorted_indices

    def _per(self, a):  # (N, F) -> (B, T, F)
        if self.uniform:
            return a.reshape(self.t, self.batch, a.shape[1]).transpose(0, 1)
        return a.new_zeros(self.batch * self.t, a.shape[1]).index_copy(0, self.pos, a).reshape(self.batch, self.t, -1)

    def outer(self, a, b=None):
        r = self._per(a).sum(1) if b is None else torch.bmm(self._per(a).transpose(1, 2), self._per(b))
        return r if self.unsorted is None else r.index_select(0, self.unsorted)


def _offsets_sizes(steps):
    """The steps as the compiled loops take them: ([row offset], [batch size]) in the order visited."""
    return [o for o, _ in steps], [b for _, b in steps]


# --- the cells: one direction of one layer, forward and backward through time ---
# NOTE (speed): the loops over time steps are Python, so each step does as few tensor ops as
# possible: results are written in place into preallocated row blocks (``out=``), and in the
# backward every factor that does not depend on the recursion (sigmoid'(i) g, ...) is
# computed for all steps at once before the loop. On CPU the compiled backend runs the same
# loops in C++ (csrc/cpu/recurrent.cpp: all steps in one call, W_hh packed
# once, each step's gate pre-activations formed and activated in registers); the input projection
# before and the tied-weight sums after (and so the per-sample rule) are these, shared by both backends.
def _lstm_forward(x, w, h, c, steps):
    w_ih, w_hh, b_ih, b_hh, w_hr = w
    H = w_hh.shape[0] // 4
    gi = x.matmul(w_ih.t()) if b_ih is None else torch.addmm(b_ih + b_hh, x, w_ih.t())  # (N, 4H): all steps
    if backend.use_cpp(gi, w_hh, w_hr, h, c):                 # the loop below, compiled (csrc/cpu/recurrent.cpp)
        Y, h, c, *res = torch.ops.torch_bp.lstm_layer_fwd(gi, w_hh, w_hr, h, c, *_offsets_sizes(steps))
        return Y, h, c, tuple(res)
    N, Hout = x.shape[0], h.shape[-1]
    Y, Hprev = x.new_empty(N, Hout), x.new_empty(N, Hout)
    Cprev, A, C = x.new_empty(N, H), x.new_empty(N, 4 * H), x.new_empty(N, H)
    w_hh_t = w_hh.t()
    for off, bs in steps:
        r = slice(off, off + bs)
        hp, cp = h[:bs], c[:bs]
        Hprev[r], Cprev[r] = hp, cp
        a = A[r]
        torch.addmm(gi[r], hp, w_hh_t, out=a)                 # gates (bs, 4H)
        a[:, :2 * H].sigmoid_()
        a[:, 2 * H:3 * H].tanh_()
        a[:, 3 * H:].sigmoid_()
        i, f, g, o = a.chunk(4, 1)
        cn = C[r]
        torch.mul(f, cp, out=cn)
        cn.addcmul_(i, g)                                      # c = f c_prev + i g
        if w_hr is None:
            torch.mul(o, torch.tanh(cn), out=Y[r])             # h = o tanh(c)
        else:
            torch.mm(o * torch.tanh(cn), w_hr.t(), out=Y[r])   # h = W_hr (o tanh(c))
        h[:bs], c[:bs] = Y[r], cn
    return Y, h, c, (Hprev, Cprev, A, C)


def _lstm_backward(x, w, res, dY, dh, dc, steps, need_w, per=None, h0=None):
    w_ih, w_hh, b_ih, b_hh, w_hr = w
    Hprev, Cprev, A, C = res
    H = C.shape[1]
    i, f, g, o = A.chunk(4, 1)
    if backend.use_cpp(dY, dh, dc, w_hh, w_hr, A):            # the loop below, compiled (csrc/cpu/recurrent.cpp)
        dA, dh, dc, dHo = torch.ops.torch_bp.lstm_layer_bwd(dY, dh, dc, w_hh, w_hr, Cprev, A, C,
                                                            *_offsets_sizes(steps))
    else:
        tc = torch.tanh(C)
        fac = torch.cat([g * i * (1.0 - i), Cprev * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], 1)
        oc = o * (1.0 - tc * tc)                               # d c / d h~ through h~ = o tanh(c)
        dA = torch.empty_like(A)
        dHo = torch.empty_like(dY) if w_hr is not None else None
        for off, bs in steps:
            r = slice(off, off + bs)
            dht = dh[:bs] + dY[r]                              # gradient of this step's output h
            if w_hr is not None:
                dHo[r] = dht
                dht = dht.mm(w_hr)                             # through h = W_hr h~
            dcn = torch.addcmul(dc[:bs], dht, oc[r])           # gradient of c_t
            da = dA[r]
            torch.mul(dcn.unsqueeze(1), fac[r, :3 * H].view(bs, 3, H), out=da[:, :3 * H].view(bs, 3, H))
            torch.mul(dht, fac[r, 3 * H:], out=da[:, 3 * H:])  # (da_i, da_f, da_g), da_o
            torch.mm(da, w_hh, out=dh[:bs])                    # gradient of h_{t-1}
            torch.mul(dcn, f[r], out=dc[:bs])                  # gradient of c_{t-1}
    grads = [None] * 5
    if need_w:
        grads[0] = _tied_sum(dA, x, per)
        grads[1] = _tied_sum(dA, Hprev, per)
        if b_ih is not None:
            grads[2] = grads[3] = _tied_sum(dA, None, per)
        if w_hr is not None:
            grads[4] = _tied_sum(dHo, o * torch.tanh(C), per)
    return dA.mm(w_ih), dh, dc, grads


def _gru_forward(x, w, h, _c, steps):
    w_ih, w_hh, b_ih, b_hh, _ = w
    H = w_hh.shape[0] // 3
    gi = x.matmul(w_ih.t()) if b_ih is None else torch.addmm(b_ih, x, w_ih.t())  # (N, 3H): all steps at once
    if backend.use_cpp(gi, w_hh, b_hh, h):                    # the loop below, compiled (csrc/cpu/recurrent.cpp)
        Y, h, *res = torch.ops.torch_bp.gru_layer_fwd(gi, w_hh, b_hh, h, *_offsets_sizes(steps))
        return Y, h, None, tuple(res)
    N = x.shape[0]
    Y, Hprev, A, HN = x.new_empty(N, H), x.new_empty(N, H), x.new_empty(N, 3 * H), x.new_empty(N, H)
    gh = x.new_empty(h.shape[0], 3 * H)
    w_hh_t = w_hh.t()
    for off, bs in steps:
        r = slice(off, off + bs)
        hp, a, ghb = h[:bs], A[r], gh[:bs]
        Hprev[r] = hp
        if b_hh is None:
            torch.mm(hp, w_hh_t, out=ghb)
        else:
            torch.addmm(b_hh, hp, w_hh_t, out=ghb)             # gh = W_hh h + b_hh
        torch.add(gi[r, :2 * H], ghb[:, :2 * H], out=a[:, :2 * H])
        a[:, :2 * H].sigmoid_()                                # r, z
        torch.addcmul(gi[r, 2 * H:], a[:, :H], ghb[:, 2 * H:], out=a[:, 2 * H:])
        a[:, 2 * H:].tanh_()                                   # n
        HN[r] = ghb[:, 2 * H:]
        n = a[:, 2 * H:]
        torch.addcmul(n, a[:, H:2 * H], hp - n, out=Y[r])      # h = (1 - z) n + z h_prev
        h[:bs] = Y[r]
    return Y, h, None, (Hprev, A, HN)


def _gru_backward(x, w, res, dY, dh, _dc, steps, need_w, per=None, h0=None):
    w_ih, w_hh, b_ih, b_hh, _ = w
    Hprev, A, HN = res
    H = HN.shape[1]
    if backend.use_cpp(dY, dh, w_hh, A):                      # the loop below, compiled (csrc/cpu/recurrent.cpp)
        dAi, dAh, dh = torch.ops.torch_bp.gru_layer_bwd(dY, dh, w_hh, Hprev, A, HN, *_offsets_sizes(steps))
    else:
        rr, z, n = A.chunk(3, 1)
        f_n = (1.0 - z) * (1.0 - n * n)                        # da_n = dh f_n
        f_r = HN * rr * (1.0 - rr)                             # da_r = da_n f_r
        f_z = (Hprev - n) * z * (1.0 - z)                      # da_z = dh f_z
        dAi, dAh = torch.empty_like(A), torch.empty_like(A)
        for off, bs in steps:
            r = slice(off, off + bs)
            dhn = dh[:bs] + dY[r]
            da, dah = dAi[r], dAh[r]
            dan = torch.mul(dhn, f_n[r], out=da[:, 2 * H:])
            torch.mul(dan, f_r[r], out=da[:, :H])
            torch.mul(dhn, f_z[r], out=da[:, H:2 * H])
            dah[:, :2 * H] = da[:, :2 * H]
            torch.mul(dan, rr[r], out=dah[:, 2 * H:])          # d gh = (da_r, da_z, da_n r)
            torch.addmm(dhn * z[r], dah, w_hh, out=dh[:bs])    # dh z + W_hh^T d gh
    grads = [None] * 5
    if need_w:
        grads[0] = _tied_sum(dAi, x, per)
        grads[1] = _tied_sum(dAh, Hprev, per)
        if b_ih is not None:
            grads[2], grads[3] = _tied_sum(dAi, None, per), _tied_sum(dAh, None, per)
    return dAi.mm(w_ih), dh, None, grads


def _rnn_forward(relu):
    def fwd(x, w, h, _c, steps):
        w_ih, w_hh, b_ih, b_hh, _ = w
        gi = x.matmul(w_ih.t())
        if b_ih is not None:
            gi += b_ih + b_hh
        if backend.use_cpp(gi, w_hh, h):                      # the loop below, compiled (csrc/cpu/recurrent.cpp)
            Y, h = torch.ops.torch_bp.rnn_layer_fwd(gi, w_hh, h, *_offsets_sizes(steps), relu)
            return Y, h, None, (Y,)
        Y = x.new_empty(x.shape[0], h.shape[-1])
        w_hh_t = w_hh.t()
        for off, bs in steps:
            r = slice(off, off + bs)
            hp, y = h[:bs], Y[r]
            torch.addmm(gi[r], hp, w_hh_t, out=y)
            y.relu_() if relu else y.tanh_()
            h[:bs] = y
        return Y, h, None, (Y,)
    return fwd


def _previous_states(Y, h, steps):
    """Hprev (N, H): the state each step read, rebuilt from the outputs Y and the initial state h
    by replaying the forward's state updates (copies only). ``steps`` in the forward's order."""
    sizes = {bs for _, bs in steps}
    if len(sizes) == 1 and len(steps) > 1:                    # every step the same batch: one shift
        bs = sizes.pop()
        first, second = steps[0][0], steps[1][0]
        Hprev = torch.empty_like(Y)
        if first < second:                                     # forward in time: step t read Y[t-1]
            Hprev[:bs], Hprev[bs:] = h[:bs], Y[:-bs]
        else:                                                  # reverse direction: step t read Y[t+1]
            Hprev[-bs:], Hprev[:-bs] = h[:bs], Y[bs:]
        return Hprev
    Hprev = torch.empty_like(Y)
    for off, bs in steps:
        r = slice(off, off + bs)
        Hprev[r] = h[:bs]
        h[:bs] = Y[r]
    return Hprev


def _rnn_backward(relu):
    def bwd(x, w, res, dY, dh, _dc, steps, need_w, per=None, h0=None):
        w_ih, w_hh, b_ih, b_hh, _ = w
        (Y,) = res
        if backend.use_cpp(dY, dh, w_hh, Y):                  # the loop below, compiled (csrc/cpu/recurrent.cpp)
            dA, dh = torch.ops.torch_bp.rnn_layer_bwd(dY, dh, w_hh, Y, *_offsets_sizes(steps), relu)
        else:
            fac = (Y <= 0).logical_not().to(Y.dtype) if relu else 1.0 - Y * Y  # act'(a) from the output (NaN passes)
            dA = torch.empty_like(Y)
            for off, bs in steps:
                r = slice(off, off + bs)
                torch.mul(dh[:bs] + dY[r], fac[r], out=dA[r])
                torch.mm(dA[r], w_hh, out=dh[:bs])
        grads = [None] * 5
        if need_w:
            grads[0] = _tied_sum(dA, x, per)
            grads[1] = _tied_sum(dA, _previous_states(Y, h0, steps[::-1]), per)
            if b_ih is not None:
                grads[2] = grads[3] = _tied_sum(dA, None, per)
        return dA.mm(w_ih), dh, None, grads
    return bwd


_CELLS = {
    "LSTM": (_lstm_forward, _lstm_backward, 4),
    "GRU": (_gru_forward, _gru_backward, 3),
    "RNN_TANH": (_rnn_forward(False), _rnn_backward(False), 1),
    "RNN_RELU": (_rnn_forward(True), _rnn_backward(True), 1),
}


# --- the driver: layers and directions, shared by the three Functions ---
def _forward(opts: RNNOptions, x, h0, c0, sorted_indices, unsorted_indices, seed, params):
    cell_fwd = _CELLS[opts.mode][0]
    steps, _ = _steps(opts, x)
    rows = opmath(_to_rows(opts, x))                          # (N, I)
    h0s = opmath(_state_in(opts, h0, sorted_indices))         # (L*D, B, Hout)
    c0s = None if c0 is None else opmath(_state_in(opts, c0, sorted_indices))
    w32 = [opmath(p) for p in params]
    D = opts.directions
    hn, cn, residuals, layer_inputs = [], [], [], []
    inp = rows
    for layer in range(opts.num_layers):
        if layer > 0:
            if opts.dropout > 0:
                keep = _dropout_keep(seed, layer, inp.shape, opts.dropout, inp.device)
                inp = inp * keep * _keep_scale(opts.dropout)
            layer_inputs.append(inp)
        outs = []
        for d in range(D):
            k = layer * D + d
            order = steps[::-1] if d == 1 else steps
            y, h, c, res = cell_fwd(inp, layer_weights(opts, w32, layer, d), h0s[k].clone(),
                                    None if c0s is None else c0s[k].clone(), order)
            outs.append(y)
            hn.append(h)
            cn.append(c)
            residuals.extend(res)
        inp = outs[0] if D == 1 else torch.cat(outs, 1)
    out = _from_rows(opts, inp.to(x.dtype), x)
    if any(out.untyped_storage().data_ptr() == r.untyped_storage().data_ptr() for r in residuals):
        out = out.clone()  # the RNN's last Y is also a (non-differentiable) residual: not the same memory
    h_n = _state_out(opts, torch.stack(hn).to(h0.dtype), unsorted_indices)
    c_n = None if c0 is None else _state_out(opts, torch.stack(cn).to(c0.dtype), unsorted_indices)
    return out, h_n, c_n, residuals, layer_inputs


def _backward(ctx, grad_out, grad_hn, grad_cn, per=None):
    opts = ctx.opts
    cell_bwd = _CELLS[opts.mode][1]
    x, h0, c0, sorted_indices, unsorted_indices, *rest = ctx.saved_tensors
    n_params = len(rest) - ctx.n_residuals - ctx.n_layer_inputs
    params = rest[:n_params]
    residuals = rest[n_params:n_params + ctx.n_residuals]
    layer_inputs = rest[n_params + ctx.n_residuals:]
    per_cell = len(residuals) // (opts.num_layers * opts.directions)
    steps, _ = _steps(opts, x)
    w32 = [opmath(p) for p in params]
    D = opts.directions
    needs = ctx.needs_input_grad
    need_params = needs[7:]
    rows = opmath(_to_rows(opts, x))
    N, hout = rows.shape[0], (h0.shape[-1])
    # gradients of unused outputs arrive as None
    dy = rows.new_zeros(N, D * hout) if grad_out is None else opmath(_to_rows(opts, grad_out))  # (N, D*Hout)
    dhn = opmath(_state_in(opts, torch.zeros_like(h0) if grad_hn is None else grad_hn, sorted_indices))
    h0s = opmath(_state_in(opts, h0, sorted_indices))        # the initial states (RNN rebuilds Hprev)
    dcn = None
    if c0 is not None:
        dcn = opmath(_state_in(opts, torch.zeros_like(c0) if grad_cn is None else grad_cn, sorted_indices))
    grads_p = [None] * n_params
    dh0 = [None] * (opts.num_layers * D)
    dc0 = [None] * (opts.num_layers * D)
    for layer in reversed(range(opts.num_layers)):
        inp = rows if layer == 0 else opmath(layer_inputs[layer - 1])
        dinp = None
        hout = dy.shape[1] // D
        for d in range(D):
            k = layer * D + d
            order = steps if d == 1 else steps[::-1]
            w = layer_weights(opts, w32, layer, d)
            base = k * opts.per_direction
            need_w = any(need_params[base:base + opts.per_direction])
            res = residuals[k * per_cell:(k + 1) * per_cell]
            dx, dh, dc, gw = cell_bwd(inp, w, res, dy[:, d * hout:(d + 1) * hout], dhn[k].clone(),
                                      None if dcn is None else dcn[k].clone(), order, need_w, per,
                                      h0=h0s[k].clone())
            dinp = dx if dinp is None else dinp + dx
            dh0[k], dc0[k] = dh, dc
            slots = [0, 1] + ([2, 3] if opts.has_biases else []) + ([4] if opts.proj else [])
            for j, slot in enumerate(slots):  # position in the flat list -> slot of (w_ih, w_hh, b_ih, b_hh, w_hr)
                if need_params[base + j] and gw[slot] is not None:
                    grads_p[base + j] = gw[slot].to(params[base + j].dtype)
        if layer > 0 and opts.dropout > 0:
            keep = _dropout_keep(ctx.seed, layer, dinp.shape, opts.dropout, dinp.device)
            dinp = dinp * keep * _keep_scale(opts.dropout)
        dy = dinp
    grad_x = _from_rows(opts, dy, x).to(x.dtype) if needs[1] else None
    grad_h0 = _state_out(opts, torch.stack(dh0), unsorted_indices).to(h0.dtype) if needs[2] else None
    grad_c0 = None
    if c0 is not None and needs[3]:
        grad_c0 = _state_out(opts, torch.stack(dc0), unsorted_indices).to(c0.dtype)
    return (None, grad_x, grad_h0, grad_c0, None, None, None, *grads_p)


def _backward_per_sample(ctx, grad_out, grad_hn, grad_cn):
    r"""One backward pass through time giving both the gradients and the per-example gradients of
    the weights (``backward_per_sample`` of the three Functions, see torch_bp/per_sample.py)."""
    opts = ctx.opts
    x, unsorted = ctx.saved_tensors[0], ctx.saved_tensors[4]
    if opts.unbatched:
        raise ValueError("per-sample gradients: an unbatched recurrent input has no batch dim")
    steps, batch = _steps(opts, x)
    grads = list(_backward(ctx, grad_out, grad_hn, grad_cn, per=_Examples(steps, batch, unsorted, x.device)))
    per_sample = {}
    for i in range(7, len(grads)):
        if grads[i] is not None:
            per_sample[i] = grads[i]
            grads[i] = grads[i].sum(0)
    return tuple(grads), per_sample


def _setup(ctx, inputs, output, n_out):
    opts, x, h0, c0, sorted_indices, unsorted_indices, seed, *params = inputs
    ctx.opts, ctx.seed = opts, seed
    extra = output[n_out:]
    ctx.n_layer_inputs = opts.num_layers - 1
    ctx.n_residuals = len(extra) - ctx.n_layer_inputs
    ctx.mark_non_differentiable(*extra)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the residual outputs
    ctx.save_for_backward(x, h0, c0, sorted_indices, unsorted_indices, *params, *extra)


# --- LSTM ---
class LSTMFunction(Rule):
    r"""Multi-layer (bidirectional) LSTM with backpropagation through time.

    Forward, per layer and direction, for t in order (reversed for the reverse direction):
               a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh    (the W_ih x_t of all t: one matmul)
               i, f, o = sigmoid(a_t[i, f, o]),  g = tanh(a_t[g])
               c_t = f c_{t-1} + i g,   h~_t = o tanh(c_t),   h_t = h~_t (or W_hr h~_t with proj_size)
    Backward, for t in reverse order, with dh = grad h_t (from the output at t and from
    step t+1), dc = grad c_t (from step t+1):
               dh~ = dh (or W_hr^T dh; grad_W_hr += dh h~_t^T)
               dc += dh~ o (1 - tanh(c_t)^2)
               da[i] = dc g i (1 - i),  da[f] = dc c_{t-1} f (1 - f),
               da[g] = dc i (1 - g^2),  da[o] = dh~ tanh(c_t) o (1 - o)
               grad h_{t-1} = W_hh^T da,   grad c_{t-1} = dc f
               tied weights: grad_W_ih = sum_t da x_t^T, grad_W_hh = sum_t da h_{t-1}^T,
               grad_b_ih = grad_b_hh = sum_t da  (one matmul each over the stacked steps)
               grad x_t = W_ih^T da (through the inter-layer dropout mask into the layer below)
    Saved:     input, h0, c0, weights; per layer and direction Hprev, Cprev, gates, C (rows
               of all steps); the input of each layer above the first.
    Per example n: the tied-weight sums above over example n's steps only (:class:`_Examples`),
               in the same pass (``backward_per_sample``).
    Double backward: no (first_order_only: create_graph=True raises)
    """

    compiled = ("lstm_layer_fwd", "lstm_layer_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(opts, x, h0, c0, sorted_indices, unsorted_indices, seed, *params):
        out, h_n, c_n, res, ins = _forward(opts, x, h0, c0, sorted_indices, unsorted_indices, seed, params)
        return (own(out), own(h_n), own(c_n), *res, *ins)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup(ctx, inputs, output, 3)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_out, grad_hn, grad_cn, *_):
        grads = backward_from_per_sample(ctx)   # in a per_sample_grads block: backward_per_sample's pass
        return grads if grads is not None else _backward(ctx, grad_out, grad_hn, grad_cn)

    @staticmethod
    def backward_per_sample(ctx, batch_dim, grad_out, grad_hn, grad_cn, *_, out=None):
        return _backward_per_sample(ctx, grad_out, grad_hn, grad_cn)


# --- GRU ---
class GRUFunction(Rule):
    r"""Multi-layer (bidirectional) GRU with backpropagation through time.

    Forward, per layer and direction:
               gi = W_ih x_t + b_ih (all t: one matmul),   gh = W_hh h_{t-1} + b_hh
               r = sigmoid(gi[r] + gh[r]),  z = sigmoid(gi[z] + gh[z])
               n = tanh(gi[n] + r gh[n]),   h_t = (1 - z) n + z h_{t-1}
    Backward, for t in reverse order, dh = grad h_t:
               dn = dh (1 - z),   da_n = dn (1 - n^2)
               da_r = da_n gh[n] r (1 - r),   da_z = dh (h_{t-1} - n) z (1 - z)
               d gi = (da_r, da_z, da_n),   d gh = (da_r, da_z, da_n r)
               grad h_{t-1} = dh z + W_hh^T d gh
               tied weights: grad_W_ih = sum_t d gi x_t^T,  grad_W_hh = sum_t d gh h_{t-1}^T,
               grad_b_ih = sum_t d gi,  grad_b_hh = sum_t d gh;   grad x_t = W_ih^T d gi
    Saved:     input, h0, weights; per layer and direction Hprev, (r, z, n), gh[n].
    Per example n: the tied-weight sums above over example n's steps only (``backward_per_sample``).
    Double backward: no (first_order_only: create_graph=True raises)
    """

    compiled = ("gru_layer_fwd", "gru_layer_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(opts, x, h0, c0, sorted_indices, unsorted_indices, seed, *params):
        out, h_n, _, res, ins = _forward(opts, x, h0, None, sorted_indices, unsorted_indices, seed, params)
        return (own(out), own(h_n), *res, *ins)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup(ctx, inputs, output, 2)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_out, grad_hn, *_):
        grads = backward_from_per_sample(ctx)   # in a per_sample_grads block: backward_per_sample's pass
        return grads if grads is not None else _backward(ctx, grad_out, grad_hn, None)

    @staticmethod
    def backward_per_sample(ctx, batch_dim, grad_out, grad_hn, *_, out=None):
        return _backward_per_sample(ctx, grad_out, grad_hn, None)


# --- RNN (tanh, relu) ---
class RNNFunction(Rule):
    r"""Multi-layer (bidirectional) Elman RNN with tanh or relu, backpropagation through time.

    Forward:   h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)   (W_ih x_t of all t: one matmul)
    Backward, for t in reverse order, dh = grad h_t:
               da = dh (1 - h_t^2) for tanh,  dh [not h_t <= 0] for relu
               grad h_{t-1} = W_hh^T da;   tied weights: grad_W_ih = sum_t da x_t^T,
               grad_W_hh = sum_t da h_{t-1}^T, grad_b_ih = grad_b_hh = sum_t da;  grad x_t = W_ih^T da
    Saved:     input, h0, weights; per layer and direction Y (Hprev rebuilt from Y and h0).
    Per example n: the tied-weight sums above over example n's steps only (``backward_per_sample``).
    Double backward: no (first_order_only: create_graph=True raises)
    """

    compiled = ("rnn_layer_fwd", "rnn_layer_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(opts, x, h0, c0, sorted_indices, unsorted_indices, seed, *params):
        out, h_n, _, res, ins = _forward(opts, x, h0, None, sorted_indices, unsorted_indices, seed, params)
        return (own(out), own(h_n), *res, *ins)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup(ctx, inputs, output, 2)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_out, grad_hn, *_):
        grads = backward_from_per_sample(ctx)   # in a per_sample_grads block: backward_per_sample's pass
        return grads if grads is not None else _backward(ctx, grad_out, grad_hn, None)

    @staticmethod
    def backward_per_sample(ctx, batch_dim, grad_out, grad_hn, *_, out=None):
        return _backward_per_sample(ctx, grad_out, grad_hn, None)


FUNCTIONS = {"LSTM": LSTMFunction, "GRU": GRUFunction, "RNN_TANH": RNNFunction, "RNN_RELU": RNNFunction}


def gate_count(mode: str) -> int:
    """Rows of W_ih per hidden unit: 4 (LSTM), 3 (GRU), 1 (RNN)."""
    return _CELLS[mode][2]


# --- RNNCell / LSTMCell / GRUCell: one time step, inputs (B, I), states (B, H) ---
def _cell_gates(x, h, w_ih, w_hh, b_ih, b_hh):
    """(x W_ih^T + b_ih, h W_hh^T + b_hh), the two halves of a cell's pre-activations."""
    gi = x.matmul(w_ih.t()) if b_ih is None else torch.addmm(b_ih, x, w_ih.t())
    gh = h.matmul(w_hh.t()) if b_hh is None else torch.addmm(b_hh, h, w_hh.t())
    return gi, gh


def _cell_param_grads(ctx, da_i, da_h, x, h, offset):
    """grad_W_ih = da_i^T x, grad_W_hh = da_h^T h, grad_b_ih / grad_b_hh = da summed to the bias's shape (column
    sums for a (gates,) bias; a bias addmm broadcast, one element or one per row, gets the sum over what it
    broadcast over) (inputs offset..offset+3)."""
    need = ctx.needs_input_grad[offset:offset + 4]
    return (da_i.t().mm(x) if need[0] else None, da_h.t().mm(h) if need[1] else None,
            da_i.sum_to_size(ctx.b_ih_shape) if need[2] and ctx.b_ih_shape is not None else None,
            da_h.sum_to_size(ctx.b_hh_shape) if need[3] and ctx.b_hh_shape is not None else None)


def _bias_shapes(ctx, b_ih, b_hh):
    ctx.b_ih_shape, ctx.b_hh_shape = (None if b is None else b.shape for b in (b_ih, b_hh))


class RNNCellFunction(Rule):
    r"""Elman cell (tanh or relu), one step.

    Forward:   h' = act(a),   a = x W_ih^T + b_ih + h W_hh^T + b_hh
    Backward:  da = grad_h' act'(a)   (tanh: 1 - h'^2; relu: 0 where h' <= 0, else 1, as torch's relu)
               grad_x = da W_ih,  grad_h = da W_hh,  grad_W_ih = da^T x,  grad_W_hh = da^T h,
               grad_b_ih = grad_b_hh = sum_rows(da)   (a bias that addmm broadcasts: da summed to its shape)
    Saved:     x, h, W_ih, W_hh and h' (the output)     Double backward: yes (plain ops of saved inputs/output)
    """

    @staticmethod
    def forward(x, h, w_ih, w_hh, b_ih, b_hh, relu):
        gi, gh = _cell_gates(x, h, w_ih, w_hh, b_ih, b_hh)
        return torch.relu(gi + gh) if relu else torch.tanh(gi + gh)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h, w_ih, w_hh, b_ih, b_hh, ctx.relu = inputs
        _bias_shapes(ctx, b_ih, b_hh)
        ctx.save_for_backward(x, h, w_ih, w_hh, output)

    @staticmethod
    def backward(ctx, grad_h1):
        x, h, w_ih, w_hh, h1 = ctx.saved_tensors
        # relu: torch's convention, 0 where h' <= 0 (a NaN h' passes grad_h' through)
        da = torch.where(h1 <= 0, torch.zeros_like(grad_h1), grad_h1) if ctx.relu else grad_h1 * (1 - h1 * h1)
        gx = da.mm(w_ih) if ctx.needs_input_grad[0] else None
        gh = da.mm(w_hh) if ctx.needs_input_grad[1] else None
        return (gx, gh, *_cell_param_grads(ctx, da, da, x, h, 2), None)


class LSTMCellFunction(Rule):
    r"""LSTM cell, one step (gates stacked as torch: i, f, g, o).

    Forward:   a = x W_ih^T + b_ih + h W_hh^T + b_hh;  i, f, o = sigmoid(a_i, a_f, a_o),  g = tanh(a_g)
               c' = f c + i g,   h' = o tanh(c')
    Backward:  dc' = grad_c' + grad_h' o (1 - tanh(c')^2)
               da = (dc' g i (1 - i),  dc' c f (1 - f),  dc' i (1 - g^2),  grad_h' tanh(c') o (1 - o))
               grad_c = dc' f,  grad_x = da W_ih,  grad_h = da W_hh,  grad_W_ih = da^T x,  grad_W_hh = da^T h,
               grad_b_ih = grad_b_hh = sum_rows(da)   (a bias that addmm broadcasts: da summed to its shape)
    Saved:     x, h, c, W_ih, W_hh and c' (the output); the gates are recomputed from them, so the rule stays
               differentiable      Double backward: yes

    A cell state c of another dtype than the gates (torch accepts any: its f c promotes): c' and h' take the
    promoted dtype, as torch's; da is rounded to the gates' dtype before the matmuls (where torch's autograd
    casts the gradient reaching the gates) and grad_c to c's dtype. With 16-bit gates the elementwise part of
    the backward runs in float32 and da is rounded once (huge weights make grad_x = da W_ih cancel, and
    rounding every product of da in bfloat16 then moves it by more than the dtype's tolerance).
    """

    @staticmethod
    def forward(x, h, c, w_ih, w_hh, b_ih, b_hh):
        gi, gh = _cell_gates(x, h, w_ih, w_hh, b_ih, b_hh)
        a_i, a_f, a_g, a_o = (gi + gh).chunk(4, 1)
        c1 = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        return torch.sigmoid(a_o) * torch.tanh(c1), c1

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h, c, w_ih, w_hh, b_ih, b_hh = inputs
        _bias_shapes(ctx, b_ih, b_hh)
        ctx.save_for_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, output[1])

    @staticmethod
    def backward(ctx, grad_h1, grad_c1):
        x, h, c, w_ih, w_hh, b_ih, b_hh, c1 = ctx.saved_tensors
        gi, gh = _cell_gates(x, h, w_ih, w_hh, b_ih, b_hh)
        a = gi + gh
        a_i, a_f, a_g, a_o = opmath(a).chunk(4, 1)   # the elementwise part in float32 for 16-bit gates, rounded once
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        tc = torch.tanh(opmath(c1))
        grad_h1, grad_c1 = opmath(grad_h1), opmath(grad_c1)
        dc1 = grad_c1 + grad_h1 * o * (1 - tc * tc)
        da = torch.cat([dc1 * g * i * (1 - i), dc1 * opmath(c) * f * (1 - f), dc1 * i * (1 - g * g),
                        grad_h1 * tc * o * (1 - o)], 1).to(a.dtype)
        gx = da.mm(w_ih) if ctx.needs_input_grad[0] else None
        gh_ = da.mm(w_hh) if ctx.needs_input_grad[1] else None
        gc = (dc1 * f).to(c.dtype) if ctx.needs_input_grad[2] else None
        return (gx, gh_, gc, *_cell_param_grads(ctx, da, da, x, h, 3))


class GRUCellFunction(Rule):
    r"""GRU cell, one step (gates stacked as torch: r, z, n).

    Forward:   (a_r, a_z, a_n) = x W_ih^T + b_ih,  (h_r, h_z, h_n) = h W_hh^T + b_hh
               r = sigmoid(a_r + h_r),  z = sigmoid(a_z + h_z),  n = tanh(a_n + r h_n),  h' = (1 - z) n + z h
    Backward:  dn = grad_h' (1 - z) (1 - n^2),  dz = grad_h' (h - n) z (1 - z),  dr = dn h_n r (1 - r)
               da_i = (dr, dz, dn),   da_h = (dr, dz, dn r)
               grad_x = da_i W_ih,  grad_h = grad_h' z + da_h W_hh,  grad_W_ih = da_i^T x,  grad_W_hh = da_h^T h,
               grad_b_ih = sum_rows(da_i),  grad_b_hh = sum_rows(da_h)   (a broadcast bias: summed to its shape)
    Saved:     x, h, the weights and biases; the gates are recomputed, so the rule stays differentiable
    Double backward: yes
    """

    @staticmethod
    def forward(x, h, w_ih, w_hh, b_ih, b_hh):
        gi, gh = _cell_gates(x, h, w_ih, w_hh, b_ih, b_hh)
        a_r, a_z, a_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r, z = torch.sigmoid(a_r + h_r), torch.sigmoid(a_z + h_z)
        n = torch.tanh(a_n + r * h_n)
        return (1 - z) * n + z * h

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h, w_ih, w_hh, b_ih, b_hh = inputs
        _bias_shapes(ctx, b_ih, b_hh)
        ctx.save_for_backward(x, h, w_ih, w_hh, b_ih, b_hh)

    @staticmethod
    def backward(ctx, grad_h1):
        x, h, w_ih, w_hh, b_ih, b_hh = ctx.saved_tensors
        gi, gh = _cell_gates(x, h, w_ih, w_hh, b_ih, b_hh)
        a_r, a_z, a_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r, z = torch.sigmoid(a_r + h_r), torch.sigmoid(a_z + h_z)
        n = torch.tanh(a_n + r * h_n)
        dn = grad_h1 * (1 - z) * (1 - n * n)
        dz = grad_h1 * (h - n) * z * (1 - z)
        dr = dn * h_n * r * (1 - r)
        da_i, da_h = torch.cat([dr, dz, dn], 1), torch.cat([dr, dz, dn * r], 1)
        gx = da_i.mm(w_ih) if ctx.needs_input_grad[0] else None
        gh_ = grad_h1 * z + da_h.mm(w_hh) if ctx.needs_input_grad[1] else None
        return (gx, gh_, *_cell_param_grads(ctx, da_i, da_h, x, h, 2))
