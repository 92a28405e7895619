r"""Triton kernels of :mod:`torch_bp.ops.loss`: cross-entropy of (N, C) logits with class indices
(CrossEntropyFunction), and the chunked, fused language-model head (LinearCrossEntropyFunction).

Neither ever materialises the probabilities or log-probabilities: per row the forward keeps
m = max x and s = log sum e^{x - m} (the op's saved statistics), and the backward recomputes
p = e^{(x - m) - s} block by block as it writes grad_x. Rows are processed ``MAX_BLOCK``
columns at a time (an online max and sum), so any vocabulary size works.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block
from .activation import MAX_BLOCK, _row_max_sum


@triton.jit
def _ce_fwd_kernel(X, T, W, WSUM, E, WY, M, S, C, ignore_index, a,
                   HAS_W: tl.constexpr, SMOOTH: tl.constexpr, BLOCK: tl.constexpr):
    """CrossEntropyFunction.forward (torch_bp/ops/loss.py): m = max x, s = log sum e^{x - m},
    z = (x - m) - s, e = -(1 - a) w_y z_y - (a / C) sum_c w_c z_c (0 where y is ignored)."""
    row = tl.program_id(0).to(tl.int64)
    m, se = _row_max_sum(X, row, C, BLOCK)
    s = tl.log(se)
    tl.store(M + row, m)
    tl.store(S + row, s)
    y = tl.load(T + row)
    valid = y != ignore_index
    ys = tl.where(valid, y, 0)
    wy = tl.load(W + ys).to(tl.float32) if HAS_W else 1.0
    wy = tl.where(valid, wy, 0.0)
    xy = tl.load(X + row * C + ys).to(tl.float32)
    e = -(((xy - m) - s) * wy)
    if SMOOTH:
        cols = tl.arange(0, BLOCK)
        acc = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, C, BLOCK):
            c = start + cols
            z = tl.load(X + row * C + c, mask=c < C, other=0.0).to(tl.float32) - m
            if HAS_W:
                z = z * tl.load(W + c, mask=c < C, other=0.0).to(tl.float32)
            acc += tl.where(c < C, z, 0.0)
        wsum = tl.load(WSUM)
        smooth = -(tl.sum(acc, 0) - s * wsum)
        e = (1 - a) * e + (a / C) * smooth
    tl.store(E + row, tl.where(valid, e, 0.0))
    tl.store(WY + row, wy)


@triton.jit
def _ce_bwd_kernel(G, X, T, W, WSUM, M, S, GX, C, ignore_index, a,
                   HAS_W: tl.constexpr, PER_ROW: tl.constexpr, SMOOTH: tl.constexpr, BLOCK: tl.constexpr):
    """CrossEntropyFunction.backward: grad_x = ge (p sum_c q_c - q), p = e^{(x - m) - s},
    q_c = (1 - a) w_y [c = y] + (a / C) w_c; ge = the row's upstream gradient (already divided by
    sum of w_y for 'mean'), 0 where y is ignored."""
    row = tl.program_id(0).to(tl.int64)
    y = tl.load(T + row)
    valid = y != ignore_index
    ys = tl.where(valid, y, 0)
    wy = tl.load(W + ys).to(tl.float32) if HAS_W else 1.0
    wy = tl.where(valid, wy, 0.0)
    ge = tl.load(G + row) if PER_ROW else tl.load(G)
    ge = tl.where(valid, ge.to(tl.float32), 0.0)
    m = tl.load(M + row)
    s = tl.load(S + row)
    if SMOOTH:
        q_sum = (1 - a) * wy + (a / C) * tl.load(WSUM)
    else:
        q_sum = wy
    gq = ge * q_sum
    cols = tl.arange(0, BLOCK)
    for start in range(0, C, BLOCK):
        c = start + cols
        x = tl.load(X + row * C + c, mask=c < C, other=0.0).to(tl.float32)
        gx = tl.exp((x - m) - s) * gq
        if SMOOTH:
            wc = tl.load(W + c, mask=c < C, other=0.0).to(tl.float32) if HAS_W else 1.0
            gx = gx - (ge * (a / C)) * wc
        gx = tl.where(c == ys, gx - ge * ((1 - a) * wy), gx)
        tl.store(GX + row * C + c, gx.to(GX.dtype.element_ty), mask=c < C)


def _targets(target, c, ignore_index):
    """Raises IndexError, as the CPU kernel, for a target that is neither a class nor ignore_index.
    NOTE: one device-to-host sync; a kernel cannot raise, and a wrong class must not pass silently."""
    bad = ((target < 0) | (target >= c)) & (target != ignore_index)
    if bool(bad.any()):
        y = int(target[bad][0])
        raise IndexError(f"Target {y} is out of bounds.")


def _wsum(weight, c, device):
    return (weight.float().sum() if weight is not None else torch.full((), float(c))).to(device=device,
                                                                                          dtype=torch.float32)


def cross_entropy_fwd(x, target, weight, reduction, ignore_index, label_smoothing):
    if reduction not in ("none", "mean", "sum"):
        raise RuntimeError(f"torch_bp: reduction must be none, mean or sum, got {reduction}")
    n, c = x.shape
    xc, t = x.contiguous(), target.contiguous()
    m = torch.zeros((n, 1), dtype=torch.float32, device=x.device)
    s = torch.full((n, 1), float("-inf"), dtype=torch.float32, device=x.device)
    e = torch.zeros((n,), dtype=torch.float32, device=x.device)
    wy = torch.zeros((n,), dtype=torch.float32, device=x.device)
    if c == 0:  # no classes: every target is ignored (else the functional raised); a / C = NaN, as torch
        if label_smoothing > 0:
            e.fill_(float("nan"))
    elif n:
        _targets(t, c, ignore_index)
        w = None if weight is None else weight.contiguous()
        _ce_fwd_kernel[(n,)](xc, t, w, _wsum(w, c, x.device), e, wy, m, s, c, ignore_index, float(label_smoothing),
                             HAS_W=w is not None, SMOOTH=label_smoothing > 0, BLOCK=block(c, hi=MAX_BLOCK))
    if reduction == "none":
        out = e
    else:
        out = e.sum() if reduction == "sum" else e.sum() / wy.sum()
    return out.to(x.dtype), m, s


def cross_entropy_bwd(grad_out, x, target, weight, m, s, reduction, ignore_index, label_smoothing):
    n, c = x.shape
    xc, t = x.contiguous(), target.contiguous()
    gx = torch.empty_like(xc)
    if n == 0 or c == 0:
        return gx.zero_()
    w = None if weight is None else weight.contiguous()
    g = grad_out.float()
    if reduction == "mean":
        valid = t != ignore_index
        wy = valid.float() if w is None else torch.where(valid, w.float()[torch.where(valid, t, 0)], 0.0)
        g = g / wy.sum()
    g = g.contiguous()
    _ce_bwd_kernel[(n,)](g, xc, t, w, _wsum(w, c, x.device), m.contiguous(), s.contiguous(), gx, c, ignore_index,
                         float(label_smoothing), HAS_W=w is not None, PER_ROW=reduction == "none",
                         SMOOTH=label_smoothing > 0, BLOCK=block(c, hi=MAX_BLOCK))
    return gx


# --- LinearCrossEntropy: the chunk kernel of the fused head ---
@triton.jit
def _head_chunk_kernel(Z, T, GE, E, V, ignore_index, a, BLOCK: tl.constexpr):
    """LinearCrossEntropyFunction's chunk step in fused mode (torch_bp/ops/loss.py, _head_loss and
    _head_grads): for one row of logits z (V), lse = logsumexp(z),
    e = -(1 - a)(z_y - lse) - (a / V) sum_c (z_c - lse) (0 where y is ignored), and z is overwritten,
    in its own dtype, by ge G' = ge (softmax(z) - (1 - a) onehot(y) - a / V) (ge: the row's scale)."""
    row = tl.program_id(0).to(tl.int64)
    m, se = _row_max_sum(Z, row, V, BLOCK)
    lse = m + tl.log(se)
    y = tl.load(T + row)
    valid = y != ignore_index
    ys = tl.where(valid, y, 0)
    ge = tl.where(valid, tl.load(GE + row), 0.0)
    zy = tl.load(Z + row * V + ys).to(tl.float32)      # read before the row is overwritten
    cols = tl.arange(0, BLOCK)
    zsum = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, V, BLOCK):
        c = start + cols
        z = tl.load(Z + row * V + c, mask=c < V, other=0.0).to(tl.float32)
        zsum += tl.where(c < V, z, 0.0)
        g = tl.exp(z - lse) - a / V
        g = tl.where(c == ys, g - (1 - a), g)
        tl.store(Z + row * V + c, (ge * g).to(Z.dtype.element_ty), mask=c < V)
    e = -(1 - a) * (zy - lse) - (a / V) * (tl.sum(zsum, 0) - V * lse)
    tl.store(E + row, tl.where(valid, e, 0.0))


def linear_cross_entropy_fused(x, weight, bias, target, reduction="mean", ignore_index=-100, label_smoothing=0.0,
                               chunk_size=None, need=(True, True, True)):
    """LinearCrossEntropyFunction's fused mode with the chunk step in Triton: the loss and, for an
    upstream gradient of 1, grad_x, grad_W, grad_b (those ``need`` asks for), chunk by chunk.

    Per chunk of rows: z = x W^T + b in W's dtype (cuBLAS), then :func:`_head_chunk_kernel`
    turns z in place into ge G' (no second (c, V) buffer, no float32 copy), then
    grad_x = G W and grad_W += G^T x, grad_b += column sums of G (float32 accumulators).
    Returns (loss in x's dtype, grad_x, grad_W, grad_b); mean/sum reductions only.
    """
    from ...ops.loss import _head_rows
    if reduction not in ("mean", "sum"):
        raise ValueError("linear_cross_entropy_fused: reduction must be 'mean' or 'sum' (a scalar loss)")
    n_cls, d = weight.shape
    x2, t = x.reshape(-1, d), target.reshape(-1).contiguous()
    valid = t != ignore_index
    _targets(t, n_cls, ignore_index)
    count = valid.sum()
    scale = 1 / count.float() if reduction == "mean" else torch.ones((), device=x.device)
    ge = torch.where(valid, scale, 0.0).float().contiguous()
    e = torch.zeros(x2.shape[0], dtype=torch.float32, device=x.device)
    need_x, need_w, need_b = need
    gx = torch.empty_like(x2) if need_x else None
    gw = torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if need_w else None
    gb = torch.zeros(n_cls, dtype=torch.float32, device=x.device) if need_b and bias is not None else None
    rows = _head_rows(n_cls, chunk_size)
    for i in range(0, x2.shape[0], rows):
        xc = x2[i:i + rows]
        z = (xc @ weight.t() if bias is None else torch.addmm(bias, xc, weight.t())).contiguous()   # (c, V)
        _head_chunk_kernel[(z.shape[0],)](z, t[i:i + rows], ge[i:i + rows], e[i:i + rows], n_cls, ignore_index,
                                          float(label_smoothing), BLOCK=block(n_cls, hi=MAX_BLOCK))
        if gx is not None:
            torch.mm(z, weight, out=gx[i:i + rows])
        if gw is not None:  # as the Python rule: one matmul per chunk in W's dtype, summed in float32
            gw.addmm_(z.t(), xc) if z.dtype == gw.dtype else gw.add_(z.t().mm(xc))
        if gb is not None:
            gb.add_(z.sum(0, dtype=torch.float32))
    loss = e.sum() / count if reduction == "mean" else e.sum()
    return (loss.to(x.dtype), None if gx is None else gx.reshape(x.shape),
            None if gw is None else gw.to(weight.dtype), None if gb is None else gb.to(bias.dtype))


OPS = {"cross_entropy_fwd": cross_entropy_fwd, "cross_entropy_bwd": cross_entropy_bwd}
