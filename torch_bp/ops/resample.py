r"""Resampling: interpolate (every mode), pixel shuffle / unshuffle, channel shuffle, fold / unfold.

All of these are linear maps that copy or mix input elements into output positions, so each
backward is the adjoint map, a scatter-add of ``grad_y`` back to the sources:

- interpolate is separable: along each spatial dim d, output o is a weighted sum of a few
  inputs, ``y = x x_1 A_1 x_2 A_2 ...`` with a small (out_d, in_d) matrix ``A_d`` per dim (one 1
  per row for nearest, two weights for linear, four for cubic, a window average for area); the
  adjoint applies ``A_d^T`` along each dim: ``grad_x[i] = sum_o A_d[o, i] grad_y[o]``;
- a shuffle (pixel, channel) is a permutation; its adjoint is the inverse permutation (pixel
  unshuffle for pixel shuffle, channel shuffle with C/G groups for G groups);
- unfold (im2col) copies each input element into every window holding it; its adjoint fold
  (col2im) sums the copies back; fold's adjoint is unfold.

The forwards are torch's kernels; the backward rules are the adjoints above, linear in
``grad_y`` and built from differentiable ops, so they support double backward.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as TF

from ._rule import Rule
from ._util import opmath, own


# --- interpolate / Upsample / UpsamplingNearest2d / UpsamplingBilinear2d ---
class InterpolateOptions(NamedTuple):
    """The arguments of ``F.interpolate`` after the input (resolved in torch_bp.functional)."""
    size: int | tuple | None
    scale_factor: float | tuple | None
    mode: str
    align_corners: bool | None
    recompute_scale_factor: bool | None
    antialias: bool


_MODE_2D = {"nearest": "nearest", "nearest-exact": "nearest-exact", "linear": "bilinear", "bilinear": "bilinear",
            "trilinear": "bilinear", "bicubic": "bicubic", "area": "area"}


def interpolation_matrix(in_size: int, out_size: int, dim: int, o: InterpolateOptions, dtype, device) -> torch.Tensor:
    r"""``A_d`` (out_size, in_size): the 1-d weights of spatial dim ``dim`` as torch's kernel uses them.

    With ``scale = 1 / scale_factor`` when torch passes the user's scale factor to its kernel
    (given and recompute_scale_factor not True), else ``in / out``, output o reads source
    coordinate ``c = o scale`` (nearest: floor(c); nearest-exact: floor(c + scale / 2)),
    ``(o + 1/2) scale - 1/2`` (linear, cubic; clamped at 0 for linear), ``o (in - 1) / (out - 1)``
    with align_corners=True; linear weights ``1 - t, t`` at ``floor(c), floor(c) + 1``, cubic
    the four Keys weights (A = -0.75) at ``floor(c) - 1 ... + 2`` (indices clamped to the edge);
    area: the mean over [floor(o in / out), ceil((o + 1) in / out)); antialias widens the
    triangle / cubic filter by the scale when downsampling.

    NOTE: rather than restate those conventions (float32 index arithmetic, clamping, the
    antialias support), the matrix is read off torch's own kernel: A_d^T is the interpolation
    of the identity (in_size images of one row, 1 x in_size pixels) along the width, with the
    height 1 -> 1 (weight 1). So the adjoint is exactly that of the forward torch computed.
    (The identity goes along the width: torch's antialias kernel mixes the images of a
    width-1 input.)
    """
    eye = torch.eye(in_size, dtype=torch.float64, device=device).reshape(in_size, 1, 1, in_size)
    mode = _MODE_2D[o.mode]
    align = o.align_corners if mode in ("bilinear", "bicubic") else None
    if o.scale_factor is not None and not o.recompute_scale_factor and mode != "area":
        sf = o.scale_factor[dim] if isinstance(o.scale_factor, tuple) else o.scale_factor
        at = TF.interpolate(eye, scale_factor=(1.0, float(sf)), mode=mode, align_corners=align,
                            antialias=o.antialias)
    else:
        at = TF.interpolate(eye, size=(1, out_size), mode=mode, align_corners=align, antialias=o.antialias)
    return at.reshape(in_size, out_size).t().to(dtype)


class InterpolateFunction(Rule):
    r"""``F.interpolate`` in any mode: a separable linear map (see :func:`interpolation_matrix`).

    Forward:   y = x x_1 A_1 ... x_n A_n   (torch's kernel; n = 1, 2, 3 spatial dims)
    Backward:  grad_x = grad_y x_1 A_1^T ... x_n A_n^T, i.e. grad_x[i] = sum_o A_d[o, i] grad_y[o]
               along each dim: every output's gradient is scattered back to the inputs it read,
               with the weight it read them with (nearest: a plain scatter-add)
    Saved:     a one-element stand-in with x's shape (stride 0), for the sizes
    Double backward: yes (linear in grad_y, products with constant matrices)

    bfloat16/float16 gradients are accumulated in float32 and rounded once.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, opts: InterpolateOptions):
        return own(TF.interpolate(x, opts.size, opts.scale_factor, opts.mode, opts.align_corners,
                              opts.recompute_scale_factor, opts.antialias))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.opts = inputs
        ctx.save_for_backward(x.new_empty(()).expand(x.shape))

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        g = opmath(grad_y)
        nd = x.dim() - 2
        for d in range(nd):
            dim = 2 + d
            a = interpolation_matrix(x.shape[dim], g.shape[dim], d, ctx.opts, g.dtype, g.device)  # (out, in)
            g = g.movedim(dim, -1).matmul(a).movedim(-1, dim)
        return g.to(grad_y.dtype), None


