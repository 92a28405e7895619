r"""Triton kernels of :mod:`torch_bp.ops.attention`: scaled dot-product attention in the flash style
(ScaledDotProductAttentionFunction's block loop).

q (..., L, E), k (..., S, E), v (..., S, Ev) with one leading shape, flattened to (BH, ., .).
Forward: one program per (block of BLOCK_M queries, head); it walks the key blocks with an
online softmax and writes o and the row log-sum-exp lse; no (L, S) matrix exists.
Backward: D = rowsum(grad_o * o) first; then one kernel per key block (grad_k, grad_v: it walks
the query blocks) and one per query block (grad_q: it walks the key blocks), both recomputing
p = e^{s - lse} tile by tile; no atomics, so the gradients are the same on every run.
Masks: ``causal`` (key j kept for query i when j <= i, top-left aligned), the dropout keep mask
``keep`` (..., L, S) (bool; survivors scaled by ``keep_scale``), and, in the launchers
:func:`attention_forward` / :func:`attention_backward` only, a key-padding mask
``key_keep`` (BH, S) (bool, True: attend). A row with every key masked gives o = 0, lse = -inf.
Products: 16-bit inputs enter ``tl.dot`` as they are (float32 accumulation); float32 inputs
in IEEE float32 (no TF32), so the float32 result is the Python rule's to float32 tolerance.
NOTE: Triton's interpreter (3.9) multiplies 16-bit operands of ``tl.dot`` as their raw bits;
for CPU tensors (the interpreter) the operands are upcast to float32 first (``UPCAST``). A
product of two bfloat16 or float16 values is exact in float32, so only the speed differs.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    """a @ b with float32 accumulation (PREC "upcast": both in float32 first, see the NOTE above)."""
    if PREC == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _scores(q, k, rm, rn, L, S, KP, bh, scale, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, PREC: tl.constexpr):
    """s = c q k^T for a (BLOCK_M, BLOCK_N) tile, and where it is kept (in range, causal, not padded)."""
    s = _dot(q, tl.trans(k), PREC) * scale
    ok = (rm[:, None] < L) & (rn[None, :] < S)
    if CAUSAL:
        ok = ok & (rn[None, :] <= rm[:, None])
    if HAS_KPM:
        ok = ok & (tl.load(KP + bh * S + rn, mask=rn < S, other=0) != 0)[None, :]
    return s, ok


@triton.jit
def _attn_fwd_kernel(Q, K, V, KEEP, KP, O, LSE, L, S, E, EV, scale, keep_scale,
                     CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_KPM: tl.constexpr, PREC: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_EV: tl.constexpr):
    """ScaledDotProductAttentionFunction.forward (torch_bp/ops/attention.py): per key block j,
    s_j = c q k_j^T (masked: -inf), m' = max(m, rowmax s_j), p_j = e^{s_j - m'},
    l = l e^{m - m'} + rowsum p_j, a = a e^{m - m'} + (p_j keep_j keep_scale) v_j;
    o = a / l, lse = m + log l (o = 0, lse = -inf for a row with every key masked)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    re = tl.arange(0, BLOCK_E)
    rv = tl.arange(0, BLOCK_EV)
    q = tl.load(Q + bh * L * E + rm[:, None] * E + re[None, :], mask=(rm[:, None] < L) & (re[None, :] < E), other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_EV), tl.float32)
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + bh * S * E + rn[:, None] * E + re[None, :], mask=(rn[:, None] < S) & (re[None, :] < E),
                    other=0.0)
        s, ok = _scores(q, k, rm, rn, L, S, KP, bh, scale, CAUSAL, HAS_KPM, PREC)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        corr = tl.exp(m_i - m_safe)
        l_i = l_i * corr + tl.sum(p, 1)
        if HAS_KEEP:
            kp = tl.load(KEEP + bh * L * S + rm[:, None] * S + rn[None, :],
                         mask=(rm[:, None] < L) & (rn[None, :] < S), other=0) != 0
            p = tl.where(kp, p * keep_scale, 0.0)
        v = tl.load(V + bh * S * EV + rn[:, None] * EV + rv[None, :], mask=(rn[:, None] < S) & (rv[None, :] < EV),
                    other=0.0)
        acc = acc * corr[:, None] + _dot(p.to(v.dtype), v, PREC)
        m_i = m_new
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    lse = tl.where(m_i == float("-inf"), 0.0, m_i) + tl.log(l_i)
    tl.store(O + bh * L * EV + rm[:, None] * EV + rv[None, :], o.to(O.dtype.element_ty),
             mask=(rm[:, None] < L) & (rv[None, :] < EV))
    tl.store(LSE + bh * L + rm, lse, mask=rm < L)


