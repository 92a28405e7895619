r"""Dropout: zero each element with probability p, scale the survivors by 1 / (1 - p).

The mask is drawn by ``torch_bp.functional.dropout`` (the same draw as torch's CPU kernel,
so the same seed gives the same mask) and handed to the rule, which keeps it as one bit per
element for backward (torch keeps a mask of x's dtype, or a bool).
"""
from __future__ import annotations

import torch

from .. import backend
from ._util import pack_bits, plain_eager, unpack_bits
from ._rule import Rule


# --- Dropout ---
class DropoutFunction(Rule):
    r"""Forward:   y = x * m * s          m in {0, 1} (bool mask), s = 1 / (1 - p) (0-d, x's dtype)
    Backward:  grad_x = grad_y * m * s
    Identity (mask None: eval mode, p = 0, empty input): y = copy of x, grad_x = grad_y.
    Saved:     m as 1 bit per element (uint8 bytes; the compiled pack_mask, or the same layout
               by ops._util.pack_bits), s. Inside torch.compile / torch.func: m as bool.
    Double backward: yes (linear in grad_y; m and s are constants)

    NOTE: ``m * s`` is rebuilt in x's dtype exactly as torch's ``noise`` (s is computed by the
    same ``div_`` torch uses), so the output and the gradient equal torch's bit for bit.
    NOTE: the identity returns a copy: an input returned as-is would come out as a view, which
    autograd forbids to modify in place (``y = dropout(x); y += r`` must keep working). The
    functional returns the input itself, as torch, when no gradient is recorded.
    """

    compiled = ("dropout_fwd", "pack_mask", "mask_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, mask, scale):
        if mask is None:
            return x.clone()
        if mask.shape == x.shape and backend.use_cpp(x, scale, op="dropout_fwd"):  # the same rule, fused (csrc/cpu/dropout.cpp)
            return torch.ops.torch_bp.dropout_fwd(x, mask, scale)
        return x * (mask * scale)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, mask, scale = inputs
        ctx.identity = mask is None
        if not ctx.identity:
            x = inputs[0]
            ctx.packed = mask.shape == x.shape and backend.use_cpp(x, scale, op="pack_mask")  # m as 1 bit per element
            ctx.bits = not ctx.packed and plain_eager()                       # the same, in Python
            ctx.mask_shape = mask.shape
            if ctx.packed:
                mask = torch.ops.torch_bp.pack_mask(mask)
            elif ctx.bits:
                mask = pack_bits(mask)
            ctx.save_for_backward(mask, scale)

    @staticmethod
    def backward(ctx, grad_y):
        if ctx.identity:
            return grad_y, None, None
        mask, scale = ctx.saved_tensors
        if ctx.packed:  # mask is the bit mask (csrc/cpu/dropout.cpp)
            return torch.ops.torch_bp.mask_bwd(grad_y, mask, scale), None, None
        if ctx.bits:
            mask = unpack_bits(mask, ctx.mask_shape)
        return grad_y * (mask * scale), None, None