# --- PixelShuffle / PixelUnshuffle ---
class PixelShuffleFunction(Rule):
    r"""Pixel shuffle by r (``unshuffle=False``) or pixel unshuffle by r (``unshuffle=True``).

    Forward:   shuffle: y[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w]; unshuffle: its inverse
    Backward:  a permutation's adjoint is its inverse: grad_x = unshuffle(grad_y) for shuffle,
               shuffle(grad_y) for unshuffle (this same rule, the other way)
    Saved:     nothing        Double backward: yes (the backward is this rule again)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, r, unshuffle):
        return torch.pixel_unshuffle(x, r) if unshuffle else torch.pixel_shuffle(x, r)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.r, ctx.unshuffle = inputs

    @staticmethod
    def backward(ctx, grad_y):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return PixelShuffleFunction.apply(grad_y, ctx.r, not ctx.unshuffle), None, None


# --- ChannelShuffle ---
class ChannelShuffleFunction(Rule):
    r"""Channel shuffle in G groups: channel ``g (C/G) + k`` moves to ``k G + g``.

    Forward:   y[:, k G + g] = x[:, g (C/G) + k]   (a transpose of the (G, C/G) channel grid)
    Backward:  the inverse permutation, a channel shuffle in C/G groups:
               grad_x = channel_shuffle(grad_y, C / G)
    Saved:     nothing        Double backward: yes (the backward is this rule again)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, groups):
        return torch.channel_shuffle(x, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.groups = inputs
        ctx.channels = x.shape[1]

    @staticmethod
    def backward(ctx, grad_y):
        if not ctx.needs_input_grad[0]:
            return None, None
        return ChannelShuffleFunction.apply(grad_y, ctx.channels // ctx.groups), None


# --- Fold / Unfold ---
class FoldOptions(NamedTuple):
    """Window geometry of fold/unfold (pairs, as torch's im2col/col2im)."""
    kernel_size: tuple
    dilation: tuple
    padding: tuple
    stride: tuple


class FoldFunction(Rule):
    r"""Unfold (im2col, ``fold=False``) and fold (col2im, ``fold=True``), each the other's adjoint.

    Forward:   unfold: y[n, c k_h k_w + j, l] = x[n, c, window(l)[j]] (zero where the window reads
               padding); fold: y[n, c, p] = sum over the (j, l) with window(l)[j] = p of x[n, c k_h k_w + j, l]
    Backward:  unfold: grad_x = fold(grad_y, output_size = x's spatial size): the copies sum back;
               fold:   grad_x = unfold(grad_y): each summand gets its sum's gradient
               (this same rule, the other way)
    Saved:     nothing but x's spatial size (ints)     Double backward: yes (the backward is this rule again)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, output_size, opts: FoldOptions, fold):
        if fold:
            return TF.fold(x, output_size, opts.kernel_size, opts.dilation, opts.padding, opts.stride)
        return TF.unfold(x, opts.kernel_size, opts.dilation, opts.padding, opts.stride)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, ctx.opts, ctx.fold = inputs
        ctx.in_size = tuple(x.shape[-2:])

    @staticmethod
    def backward(ctx, grad_y):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        if ctx.fold:
            return FoldFunction.apply(grad_y, None, ctx.opts, False), None, None, None
        return FoldFunction.apply(grad_y, ctx.in_size, ctx.opts, True), None, None, None