@triton.jit
def _probs(q, k, do, v, rm, rn, L, S, KP, KEEP, LSE, DELTA, bh, scale, keep_scale,
           CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_KPM: tl.constexpr, PREC: tl.constexpr):
    """The recomputed tile of the backward: p = e^{s - lse} (0 where masked or the row is fully
    masked), pd = p keep keep_scale, ds = p (dp - D) with dp = (grad_o v^T) keep keep_scale."""
    s, ok = _scores(q, k, rm, rn, L, S, KP, bh, scale, CAUSAL, HAS_KPM, PREC)
    lse = tl.load(LSE + bh * L + rm, mask=rm < L, other=0.0)
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
    dp = _dot(do, tl.trans(v), PREC)
    if HAS_KEEP:
        kp = tl.load(KEEP + bh * L * S + rm[:, None] * S + rn[None, :],
                     mask=(rm[:, None] < L) & (rn[None, :] < S), other=0) != 0
        km = tl.where(kp, keep_scale, 0.0)
        pd = p * km
        dp = dp * km
    else:
        pd = p
    d = tl.load(DELTA + bh * L + rm, mask=rm < L, other=0.0)
    ds = p * (dp - d[:, None])
    return pd, ds


@triton.jit
def _attn_bwd_dkdv_kernel(Q, K, V, DO, KEEP, KP, LSE, DELTA, DK, DV, L, S, E, EV, scale, keep_scale,
                          CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_KPM: tl.constexpr, PREC: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
                          BLOCK_EV: tl.constexpr):
    """ScaledDotProductAttentionFunction.backward, for one key block j over all query blocks:
    grad_v_j = pd_j^T grad_o, grad_k_j = c ds_j^T q (see _probs)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    re = tl.arange(0, BLOCK_E)
    rv = tl.arange(0, BLOCK_EV)
    k = tl.load(K + bh * S * E + rn[:, None] * E + re[None, :], mask=(rn[:, None] < S) & (re[None, :] < E), other=0.0)
    v = tl.load(V + bh * S * EV + rn[:, None] * EV + rv[None, :], mask=(rn[:, None] < S) & (rv[None, :] < EV),
                other=0.0)
    dk = tl.zeros((BLOCK_N, BLOCK_E), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_EV), tl.float32)
    lo = 0
    if CAUSAL:
        lo = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    for start in range(lo, L, BLOCK_M):
        rm = start + tl.arange(0, BLOCK_M)
        q = tl.load(Q + bh * L * E + rm[:, None] * E + re[None, :], mask=(rm[:, None] < L) & (re[None, :] < E),
                    other=0.0)
        do = tl.load(DO + bh * L * EV + rm[:, None] * EV + rv[None, :], mask=(rm[:, None] < L) & (rv[None, :] < EV),
                     other=0.0)
        pd, ds = _probs(q, k, do, v, rm, rn, L, S, KP, KEEP, LSE, DELTA, bh, scale, keep_scale,
                        CAUSAL, HAS_KEEP, HAS_KPM, PREC)
        dv += _dot(tl.trans(pd.to(do.dtype)), do, PREC)
        dk += _dot(tl.trans(ds.to(q.dtype)), q, PREC)
    tl.store(DK + bh * S * E + rn[:, None] * E + re[None, :], (dk * scale).to(DK.dtype.element_ty),
             mask=(rn[:, None] < S) & (re[None, :] < E))
    tl.store(DV + bh * S * EV + rn[:, None] * EV + rv[None, :], dv.to(DV.dtype.element_ty),
             mask=(rn[:, None] < S) & (rv[None, :] < EV))


@triton.jit
def _attn_bwd_dq_kernel(Q, K, V, DO, KEEP, KP, LSE, DELTA, DQ, L, S, E, EV, scale, keep_scale,
                        CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_KPM: tl.constexpr, PREC: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_EV: tl.constexpr):
    """ScaledDotProductAttentionFunction.backward, for one query block over all key blocks:
    grad_q = c sum_j ds_j k_j (see _probs)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    re = tl.arange(0, BLOCK_E)
    rv = tl.arange(0, BLOCK_EV)
    q = tl.load(Q + bh * L * E + rm[:, None] * E + re[None, :], mask=(rm[:, None] < L) & (re[None, :] < E), other=0.0)
    do = tl.load(DO + bh * L * EV + rm[:, None] * EV + rv[None, :], mask=(rm[:, None] < L) & (rv[None, :] < EV),
                 other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_E), tl.float32)
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + bh * S * E + rn[:, None] * E + re[None, :], mask=(rn[:, None] < S) & (re[None, :] < E),
                    other=0.0)
        v = tl.load(V + bh * S * EV + rn[:, None] * EV + rv[None, :], mask=(rn[:, None] < S) & (rv[None, :] < EV),
                    other=0.0)
        _pd, ds = _probs(q, k, do, v, rm, rn, L, S, KP, KEEP, LSE, DELTA, bh, scale, keep_scale,
                        CAUSAL, HAS_KEEP, HAS_KPM, PREC)
        dq += _dot(ds.to(k.dtype), k, PREC)
    tl.store(DQ + bh * L * E + rm[:, None] * E + re[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=(rm[:, None] < L) & (re[None, :] < E))


# --- launchers ---
def _config(t, e, backward):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages); small blocks in the interpreter (CPU tensors)."""
    if not t.is_cuda:
        return 16, 16, 4, 1
    if backward:
        return (64, 64, 4, 2) if e <= 64 else (32, 32, 4, 2) if e > 128 else (64, 32, 4, 2)
    return (128, 64, 4, 3) if e <= 64 else (64, 32, 4, 2) if e > 128 else (64, 64, 8, 2)


def _dims(q, k, v):
    if not (q.dim() == k.dim() == v.dim() and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise RuntimeError("torch_bp::attention (Triton): q, k, v must have the same leading dims")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise RuntimeError("torch_bp::attention (Triton): q, k, v must have one dtype")
    L, E = q.shape[-2:]
    S, Ev = v.shape[-2:]
    bh = math.prod(q.shape[:-2])
    return bh, L, S, E, Ev


def _blocks_e(e):
    return max(16, triton.next_power_of_2(e))


def _keep(keep, bh, L, S):
    return None if keep is None else keep.reshape(bh, L, S).contiguous().view(torch.uint8)


def _kpm(key_keep, bh, S):
    return None if key_keep is None else key_keep.expand(bh, S).contiguous().view(torch.uint8)


def _prec(q):
    if not q.is_cuda:
        return "upcast"
    return "ieee" if q.dtype == torch.float32 else "tf32"


def attention_forward(q, k, v, keep=None, causal=False, scale=1.0, keep_scale=1.0, key_keep=None):
    """(o, lse): o (..., L, Ev) in q's dtype, lse (..., L) float32. ``key_keep``: (BH, S) bool or None."""
    bh, L, S, E, Ev = _dims(q, k, v)
    o = q.new_empty(tuple(q.shape[:-1]) + (Ev,))
    lse = torch.empty(tuple(q.shape[:-1]), dtype=torch.float32, device=q.device)
    if bh == 0 or L == 0:
        return o, lse
    bm, bn, warps, stages = _config(q, max(E, Ev), False)
    _attn_fwd_kernel[(triton.cdiv(L, bm), bh)](
        q.contiguous(), k.contiguous(), v.contiguous(), _keep(keep, bh, L, S), _kpm(key_keep, bh, S), o, lse,
        L, S, E, Ev, float(scale), float(keep_scale), CAUSAL=bool(causal), HAS_KEEP=keep is not None,
        HAS_KPM=key_keep is not None, PREC=_prec(q), BLOCK_M=bm, BLOCK_N=bn, BLOCK_E=_blocks_e(E),
        BLOCK_EV=_blocks_e(Ev), num_warps=warps, num_stages=stages)
    return o, lse


