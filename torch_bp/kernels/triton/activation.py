r"""Triton kernels of :mod:`torch_bp.ops.activation`: softmax and log-softmax along the last dim,
relu with its 1-bit mask, the bit-mask backward shared with dropout, gelu (both modes) and silu.

Softmax rows are processed in blocks of at most ``MAX_BLOCK`` columns with an online max and
sum, so any row length works. Elementwise kernels compute in float32 and round once.
Bit masks: bit i % 8 of byte i // 8 is element i of the flattened tensor (the layout of
``csrc/cpu/activation.cpp`` and of ``torch_bp.ops._util.pack_bits``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block

MAX_BLOCK = 4096
ELEM_BLOCK = 1024           # elements per program of an elementwise kernel
BYTE_BLOCK = 256            # mask bytes (8 elements each) per program

RELU, GELU, GELU_TANH, SILU = 0, 1, 2, 3
ACTIVATIONS = {("relu", "none"): RELU, ("gelu", "none"): GELU, ("gelu", "tanh"): GELU_TANH, ("silu", "none"): SILU}


def act_code(activation: str, approximate: str = "none") -> int:
    if activation != "gelu":
        approximate = "none"
    try:
        return ACTIVATIONS[(activation, approximate)]
    except KeyError:
        raise ValueError(f"torch_bp (Triton): unknown activation {activation!r} "
                         f"(approximate={approximate!r})") from None


# --- elementwise rules (float32 in, float32 out) ---
@triton.jit
def _tanh(x):
    # tanh(x) = 1 - 2 / (e^{2x} + 1): exact at +-inf, no libdevice call (runs in the interpreter too)
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def act_fwd(z, ACT: tl.constexpr):
    """relu: z where not z <= 0 (NaN stays NaN); gelu: z Phi(z); gelu tanh: 0.5 z (1 + tanh(k (z + 0.044715 z^3)));
    silu: z s(z) (GELUFunction, SiLUFunction, ReLUFunction in torch_bp/ops/activation.py)."""
    if ACT == 0:
        y = tl.where(z <= 0.0, 0.0, z)
    elif ACT == 1:
        y = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif ACT == 2:
        y = 0.5 * z * (1.0 + _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    else:
        y = z / (1.0 + tl.exp(-z))
    return y


@triton.jit
def act_bwd(z, g, ACT: tl.constexpr):
    """grad_y * act'(z): relu_grad, gelu_grad, silu_grad (torch_bp/ops/activation.py)."""
    if ACT == 0:
        gz = tl.where(z <= 0.0, 0.0, g)
    elif ACT == 1:
        d = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476)) + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
        gz = g * d
    elif ACT == 2:
        z2 = z * z
        t = _tanh(0.7978845608028654 * (z + 0.044715 * z2 * z))
        d = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3 * 0.044715 * z2)
        gz = g * d
    else:
        s = 1.0 / (1.0 + tl.exp(-z))
        gz = g * s * (1.0 + z * (1.0 - s))
    return gz


