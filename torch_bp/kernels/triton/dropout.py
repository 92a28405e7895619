r"""Triton kernels of :mod:`torch_bp.ops.dropout`: y = x m s and the 1-bit mask saved for backward.

The mask m is drawn by ``torch_bp.functional.dropout`` (as on CPU, so a seed gives the same
mask on every backend) and packed to 1 bit per element here (``activation.pack``); backward is
``mask_bwd`` (``activation.py``), shared with relu.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .activation import ELEM_BLOCK, pack


@triton.jit
def _dropout_fwd_kernel(X, M, S, Y, n, BLOCK: tl.constexpr):
    """DropoutFunction.forward (torch_bp/ops/dropout.py): y = x (m s), m in {0, 1}, s one value of
    x's dtype (a product, so NaN * 0 stays NaN, as the Python rule)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(X + offs, mask=m, other=0.0).to(tl.float32)
    keep = tl.load(M + offs, mask=m, other=0) != 0
    s = tl.load(S).to(tl.float32)
    tl.store(Y + offs, (x * tl.where(keep, s, 0.0)).to(Y.dtype.element_ty), mask=m)


def dropout_fwd(x, mask, scale):
    if mask.dtype != torch.bool or mask.shape != x.shape:
        raise RuntimeError("torch_bp::dropout_fwd: mask must be a bool tensor of x's shape")
    if scale.numel() != 1 or scale.dtype != x.dtype:
        raise RuntimeError("torch_bp::dropout_fwd: scale must be one value of x's dtype")
    xc, mc = x.contiguous(), mask.contiguous().view(torch.uint8)
    y = torch.empty_like(xc)
    if xc.numel():
        _dropout_fwd_kernel[(triton.cdiv(xc.numel(), ELEM_BLOCK),)](xc, mc, scale, y, xc.numel(), BLOCK=ELEM_BLOCK)
    return y


def pack_mask(mask):
    return pack(mask, 1)


OPS = {"dropout_fwd": dropout_fwd, "pack_mask": pack_mask}
