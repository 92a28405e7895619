r"""Triton kernels of :mod:`torch_bp.ops.linear`: the fused epilogue of a linear layer
(BiasActivationFunction): y = act(h + b) and its backward with the bias gradient.

h is viewed as (N, C) rows; a program owns a (BLOCK_M, BLOCK_C) tile. z = h + b is rounded to
h's dtype before the activation (as the Python rule's ``h + b``). The bias gradient is a
two-stage reduction: each row block writes its column sums of grad_z (float32), which are then
summed over row blocks.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .activation import RELU, act_bwd, act_code, act_fwd, pack

BLOCK_M, BLOCK_C = 32, 128


@triton.jit
def _bias_act_fwd_kernel(H, B, Y, N, C, HAS_B: tl.constexpr, ACT: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """BiasActivationFunction.forward (torch_bp/ops/linear.py): z = h + b, y = act(z)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (rows[:, None] < N) & (cols[None, :] < C)
    offs = rows[:, None] * C + cols[None, :]
    h = tl.load(H + offs, mask=m, other=0.0)
    z = h.to(tl.float32)
    if HAS_B:
        b = tl.load(B + cols, mask=cols < C, other=0.0).to(tl.float32)
        z = (z + b[None, :]).to(H.dtype.element_ty).to(tl.float32)
    tl.store(Y + offs, act_fwd(z, ACT).to(Y.dtype.element_ty), mask=m)


@triton.jit
def _bias_act_bwd_kernel(GY, H, BITS, B, GZ, GB_PART, N, C, HAS_B: tl.constexpr, ACT: tl.constexpr,
                         NEED_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """BiasActivationFunction.backward: grad_z = grad_y act'(z) (relu: grad_y where the saved bit
    [not z <= 0] is set), grad_b = column sums of grad_z (this row block's part)."""
    pm = tl.program_id(0)
    rows = pm.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (rows[:, None] < N) & (cols[None, :] < C)
    offs = rows[:, None] * C + cols[None, :]
    g = tl.load(GY + offs, mask=m, other=0.0)
    if ACT == 0:
        bits = tl.load(BITS + offs // 8, mask=m, other=0).to(tl.int32)
        on = ((bits >> (offs % 8).to(tl.int32)) & 1) != 0
        gz = tl.where(on, g, 0.0).to(GZ.dtype.element_ty)
    else:
        z = tl.load(H + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_B:
            b = tl.load(B + cols, mask=cols < C, other=0.0).to(tl.float32)
            z = (z + b[None, :]).to(H.dtype.element_ty).to(tl.float32)
        gz = act_bwd(z, g.to(tl.float32), ACT).to(GZ.dtype.element_ty)
    tl.store(GZ + offs, gz, mask=m)
    if NEED_B:
        part = tl.sum(tl.where(m, gz.to(tl.float32), 0.0), 0)
        tl.store(GB_PART + pm * C + cols, part, mask=cols < C)


def _grid(n, c):
    return (triton.cdiv(n, BLOCK_M), triton.cdiv(c, BLOCK_C))


def bias_act_fwd(h, bias, activation, approximate):
    code = act_code(activation, approximate)
    if bias is not None and bias.numel() != h.shape[-1]:
        raise RuntimeError("torch_bp::bias_act_fwd: bias must have h.size(-1) elements")
    hc = h.contiguous()
    c = h.shape[-1] if h.dim() else 1
    n = hc.numel() // c if c else 0
    y = torch.empty_like(hc)
    if n and c:
        _bias_act_fwd_kernel[_grid(n, c)](hc, None if bias is None else bias.contiguous(), y, n, c,
                                          HAS_B=bias is not None, ACT=code, BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C)
    mask = pack(y, 0) if code == RELU else torch.empty((0,), dtype=torch.uint8, device=h.device)
    return y, mask


def bias_act_bwd(grad_y, saved, bias, activation, approximate, bias_grad):
    code = act_code(activation, approximate)
    gy = grad_y.contiguous()
    c = gy.shape[-1] if gy.dim() else 1
    n = gy.numel() // c if c else 0
    gz = torch.empty_like(gy)
    gb_part = torch.zeros((triton.cdiv(n, BLOCK_M) or 1, c), dtype=torch.float32, device=gy.device) \
        if bias_grad else None
    if code == RELU:
        bits, h = saved, None
        if bits.dtype != torch.uint8 or bits.numel() != (gy.numel() + 7) // 8:
            raise RuntimeError("torch_bp::bias_act_bwd: relu's mask must be uint8 with ceil(numel / 8) elements")
    else:
        bits, h = None, saved.contiguous()
    if n and c:
        _bias_act_bwd_kernel[_grid(n, c)](gy, h, bits, None if bias is None else bias.contiguous(), gz, gb_part, n, c,
                                          HAS_B=bias is not None, ACT=code, NEED_B=bool(bias_grad),
                                          BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C)
    gb = gb_part.sum(0).to(gy.dtype) if bias_grad else None
    return gz, gb


OPS = {"bias_act_fwd": bias_act_fwd, "bias_act_bwd": bias_act_bwd}