@triton.jit
def _act_fwd_kernel(X, Y, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """GELUFunction.forward / SiLUFunction.forward / ReLUFunction.forward (torch_bp/ops/activation.py)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(X + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(Y + offs, act_fwd(x, ACT).to(Y.dtype.element_ty), mask=m)


@triton.jit
def _act_bwd_kernel(GY, X, GX, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """gelu_grad / silu_grad (torch_bp/ops/activation.py): grad_x = grad_y act'(x)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(X + offs, mask=m, other=0.0).to(tl.float32)
    g = tl.load(GY + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(GX + offs, act_bwd(x, g, ACT).to(GX.dtype.element_ty), mask=m)


# --- bit masks ---
@triton.jit
def _pack_kernel(V, BITS, n, KIND: tl.constexpr, BLOCK: tl.constexpr):
    """relu_mask (KIND 0): bit = [not y <= 0] (ReLUFunction's saved mask); pack_mask (KIND 1):
    bit = the bool mask (DropoutFunction's saved mask)."""
    byte = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)            # (BLOCK,)
    bit = tl.arange(0, 8)
    offs = byte[:, None] * 8 + bit[None, :]                                     # (BLOCK, 8)
    m = offs < n
    if KIND == 0:
        v = tl.load(V + offs, mask=m, other=0.0)
        on = (v > 0) | (v != v)  # noqa: PLR0124  (not v <= 0: v > 0, or v is NaN)
    else:
        on = tl.load(V + offs, mask=m, other=0) != 0
    on = on & m
    packed = tl.sum(on.to(tl.int32) << bit[None, :], 1)
    tl.store(BITS + byte, packed.to(tl.uint8), mask=byte * 8 < n)


@triton.jit
def _mask_bwd_kernel(GY, BITS, S, GX, n, HAS_S: tl.constexpr, BLOCK: tl.constexpr):
    """The backward of a bit mask (ReLUFunction.backward, DropoutFunction.backward): without a scale,
    grad_x = grad_y where the bit is set, else 0 (a select); with scale s, grad_x = grad_y (bit s)
    (a product, so NaN * 0 stays NaN, as the Python rule)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    bits = tl.load(BITS + offs // 8, mask=m, other=0).to(tl.int32)
    on = ((bits >> (offs % 8).to(tl.int32)) & 1) != 0
    g = tl.load(GY + offs, mask=m, other=0.0)
    if HAS_S:
        s = tl.load(S).to(tl.float32)
        gx = g.to(tl.float32) * tl.where(on, s, 0.0)
    else:
        gx = tl.where(on, g, 0.0)
    tl.store(GX + offs, gx.to(GX.dtype.element_ty), mask=m)


# --- softmax / log-softmax along the last dim ---
@triton.jit
def _row_max_sum(X, row, D, BLOCK: tl.constexpr):
    """Online max m and sum s = sum(e^{x - m}) of one row of D elements, BLOCK at a time."""
    cols = tl.arange(0, BLOCK)
    mv = tl.full((BLOCK,), float("-inf"), tl.float32)
    sv = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, D, BLOCK):
        c = start + cols
        x = tl.load(X + row * D + c, mask=c < D, other=float("-inf")).to(tl.float32)
        mn = tl.maximum(mv, x)
        ms = tl.where(mn == float("-inf"), 0.0, mn)
        sv = sv * tl.exp(mv - ms) + tl.exp(x - ms)
        mv = mn
    m = tl.max(mv, 0)
    ms = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(sv * tl.exp(mv - ms), 0)
    return m, s


@triton.jit
def _softmax_fwd_kernel(X, Y, D, LOG: tl.constexpr, BLOCK: tl.constexpr):
    """SoftmaxFunction.forward: y = e^{x - max x} / sum(e^{x - max x});
    LogSoftmaxFunction.forward: y = (x - max x) - log(sum(e^{x - max x})) (torch_bp/ops/activation.py)."""
    row = tl.program_id(0).to(tl.int64)
    m, s = _row_max_sum(X, row, D, BLOCK)
    cols = tl.arange(0, BLOCK)
    for start in range(0, D, BLOCK):
        c = start + cols
        x = tl.load(X + row * D + c, mask=c < D, other=0.0).to(tl.float32)
        if LOG:
            y = (x - m) - tl.log(s)
        else:
            y = tl.exp(x - m) / s
        tl.store(Y + row * D + c, y.to(Y.dtype.element_ty), mask=c < D)


@triton.jit
def _softmax_bwd_kernel(GY, Y, GX, D, LOG: tl.constexpr, BLOCK: tl.constexpr):
    """SoftmaxFunction.backward: grad_x = y (grad_y - sum(grad_y y));
    LogSoftmaxFunction.backward: grad_x = grad_y - e^y sum(grad_y) (torch_bp/ops/activation.py)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, D, BLOCK):
        c = start + cols
        g = tl.load(GY + row * D + c, mask=c < D, other=0.0).to(tl.float32)
        if LOG:
            acc += g
        else:
            acc += g * tl.load(Y + row * D + c, mask=c < D, other=0.0).to(tl.float32)
    t = tl.sum(acc, 0)
    for start in range(0, D, BLOCK):
        c = start + cols
        g = tl.load(GY + row * D + c, mask=c < D, other=0.0).to(tl.float32)
        y = tl.load(Y + row * D + c, mask=c < D, other=0.0).to(tl.float32)
        if LOG:
            gx = g - tl.exp(y) * t
        else:
            gx = y * (g - t)
        tl.store(GX + row * D + c, gx.to(GX.dtype.element_ty), mask=c < D)