def attention_backward(grad_o, q, k, v, o, lse, keep=None, causal=False, scale=1.0, keep_scale=1.0, key_keep=None):
    """(grad_q, grad_k, grad_v) in the dtypes of q, k, v."""
    bh, L, S, E, Ev = _dims(q, k, v)
    dq, dk, dv = torch.empty_like(q.contiguous()), torch.empty_like(k.contiguous()), torch.empty_like(v.contiguous())
    if bh == 0 or L == 0 or S == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    do = grad_o.reshape(o.shape).to(q.dtype).contiguous()
    delta = (do.float() * o.float()).sum(-1).contiguous()   # D = rowsum(grad_o * o), (..., L)
    lse = lse.reshape(delta.shape).float().contiguous()
    args = (q.contiguous(), k.contiguous(), v.contiguous(), do, _keep(keep, bh, L, S), _kpm(key_keep, bh, S), lse,
            delta)
    bm, bn, warps, stages = _config(q, max(E, Ev), True)
    meta = {"CAUSAL": bool(causal), "HAS_KEEP": keep is not None, "HAS_KPM": key_keep is not None,
            "PREC": _prec(q), "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_E": _blocks_e(E), "BLOCK_EV": _blocks_e(Ev),
            "num_warps": warps, "num_stages": stages}
    _attn_bwd_dkdv_kernel[(triton.cdiv(S, bn), bh)](*args, dk, dv, L, S, E, Ev, float(scale), float(keep_scale), **meta)
    _attn_bwd_dq_kernel[(triton.cdiv(L, bm), bh)](*args, dq, L, S, E, Ev, float(scale), float(keep_scale), **meta)
    return dq, dk, dv


def attention_fwd(q, k, v, keep, causal, scale, keep_scale):
    return attention_forward(q, k, v, keep, causal, scale, keep_scale)


def attention_bwd(grad_o, q, k, v, o, lse, keep, causal, scale, keep_scale):
    return attention_backward(grad_o, q, k, v, o, lse, keep, causal, scale, keep_scale)


OPS = {"attention_fwd": attention_fwd, "attention_bwd": attention_bwd}
