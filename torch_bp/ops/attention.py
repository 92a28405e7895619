r"""Scaled dot-product attention, with a backward that recomputes the probabilities.

Notation (one attention problem; batch and head dims broadcast in front of it):

    q: (L, E)   k: (S, E)   v: (S, Ev)   bias b: (L, S)   scale c (default 1/sqrt(E))
    s = c q k^T + b            b = 0 / -inf from a bool mask or causality, or a float mask
    lse_i = log sum_j exp(s_ij)                   (the row log-sum-exp)
    p = exp(s - lse)                              (softmax over keys)
    pd = p * m / (1 - dropout_p)                  (m: the dropout keep mask, 1 without dropout)
    o = pd v

Grouped-query attention (``enable_gqa``): q has Hq heads, k and v have Hk; query head
h attends with key head h // (Hq / Hk). Internally q is viewed as (..., Hk, G, L, E) and
k, v as (..., Hk, 1, S, E), so the shared keys are broadcast, never repeated in memory,
and their gradients are summed over the G query heads of a group.

NOTE (memory): the (L, S) matrices s, p are never saved. The forward runs over blocks of
``BLOCK_K`` keys with an online softmax (running row max and sum), the backward recomputes
p block by block from the saved row log-sum-exp. What is saved for backward is O(L + S)
per head: q, k, v, o and lse (plus the float/bool mask, if one was given: it is an input).

NOTE (compiled backend): without a mask, grouped or broadcast heads, the same blocked rule runs
in ``csrc/cpu/attention.cpp`` (``attention_fwd`` / ``attention_bwd``; bfloat16 in float32): one
task per (head, block of 128 queries) forward and per head backward, each (128 x 512) score tile
staying in cache between its matmuls and its elementwise passes. Its dropout masks are those
below, drawn in Python for the whole (L, S) and read by the kernel.

NOTE (dropout): the keep mask of key block j is drawn from a fresh generator seeded with
``seed + j``; the seed is drawn once from torch's default generator in the functional and
saved. The backward regenerates the same masks, so gradients are those of the forward's
mask; :class:`AttentionWeightsFunction` draws the same masks for the same seed.
"""
from __future__ import annotations

import torch

from .. import backend
from ._util import first_order_only, opmath, own
from ._rule import Rule

BLOCK_K = 256  # keys per block in forward and backward


def grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(..., H, X, Y) -> (..., H // groups, groups, X, Y); a head dim of 1 becomes (1, 1).

    Tensors with fewer than 3 dims get a head dim of 1 first.
    """
    if t.dim() < 3:
        t = t.reshape((1,) * (3 - t.dim()) + tuple(t.shape))
    h = t.shape[-3]
    if groups == 1 or h == 1:
        return t.unsqueeze(-3)
    return t.unflatten(-3, (h // groups, groups))


def ungroup(g: torch.Tensor, like: torch.Tensor, groups: int) -> torch.Tensor:
    """The gradient for ``like`` from a gradient ``g`` in the grouped, broadcast layout."""
    return g.sum_to_size(grouped(like, groups).shape).reshape(like.shape)


def broadcast_shape(*shapes) -> tuple:
    """torch.broadcast_shapes without its lazy (sympy) import; raises RuntimeError, as torch's."""
    n = max((len(s) for s in shapes), default=0)
    out = [1] * n
    for s in shapes:
        for i, d in enumerate(s, n - len(s)):
            if d != 1 and out[i] not in (1, d):
                raise RuntimeError(f"shape {list(s)} does not broadcast with {out}")
            out[i] = d if d != 1 else out[i]
    return tuple(out)


def keep_scale(p: float) -> float:
    """1 / (1 - p), the scale of kept entries (0 for p = 1: everything is dropped)."""
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def keep_mask(seed: int, block: int, shape, p: float, device) -> torch.Tensor:
    """Dropout keep mask (bool) of key block ``block``: the same for the same (seed, block)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + block)
    return torch.rand(shape, generator=gen, device=device) >= p


def block_scores(qs, k5, mask5, causal, j0, j1, batch=None):
    """s[..., :, j0:j1] = (scale q) k^T + bias, masked entries -inf; a fresh tensor (float32 for low
    precision) with the leading dims ``batch`` (the broadcast of all inputs') when given."""
    s = torch.matmul(qs, k5[..., j0:j1, :].transpose(-1, -2))  # (..., L, bk)
    if batch is not None and tuple(s.shape[:-2]) != tuple(batch):
        s = s.expand(tuple(batch) + s.shape[-2:]).clone()  # v or the mask broadcast q k^T further
    if mask5 is not None:
        mb = mask5[..., j0:j1] if mask5.shape[-1] != 1 else mask5
        s = s.add_(mb) if broadcast_shape(s.shape, mb.shape) == tuple(s.shape) else s + mb
    if causal:
        L = s.shape[-2]
        rows = torch.arange(L, device=s.device).unsqueeze(-1)
        cols = torch.arange(j0, j1, device=s.device)
        s.add_(s.new_zeros(L, j1 - j0).masked_fill_(cols > rows, float("-inf")))
    return s


def additive(mask, dtype):
    """The mask as a bias added to the scores: a bool mask (True: attend) becomes 0 / -inf.

    NOTE: masking by adding -inf (not by overwriting) keeps a NaN score NaN, as torch does.
    """
    if mask is None or mask.is_floating_point():
        return None if mask is None else opmath(mask)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _compiled(q, k, v, mask, groups, *more):
    """True when the compiled kernels (csrc/cpu/attention.cpp) run this call: no mask, no grouped or
    broadcast heads (q, k, v of one leading shape), a non-empty problem, and :func:`backend.use_cpp`."""
    return (mask is None and groups == 1 and q.dim() == k.dim() == v.dim()
            and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and not _empty(q, k, v)
            and backend.use_cpp(q, k, v, *more, op="attention_fwd"))


def _keep_all(seed, q, S, p, device):
    """The keep masks of every key block, side by side: (..., L, S) bool, q's leading dims (the
    same draws as the block loop of the Python rule, whose blocks take the same shapes)."""
    shape = grouped(q, 1).shape[:-1]  # (..., H, 1, L)
    blocks = [keep_mask(seed, j, shape + (min(j0 + BLOCK_K, S) - j0,), p, device)
              for j, j0 in enumerate(range(0, S, BLOCK_K))]
    return torch.cat(blocks, -1).reshape(q.shape[:-1] + (S,))


def _empty(q, k, v):
    return q.numel() == 0 or k.numel() == 0 or v.numel() == 0


def _blocks(S, L, causal):
    """Key blocks (index, start, end); with a causal mask, blocks wholly above the diagonal are skipped."""
    for j, j0 in enumerate(range(0, S, BLOCK_K)):
        if causal and j0 > L - 1:
            break
        yield j, j0, min(j0 + BLOCK_K, S)


# --- scaled_dot_product_attention ---
class ScaledDotProductAttentionFunction(Rule):
    r"""softmax(c q k^T + b) v, saving the row log-sum-exp instead of the attention matrix.

    Forward (per key block j, online softmax; m, l, a start at -inf, 0, 0):
               s_j = c q k_j^T + b_j,  m' = max(m, rowmax s_j),  p_j = exp(s_j - m')
               l = l e^{m - m'} + rowsum p_j,   a = a e^{m - m'} + (p_j * m_j / (1 - p_drop)) v_j
               o = a / l,   lse = m + log l     (a row with every key masked: o = 0, lse = -inf)
    Backward:  D = rowsum(grad_o * o)           (= rowsum(p * dp), see below)
               per key block j, recomputed:  p_j = exp(s_j - lse),  pd_j = p_j * m_j / (1 - p_drop)
               grad_v_j = pd_j^T grad_o
               dp_j = (grad_o v_j^T) * m_j / (1 - p_drop)
               ds_j = p_j * (dp_j - D)
               grad_q += c ds_j k_j,  grad_k_j = c ds_j^T q,  grad_b_j = ds_j (float mask)
               gradients of broadcast inputs (GQA key heads, broadcast batch dims, the mask)
               are summed back to the input's shape.
    Saved:     q, k, v, mask, o, lse: O(L + S) per head, never an (L, S) matrix.
               ``out_perm`` lays o out in memory in that order of its dims (multi-head attention
               asks for (L, N, H, D) or (N, L, H, D)), so that the out-projection's input is a
               view of it and the two keep one tensor, not two.
    Double backward: no (first_order_only: create_graph=True raises)
    Conventions (torch's): ``causal`` keeps key j for query i when j <= i (top-left aligned,
    also for L != S); a bool mask is True where attention is allowed, and is applied as an
    added 0 / -inf bias (a NaN score stays NaN); p_drop = 1 drops everything (output 0);
    if q, k or v is empty the output is zeros of shape (batch of q k^T, L, Ev).
    """

    compiled = ("attention_fwd", "attention_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(q, k, v, mask, causal, scale, groups, dropout_p, seed, out_perm=None):
        out, lse = ScaledDotProductAttentionFunction._attend(q, k, v, mask, causal, scale, groups, dropout_p, seed)
        if out_perm is not None:  # the output's memory in the order out_perm of its dims (the shape unchanged)
            inv = [0] * len(out_perm)
            for i, d in enumerate(out_perm):
                inv[d] = i
            out = out.permute(out_perm).contiguous().permute(inv)
        return own(out), lse

    @staticmethod
    def _attend(q, k, v, mask, causal, scale, groups, dropout_p, seed):
        if _empty(q, k, v):  # as torch: zeros shaped by q k^T and the value's last dim
            qb, kb = tuple(q.shape[:-2]), tuple(k.shape[:-2])
            batch = broadcast_shape(qb[:-1], kb[:-1]) + qb[-1:] if groups > 1 else broadcast_shape(qb, kb)
            out = q.new_zeros(batch + (q.shape[-2], v.shape[-1]))
            if q.numel() and k.numel() and out.numel():  # an empty value: torch's output is all NaN if a
                s = torch.matmul(grouped(q, groups), grouped(k, 1).transpose(-1, -2))  # score is NaN
                if s.isnan().any():
                    out.fill_(float("nan"))
            return out, q.new_zeros(0)
        if _compiled(q, k, v, mask, groups):  # the block loop below, compiled (bfloat16 in float32)
            qc, kc, vc = (q, k, v) if q.is_cuda else (opmath(q), opmath(k), opmath(v))  # Triton: 16-bit in, f32 acc
            keep = _keep_all(seed, q, k.shape[-2], dropout_p, q.device) if dropout_p > 0 else None
            out, lse = torch.ops.torch_bp.attention_fwd(qc, kc, vc, keep, causal, scale, keep_scale(dropout_p))
            return out.to(q.dtype), lse.reshape(grouped(q, 1).shape[:-1])
        q5 = opmath(grouped(q, groups))   # (..., Hk, G, L, E)
        k5 = opmath(grouped(k, 1))        # (..., Hk, 1, S, E)
        v5 = opmath(grouped(v, 1))        # (..., Hk, 1, S, Ev)
        mask5 = None if mask is None else grouped(additive(mask, q5.dtype), groups)
        L, S = q5.shape[-2], k5.shape[-2]
        batch = broadcast_shape(q5.shape[:-2], k5.shape[:-2], v5.shape[:-2],
                                () if mask5 is None else mask5.shape[:-2])
        qs = q5 * scale
        if S <= BLOCK_K and mask5 is None:
            out, lse = _one_block(qs, k5, v5, causal, batch, dropout_p, seed)
            return ScaledDotProductAttentionFunction._finish(out, lse, q, k, v, mask)
        m = q5.new_full(batch + (L, 1), float("-inf"))
        lsum = q5.new_zeros(batch + (L, 1))
        acc = q5.new_zeros(batch + (L, v5.shape[-1]))
        for j, j0, j1 in _blocks(S, L, causal):
            s = block_scores(qs, k5, mask5, causal, j0, j1, batch)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
            p = s.sub_(m_safe).exp_()                                   # in place: s is ours
            corr = torch.exp(m - m_safe)
            lsum = lsum * corr + p.sum(-1, keepdim=True)
            if dropout_p > 0:
                p.masked_fill_(~keep_mask(seed, j, p.shape, dropout_p, p.device), 0.0).mul_(keep_scale(dropout_p))
            acc = acc.mul_(corr).add_(torch.matmul(p, v5[..., j0:j1, :]))
            m = m_new
        out = acc / lsum.masked_fill(lsum == 0, 1.0)
        lse = (m.masked_fill(m == float("-inf"), 0.0) + torch.log(lsum)).squeeze(-1)  # (..., Hk, G, L)
        return ScaledDotProductAttentionFunction._finish(out, lse, q, k, v, mask)

    @staticmethod
    def _finish(out, lse, q, k, v, mask):
        out = out.to(q.dtype).flatten(-4, -3)  # (..., Hq, L, Ev)
        if max(t.dim() for t in (q, k, v, mask) if t is not None) < 3:
            out = out.squeeze(0)  # every input was (L, E): no head dim in the output
        return out, lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, mask, ctx.causal, ctx.scale, ctx.groups, ctx.dropout_p, ctx.seed = inputs[:9]
        out, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, mask, out, lse)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_out, _grad_lse):
        q, k, v, mask, out, lse = ctx.saved_tensors
        if _empty(q, k, v):  # as torch: zeros for q, k, v; the mask is not used (no gradient)
            return tuple(torch.zeros_like(t) if t is not None and need else None
                         for t, need in zip((q, k, v), ctx.needs_input_grad[:3])) + (None,) * 7
        g, scale, p_drop = ctx.groups, ctx.scale, ctx.dropout_p
        if _compiled(q, k, v, mask, g, grad_out):  # the block loop below, compiled (bfloat16 in float32)
            keep = _keep_all(ctx.seed, q, k.shape[-2], p_drop, q.device) if p_drop > 0 else None
            up = (lambda t: t) if q.is_cuda else opmath  # Triton (CUDA): 16-bit in, float32 accumulation
            grads = torch.ops.torch_bp.attention_bwd(up(grad_out.reshape(out.shape)), up(q), up(k),
                                                     up(v), up(out), lse.reshape(q.shape[:-1]), keep,
                                                     ctx.causal, scale, keep_scale(p_drop))
            return tuple(gr.to(t.dtype) if need else None
                         for gr, t, need in zip(grads, (q, k, v), ctx.needs_input_grad[:3])) + (None,) * 7
        q5, k5, v5 = opmath(grouped(q, g)), opmath(grouped(k, 1)), opmath(grouped(v, 1))
        mask5 = None if mask is None else grouped(additive(mask, q5.dtype), g)
        if 0 in grad_out.stride():  # NOTE: one value expanded (the backward of sum()) sends the
            grad_out = grad_out.contiguous()  # matmuls down a slow strided path: materialise it
        do5 = opmath(grouped(grad_out.reshape(out.shape), g))     # (..., Hk, G, L, Ev)
        o5 = opmath(grouped(out, g))
        L, S = q5.shape[-2], k5.shape[-2]
        D = (do5 * o5).sum(-1, keepdim=True)                       # (..., L, 1)
        lse_b = lse.unsqueeze(-1)
        lse_b = lse_b.masked_fill(lse_b == float("-inf"), float("inf"))  # fully masked rows: p = 0
        need_q, need_k, need_v, need_m = ctx.needs_input_grad[:4]
        need_m = need_m and mask is not None and mask.is_floating_point()
        one = S <= BLOCK_K  # one key block: its gradients are the whole ones (no zeros, no copy)
        dq = None
        dk = k5.new_zeros(k5.shape) if need_k and not one else None
        dv = v5.new_zeros(v5.shape) if need_v and not one else None
        dmask = mask5.new_zeros(mask5.shape, dtype=D.dtype) if need_m else None
        qs = q5 * scale
        batch = lse.shape[:-1]
        if v5.shape[-1] == 0:  # an empty output does not depend on q, k
            need_q = need_k = need_m = False
        for j, j0, j1 in _blocks(S, L, ctx.causal):
            p = block_scores(qs, k5, mask5, ctx.causal, j0, j1, batch).sub_(lse_b).exp_()   # (..., L, bk)
            dp = torch.matmul(do5, v5[..., j0:j1, :].transpose(-1, -2))
            if p_drop > 0:
                keep = keep_mask(ctx.seed, j, p.shape, p_drop, p.device).to(p.dtype).mul_(keep_scale(p_drop))
                pd = p * keep
                dp.mul_(keep)
            else:
                pd = p
            if need_v and one:
                dv = torch.matmul(pd.transpose(-1, -2), do5).sum_to_size(v5.shape)
            elif need_v:
                dv[..., j0:j1, :] = torch.matmul(pd.transpose(-1, -2), do5).sum_to_size(
                    dv[..., j0:j1, :].shape)
            ds = dp.sub_(D).mul_(p)                                      # p * (dp - D), in place
            if need_q:
                dq_j = torch.matmul(ds, k5[..., j0:j1, :])
                dq = dq_j if dq is None else dq.add_(dq_j)
            if need_k and one:
                dk = torch.matmul(ds.transpose(-1, -2), qs).sum_to_size(k5.shape)
            elif need_k:
                dk[..., j0:j1, :] = torch.matmul(ds.transpose(-1, -2), qs).sum_to_size(dk[..., j0:j1, :].shape)
            if need_m:
                if mask5.shape[-1] == 1:
                    dmask = dmask + ds.sum(-1, keepdim=True).sum_to_size(dmask.shape)
                else:
                    dmask[..., j0:j1] = ds.sum_to_size(dmask[..., j0:j1].shape)
        grad_q = ungroup(dq.mul_(scale), q, g).to(q.dtype) if need_q else None
        grad_k = ungroup(dk, k, 1).to(k.dtype) if need_k else None
        grad_v = ungroup(dv, v, 1).to(v.dtype) if need_v else None
        grad_m = ungroup(dmask, mask, g).to(mask.dtype) if need_m else None
        if v5.shape[-1] == 0:
            grad_q = torch.zeros_like(q) if ctx.needs_input_grad[0] else None
            grad_k = torch.zeros_like(k) if ctx.needs_input_grad[1] else None
        return grad_q, grad_k, grad_v, grad_m, None, None, None, None, None, None


def _one_block(qs, k5, v5, causal, batch, dropout_p, seed):
    """The forward when all keys fit one block and there is no mask: (o, lse), the same values.

    NOTE: every row has an unmasked key here (causal keeps key 0), so p = softmax(s) (one fused
    pass) and, with m = rowmax s, the largest p is exp(0) / l: lse = m + log l = m - log(max p),
    to float rounding. A row whose scores are all -inf (infinite inputs) gets p = 0, lse = -inf. This replaces the online-softmax passes (subtract, exp, sum) of the loop.
    """
    s = block_scores(qs, k5, None, causal, 0, k5.shape[-2], batch)  # (..., L, S)
    m = s.amax(-1, keepdim=True)
    p = torch.softmax(s, -1)
    lse = (m - torch.log(p.amax(-1, keepdim=True))).squeeze(-1)
    dead = m == float("-inf")  # every score -inf (from the data): p = 0 and lse = -inf, as the loop
    if dead.any():
        p.masked_fill_(dead, 0.0)
        lse.masked_fill_(dead.squeeze(-1), float("-inf"))
    if dropout_p >= 1:  # every weight dropped: 0 * p, so a NaN row stays NaN (as torch's p * mask)
        p.mul_(0.0)
    elif dropout_p > 0:
        p.masked_fill_(~keep_mask(seed, 0, p.shape, dropout_p, p.device), 0.0).mul_(keep_scale(dropout_p))
    return torch.matmul(p, v5), lse


# --- attention weights (MultiheadAttention with need_weights=True) ---
class AttentionWeightsFunction(Rule):
    r"""Attention that also returns its (dropped-out) weights, for ``need_weights=True``.

    Forward:   p = softmax(c q k^T + b),  pd = p * m / (1 - p_drop),  o = pd v
               w = pd, or its mean over the heads (dim -3) when ``average``
    Backward:  dpd = grad_o v^T + grad_w      (grad_w / H broadcast over heads when averaged)
               grad_v = pd^T grad_o,   dp = dpd * m / (1 - p_drop)
               ds = p * (dp - rowsum(p * dp))
               grad_q = c ds k,  grad_k = c ds^T q,  grad_b = ds
    Saved:     q, k, v, mask, p: the weights are returned, so the (L, S) matrix is kept
               (use :class:`ScaledDotProductAttentionFunction` when they are not needed).
    The dropout masks are those of :class:`ScaledDotProductAttentionFunction` for the same seed.
    Double backward: no (first_order_only: create_graph=True raises)

    NOTE (bfloat16/float16): torch computes this path as a chain of separate ops (scale,
    baddbmm, softmax, dropout, bmm, and their backwards), each rounding its result to the
    input dtype. We compute in float32 and round at the same points (``rd``), so low
    precision results agree with torch's as closely as a fused op's would.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(q, k, v, mask, causal, scale, dropout_p, seed, average):
        rd = _rounding(q.dtype)
        q4, k4, v4 = opmath(q), opmath(k), opmath(v)  # (..., H, L, E)
        qs = rd(q4 * scale)
        bias = additive(mask, qs.dtype)
        s = rd(torch.cat([block_scores(qs, k4, bias, causal, j0, j1) for j0, j1 in _all_blocks(k4.shape[-2])], -1))
        p = rd(torch.softmax(s, -1).masked_fill(s.amax(-1, keepdim=True) == float("-inf"), 0.0))  # all masked: 0
        keep = _keep_full(p, seed, dropout_p)
        pd = p if keep is None else rd(p * keep)
        out = torch.matmul(pd, v4)
        w = pd.mean(-3) if average else pd
        if w is p:  # the weights are an output with a gradient, p a residual: not the same tensor
            w = p.clone()
        return own(out.to(q.dtype)), w.to(q.dtype), p.to(q.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, mask, ctx.causal, ctx.scale, ctx.dropout_p, ctx.seed, ctx.average = inputs
        _, w, p = output
        ctx.mark_non_differentiable(p)
        if not any(t is not None and t.requires_grad for t in (q, k, mask)):
            ctx.mark_non_differentiable(w)  # the weights depend on q, k and the mask only (torch: no grad then)
        ctx.set_materialize_grads(False)  # no zero-filled (L, S) gradient for p
        ctx.save_for_backward(q, k, v, mask, p)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_out, grad_w, _grad_p):
        q, k, v, mask, p = ctx.saved_tensors
        rd = _rounding(q.dtype)
        q4, k4, v4, p = opmath(q), opmath(k), opmath(v), opmath(p)
        p_drop, scale = ctx.dropout_p, ctx.scale
        keep = _keep_full(p, ctx.seed, p_drop)
        pd = p if keep is None else rd(p * keep)
        go = pd.new_zeros(pd.shape[:-1] + (v4.shape[-1],)) if grad_out is None else opmath(grad_out)
        dpd = rd(torch.matmul(go, v4.transpose(-1, -2)))
        if grad_w is not None:
            gw = opmath(grad_w)
            dpd = rd(dpd + (rd(gw.unsqueeze(-3) / p.shape[-3]) if ctx.average else gw))
        dp = dpd if keep is None else rd(dpd * keep)
        ds = rd(p * (dp - (p * dp).sum(-1, keepdim=True)))
        grad_q = grad_k = grad_v = grad_m = None
        if ctx.needs_input_grad[0]:
            grad_q = (rd(torch.matmul(ds, k4)) * scale).sum_to_size(q.shape).to(q.dtype)
        if ctx.needs_input_grad[1]:
            grad_k = torch.matmul(ds.transpose(-1, -2), rd(q4 * scale)).sum_to_size(k.shape).to(k.dtype)
        if ctx.needs_input_grad[2]:
            grad_v = torch.matmul(pd.transpose(-1, -2), go).sum_to_size(v.shape).to(v.dtype)
        if ctx.needs_input_grad[3] and mask is not None and mask.is_floating_point():
            grad_m = ds.sum_to_size(mask.shape).to(mask.dtype)
        return grad_q, grad_k, grad_v, grad_m, None, None, None, None, None


def _rounding(dtype):
    """Round a float32 intermediate to ``dtype`` and back (identity for float32/float64)."""
    if dtype in (torch.float16, torch.bfloat16):
        return lambda t: t.to(dtype).float()
    return lambda t: t


def _all_blocks(S):
    return [(j0, min(j0 + BLOCK_K, S)) for j0 in range(0, S, BLOCK_K)] or [(0, 0)]


def _keep_full(p, seed, p_drop):
    """The scaled keep mask m / (1 - p_drop) over all key blocks (None without dropout)."""
    if p_drop <= 0:
        return None
    # the same per-block masks as ScaledDotProductAttentionFunction (groups of 1: H heads, G = 1)
    shape5 = p.shape[:-3] + (p.shape[-3], 1, p.shape[-2])
    blocks = [keep_mask(seed, j, shape5 + (j1 - j0,), p_drop, p.device)
              for j, (j0, j1) in enumerate(_all_blocks(p.shape[-1]))]
    return torch.cat(blocks, -1).squeeze(-3).to(p.dtype) * keep_scale(p_drop)