# --- launchers (the op schemas of csrc/ops.cpp) ---
def _elem_grid(n):
    return (triton.cdiv(n, ELEM_BLOCK),)


def _act(x, code):
    xc = x.contiguous()
    y = torch.empty_like(xc)
    if xc.numel():
        _act_fwd_kernel[_elem_grid(xc.numel())](xc, y, xc.numel(), ACT=code, BLOCK=ELEM_BLOCK)
    return y


def _act_grad(grad_y, x, code):
    xc, gy = x.contiguous(), grad_y.expand(x.shape).contiguous()
    gx = torch.empty_like(xc)
    if xc.numel():
        _act_bwd_kernel[_elem_grid(xc.numel())](gy, xc, gx, xc.numel(), ACT=code, BLOCK=ELEM_BLOCK)
    return gx


def relu_fwd(x):
    return _act(x, RELU)


def gelu_fwd(x, approximate):
    return _act(x, act_code("gelu", approximate))


def gelu_bwd(grad_y, x, approximate):
    return _act_grad(grad_y, x, act_code("gelu", approximate))


def silu_fwd(x):
    return _act(x, SILU)


def silu_bwd(grad_y, x):
    return _act_grad(grad_y, x, SILU)


def pack(v, kind):
    vc = v.contiguous()
    if kind == 1:
        vc = vc.view(torch.uint8)  # bool -> its bytes (0 / 1)
    n = vc.numel()
    bits = torch.empty(((n + 7) // 8,), dtype=torch.uint8, device=v.device)
    if n:
        _pack_kernel[(triton.cdiv(bits.numel(), BYTE_BLOCK),)](vc, bits, n, KIND=kind, BLOCK=BYTE_BLOCK)
    return bits


def relu_mask(y):
    return pack(y, 0)


def mask_bwd(grad_y, mask, scale):
    n = grad_y.numel()
    if mask.dtype != torch.uint8 or mask.numel() != (n + 7) // 8:
        raise RuntimeError("torch_bp::mask_bwd: mask must be uint8 with ceil(numel / 8) elements")
    has_s = scale is not None
    if has_s and (scale.numel() != 1 or scale.dtype != grad_y.dtype):
        raise RuntimeError("torch_bp::mask_bwd: scale must be one value of grad_y's dtype")
    gy = grad_y.contiguous()
    gx = torch.empty_like(gy)
    if n:
        _mask_bwd_kernel[_elem_grid(n)](gy, mask, scale, gx, n, HAS_S=has_s, BLOCK=ELEM_BLOCK)
    return gx


def _softmax(x, log):
    xc = x.contiguous()
    y = torch.empty_like(xc)
    d = x.shape[-1] if x.dim() else 1
    if xc.numel():
        _softmax_fwd_kernel[(xc.numel() // d,)](xc, y, d, LOG=log, BLOCK=block(d, hi=MAX_BLOCK))
    return y


def _softmax_grad(grad_y, y, log):
    yc, gy = y.contiguous(), grad_y.expand(y.shape).contiguous()
    gx = torch.empty_like(yc)
    d = y.shape[-1] if y.dim() else 1
    if yc.numel():
        _softmax_bwd_kernel[(yc.numel() // d,)](gy, yc, gx, d, LOG=log, BLOCK=block(d, hi=MAX_BLOCK))
    return gx


def softmax_fwd(x):
    return _softmax(x, False)


def log_softmax_fwd(x):
    return _softmax(x, True)


def softmax_bwd(grad_y, y):
    return _softmax_grad(grad_y, y, False)


def log_softmax_bwd(grad_y, y):
    return _softmax_grad(grad_y, y, True)


OPS = {
    "relu_fwd": relu_fwd,
    "relu_mask": relu_mask,
    "mask_bwd": mask_bwd,
    "gelu_fwd": gelu_fwd,
    "gelu_bwd": gelu_bwd,
    "silu_fwd": silu_fwd,
    "silu_bwd": silu_bwd,
    "softmax_fwd": softmax_fwd,
    "log_softmax_fwd": log_softmax_fwd,
    "softmax_bwd": softmax_bwd,
    "log_softmax_bwd": log_softmax_bwd,
}
