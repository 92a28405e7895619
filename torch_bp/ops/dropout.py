r"""Dropout: zero each element with probability p, scale the survivors by 1 / (1 - p).

The mask is drawn by ``torch_bp.functional.dropout`` (the same draw as torch's CPU kernel,
so the same seed gives the same mask) and handed to the rule, which keeps it as one bit per
element for backward (torch keeps a mask of x's dtype, or a bool).

Channel dropout (dropout1d/2d/3d, feature_alpha_dropout) draws one mask bit per channel,
shape (N, C, 1, ...), broadcast over x by the same rules; the saved mask is that small one.
"""
from __future__ import annotations

import functools
import math

import torch

from .. import backend
from . import _lean
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
    Lean:      when x = f(h) has a recompute recipe (a GELU output: ops/_lean.py), records
               y = f(h) * m * s as one too, with the saved bits and s as its deps: the linear after
               an MLP's dropout saves h (kept by the activation) instead of y

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
            lean = _lean.recipe(x) if ctx.packed or ctx.bits else None
            if lean is not None:  # y = f(h) * m * s: h kept by the rule that recorded x's recipe, m, s here
                _lean.record(output, lean[0], functools.partial(_dropout_again, lean[1], mask, ctx.mask_shape, scale),
                             *_lean.deps(x), mask, scale)

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


def _dropout_again(f, bits, mask_shape, scale, h):
    """y = dropout(f(h)) once more with the forward's mask (``bits``: its 1-bit packing) and scale (a
    lean rule's recompute recipe): the forward's product of the same values, so y is bit-identical
    (the compiled and the Python forward compute the same x * (m * s) per element); through the
    rule under create_graph."""
    x, mask = f(h), unpack_bits(bits, mask_shape)
    if torch.is_grad_enabled():
        return DropoutFunction.apply(x, mask, scale)
    return DropoutFunction.forward(x, mask, scale)


# --- AlphaDropout / FeatureAlphaDropout ---
_SELU_ALPHA_PRIME = 1.7580993408473766  # -selu's negative saturation value (torch's alpha)


class AlphaDropoutFunction(Rule):
    r"""Alpha dropout (keeps a SELU network's mean and variance): dropped elements are set to the
    negative saturation value -alpha' and an affine map restores the statistics.

    With a = 1 / sqrt((alpha'^2 p + 1)(1 - p)), m in {0, 1} (elementwise, or per channel for
    feature alpha dropout, broadcast):
    Forward:   y = x * (m a) + b,   b = (m - 1) alpha' a + alpha' a p
    Backward:  grad_x = grad_y * m * a     (b is a constant: the same backward as Dropout's,
               with scale a, so :class:`DropoutFunction`'s saving and backward are reused)
    Saved:     m as 1 bit per element, a (0-d, x's dtype)
    Identity (mask None) and p = 1 (x * 0): as :class:`DropoutFunction`, as torch.
    Double backward: yes (linear in grad_y)
    NOTE: the forward repeats torch's ops in x's dtype (noise - 1, * alpha' a, + alpha' a p;
    noise * a; x * noise + b), so output and gradient equal torch's bit for bit.
    """

    compiled = ("pack_mask", "mask_bwd")  # csrc/cpu, through DropoutFunction's saving and backward

    generate_vmap_rule = True

    @staticmethod
    def forward(x, mask, scale, p):
        if mask is None or p == 1:  # the identity, and x * 0 (p = 1), as torch: :class:`DropoutFunction`'s
            return DropoutFunction.forward(x, mask, scale)
        a = 1.0 / math.sqrt((_SELU_ALPHA_PRIME ** 2 * p + 1) * (1 - p))
        noise = mask.to(x.dtype)
        b = noise.add(-1).mul_(_SELU_ALPHA_PRIME * a).add_(_SELU_ALPHA_PRIME * a * p)
        return (x * noise.mul_(a)).add_(b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        DropoutFunction.setup_context(ctx, inputs[:3], output)

    @staticmethod
    def backward(ctx, grad_y):
        return DropoutFunction.backward(ctx, grad_y) + (None,)
