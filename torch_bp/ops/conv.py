r"""Convolutions (1d/2d/3d) and transposed convolutions (1d/2d/3d), with backward rules written as forward convolutions.

Notation for one spatial dim (the rules apply per dim): input size ``H``, kernel ``k``,
stride ``s``, padding ``p`` (both sides), dilation ``d``, output size
``Ho = floor((H + 2p - d(k-1) - 1) / s) + 1``. With ``G`` groups, input channel block ``g``
talks only to output channel block ``g``. A convolution is a cross-correlation:

    y[n, o, i] = b[o] + sum_{c in group(o), j < k} w[o, c, j] x[n, c, i s - p + j d]

Both gradients are again correlations of the same four numbers (s, p, d, k), with roles swapped:

- the input gradient is the *adjoint* of the conv, i.e. a transposed convolution of
  ``grad_y`` with the same weight: ``grad_x = conv_transpose(grad_y, w, s, p, output_padding, G, d)``;
- the weight gradient correlates the input with ``grad_y``: exchanging the roles of the
  batch dim and the channel dim turns it into an ordinary convolution whose "kernel" is
  ``grad_y`` and whose stride and dilation are swapped (see :func:`_weight_grad`). The compiled
  backend computes the same sum faster as an im2col + matmul over cache-sized blocks
  (``torch_bp::conv_weight_grad``, csrc/cpu/conv.cpp, any stride); the Python rule, for stride 1,
  as one matmul per kernel tap (:func:`_weight_grad_taps`, conv1d and large 2d planes).

A transposed convolution is the adjoint of a convolution, so its rules are the same two
helpers with input and output exchanged (on the compiled backend, one call of torch's convolution
backward primitive computes all three gradients: ``torch_bp::conv_transpose_backward``).

Both backward rules are built from differentiable convolutions of saved inputs, so they
support double backward.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as TF

from .. import backend
from . import _lean
from ._rule import Rule
from ._util import own, summed_per_sample
from .padding import unpad

_CONV = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}
_CONV_T = {1: TF.conv_transpose1d, 2: TF.conv_transpose2d, 3: TF.conv_transpose3d}


def _narrow_to(t: torch.Tensor, sizes) -> torch.Tensor:
    """Crop the trailing len(sizes) dims of ``t`` to ``sizes`` (from the start)."""
    nd = len(sizes)
    for i, size in enumerate(sizes):
        dim = t.dim() - nd + i
        if t.shape[dim] != size:
            t = t.narrow(dim, 0, size)
    return t


def _input_grad(grad_y, weight, in_sizes, stride, padding, dilation, groups):
    r"""grad_x of ``y = conv(x, w)``: the transposed convolution of ``grad_y`` with ``w``.

    NOTE (size bookkeeping): conv_transpose maps Ho positions to
    ``(Ho - 1) s - 2p + d(k-1) + 1 + output_padding`` positions. The forward floor()
    dropped the last ``r = (H + 2p - d(k-1) - 1) mod s`` input positions (and right padding)
    that no window reached; ``output_padding = r`` (always < s) appends them back, with a
    zero gradient, so the result has exactly H positions.
    """
    nd = len(in_sizes)
    k = weight.shape[2:]
    out_pad = tuple(
        in_sizes[i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1 - (grad_y.shape[2 + i] - 1) * stride[i]
        for i in range(nd))
    return _CONV_T[nd](grad_y, weight, None, stride, padding, out_pad, groups, dilation)


def _weight_grad(x, grad_y, k, stride, padding, dilation, groups):
    r"""grad_w of ``y = conv(x, w)``: ``sum_{n, i} grad_y[n, o, i] x[n, c, i s - p + j d]``.

    Returns shape (O, C/G, *k), with O = grad_y.shape[1], C = x.shape[1].

    NOTE (the swap): read the sum as a convolution in which the *channels* c of x are
    the batch, the *batch* n of x are the input channels, and grad_y (O out-channels,
    N in-channels, "kernel" of size Ho) is the weight. Output position j reads
    ``x[i s + j d - p]`` for kernel tap i: stride and dilation exchange roles. Its output
    has ``floor((H + 2p - s(Ho-1) - 1)/d) + 1 >= k`` positions (the forward's floor may
    leave room for more); the first k are the taps. With G groups, x is laid out as
    (C/G, G*N, H) so that channel block g of the new conv sees exactly the batch copies
    of input block g, and grad_y (G*O/G, N, Ho) is its grouped weight.

    The swapped convolution has a kernel as large as the output image, which oneDNN runs slowly.
    The compiled backend's ``conv_weight_grad`` computes the same sum as im2col + matmul over
    blocks of output rows (float32/float64/bfloat16, not differentiable: the double backward
    runs this Python rule), for every stride; ``python -m experiments.benchmarks.probes conv``
    measures it against the swapped convolution. Without it, stride 1 uses
    :func:`_weight_grad_taps` under the conditions below.
    Both are written for 1-d and 2-d kernels; a 3-d kernel always takes the swapped convolution.
    """
    nd = len(k)
    n, c = x.shape[:2]
    o = grad_y.shape[1]
    if n == 0:
        return x.new_zeros((o, c // groups) + tuple(k))
    if nd <= 2 and backend.use_cpp(x, grad_y):
        # the same sum as an im2col + matmul over cache-sized blocks (csrc/cpu/conv.cpp)
        return torch.ops.torch_bp.conv_weight_grad(x, grad_y, list(k), list(stride), list(padding),
                                                   list(dilation), groups)
    if nd <= 2 and all(v == 1 for v in stride):
        if groups <= _TAP_MATMUL_MAX_GROUPS and (nd == 1 or math.prod(grad_y.shape[2:]) >= _TAP_MATMUL_MIN_PLANE):
            return _weight_grad_taps(x, grad_y, k, padding, dilation, groups)
    cg = c // groups
    xs = x.reshape((n, groups, cg) + x.shape[2:]).transpose(0, 2).reshape((cg, groups * n) + x.shape[2:])
    gw = grad_y.transpose(0, 1)  # (O, N, *Ho): O = G blocks of O/G
    out = _CONV[nd](xs, gw, None, dilation, padding, stride, groups)  # (C/G, O, *>=k)
    return _narrow_to(out, k).transpose(0, 1)


# The Python rule's choice for stride 1: one matmul per tap (_weight_grad_taps) for conv1d and for
# 2d output planes of at least _TAP_MATMUL_MIN_PLANE positions with few groups, where it runs faster
# than the swapped convolution (``probes conv``); small planes and many groups make it many small matmuls.
_TAP_MATMUL_MAX_GROUPS = 4
_TAP_MATMUL_MIN_PLANE = 1024  # 2d output positions per image


def _weight_grad_taps(x, grad_y, k, padding, dilation, groups):
    r"""grad_w of a stride-1 ``y = conv(x, w)`` as one batched matmul per kernel tap (and group).

    For tap j, ``grad_w[:, :, j] = sum_n grad_y[n] (O, L) @ xp[n, :, window j]^T`` where xp is x
    zero-padded by p. NOTE (flat windows): with stride 1 the window of tap j is xp shifted by
    ``j d``; in 2d, rows of xp are Wp = W + 2p wide, so grad_y is zero-padded to width Wp too
    (Ho rows of Wp) and flattened: then the window of tap (i, j) is the flat range of xp starting
    at ``i dh Wp + j dw``, a view with no copy (one zero row is added at the bottom of xp so that
    the last windows stay inside). The extra grad_y columns are zero, so the positions a window
    wraps into contribute nothing.
    """
    nd = len(k)
    n, c = x.shape[:2]
    o = grad_y.shape[1]
    cg, og = c // groups, o // groups
    if nd == 1:
        xp = TF.pad(x, (padding[0], padding[0]))
        gy = grad_y                                              # (N, O, L)
        offsets = [j * dilation[0] for j in range(k[0])]
    else:
        wp = x.shape[3] + 2 * padding[1]
        xp = TF.pad(x, (padding[1], padding[1], padding[0], padding[0] + 1)).flatten(2)
        gy = TF.pad(grad_y, (0, wp - grad_y.shape[3])).flatten(2)  # (N, O, Ho * Wp)
        offsets = [i * dilation[0] * wp + j * dilation[1] for i in range(k[0]) for j in range(k[1])]
    m = gy.shape[2]
    gyt = gy.transpose(1, 2)                                     # (N, M, O)
    per_group = []
    for g in range(groups):
        xg, gg = xp[:, g * cg:(g + 1) * cg], gyt[:, :, g * og:(g + 1) * og]
        taps = [torch.bmm(xg.narrow(2, off, m), gg).sum(0) for off in offsets]  # each (C/G, O/G)
        per_group.append(torch.stack(taps, -1))                  # (C/G, O/G, taps)
    out = torch.cat(per_group, 1).transpose(0, 1)                # (O, C/G, taps)
    return out.reshape((o, cg) + tuple(k))


def _per_example_weight_grad(xp, grad_y, k, stride, padding, dilation, groups):
    r"""Per-example weight gradients of ``y = conv(xp, w)``, shape (N, O, C/G, *k):

        grad_w[n, o, c, j] = sum_i grad_y[n, o, i] xp[n, c, i s - p + j d]

    NOTE: the windows ``xp[n, c, i s + j d]`` (after zero padding by p) are a strided view
    of xp, shape (N, C, *k, *Ho), with no copy; one batched contraction over the Ho
    positions per (example, group) then gives all per-example gradients at the cost of the
    ordinary weight gradient.
    """
    nd = len(k)
    if any(padding):
        xp = TF.pad(xp, [v for p in reversed(padding) for v in (p, p)])
    n, c = xp.shape[:2]
    o, ho = grad_y.shape[1], grad_y.shape[2:]
    st = xp.stride()
    windows = xp.as_strided((n, c) + tuple(k) + tuple(ho),
                            st[:2] + tuple(dilation[i] * st[2 + i] for i in range(nd))
                            + tuple(stride[i] * st[2 + i] for i in range(nd)))
    taps, positions = math.prod(k), math.prod(ho)
    windows = windows.reshape(n, groups, c // groups, taps, positions)  # (N, G, C/G, K, L)
    gy = grad_y.reshape(n, groups, o // groups, positions)             # (N, G, O/G, L)
    return torch.einsum("ngol,ngckl->ngock", gy, windows).reshape((n, o, c // groups) + tuple(k))


def _pad(x, pad, mode):
    """Pad the trailing spatial dims of x by pad = ((lo, hi), ...) in torch's ``mode``."""
    flat = [v for lo_hi in reversed(pad) for v in lo_hi]  # F.pad order: last dim first
    if mode == "zeros":
        return TF.pad(x, flat)
    return TF.pad(x, flat, mode=mode)


# --- Conv1d / Conv2d / Conv3d ---
class ConvOptions(NamedTuple):
    """Resolved options of a convolution (one entry per spatial dim).

    ``padding`` goes to the convolution itself (the same on both sides); ``pad`` is an
    explicit extra padding ((lo, hi) per dim) applied first in ``padding_mode``: the
    asymmetric remainder of ``padding='same'``, or the whole padding of a module with
    ``padding_mode`` reflect/replicate/circular. ``pad`` is None when there is none.
    """
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    pad: tuple | None = None
    padding_mode: str = "zeros"


class ConvFunction(Rule):
    r"""N-d convolution (N = 1, 2, 3), optionally after an explicit padding.

    Forward:   xp = pad(x)  (only if opts.pad),   y = conv(xp, w, s, p, d, G) + b
    Backward:  grad_xp = conv_transpose(grad_y, w, s, p, output_padding=r, G, d)
               grad_x  = pad^T(grad_xp)   (crop for zeros; index_add of the copies otherwise: ops/padding.py)
               grad_w  = conv(xp^{C<->N}, grad_y^{O<->N}, stride=d, padding=p, dilation=s, G)[..., :k]
                         (stride 1: one matmul per tap, or the compiled im2col + matmul; see _weight_grad)
               grad_b  = sum of grad_y over batch and space
    Saved:     x, w (xp is recomputed from x in backward, so the rule stays differentiable)
               Lean: when x = f(h) has a recompute recipe (x = relu(batch_norm(h)) or batch_norm(h),
               ops/_lean.py), h (which the batch norm keeps anyway) and the recipe's small deps are
               saved instead of x, and x = f(h) is recomputed (bit-identical) in the backward; not
               under torch.compile tracing or torch.func transforms
    Double backward: yes (the backward is made of convolutions of saved inputs)

    Per example n:  grad_w[n] = the same correlation over example n only (:func:`_per_example_weight_grad`),
               grad_b[n] = sum of grad_y[n] over space; the batch is dim 0 (unbatched input: none).
               The ordinary grad_w is then their sum (``grad_from_per_sample``).

    NOTE: see :func:`_input_grad` for ``output_padding`` (the floor in Ho) and
    :func:`_weight_grad` for the stride/dilation swap. Unbatched inputs (C, *H) are handled
    here with a batch dim of one, so the output still carries this node.
    """

    compiled = ("conv_weight_grad",)  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, opts: ConvOptions):
        nd = weight.dim() - 2
        unbatched = x.dim() == nd + 1
        xb = x.unsqueeze(0) if unbatched else x
        if opts.pad is not None:
            xb = _pad(xb, opts.pad, opts.padding_mode)
        y = _CONV[nd](xb, weight, bias, opts.stride, opts.padding, opts.dilation, opts.groups)
        return own(y.squeeze(0) if unbatched else y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, ctx.opts = inputs
        ctx.has_bias = bias is not None
        lean = _lean.recipe(x)
        ctx.recompute_x = None if lean is None else lean[1]
        if lean is None:
            ctx.save_for_backward(x, weight)
        else:  # the recipe's deps are saved too, so that an in-place change of them is caught in backward
            ctx.save_for_backward(lean[0], weight, *_lean.deps(x))

    @staticmethod
    def _saved(ctx):
        """(x, w), recomputing x from the tensor saved in its place (see Lean)."""
        x, weight = ctx.saved_tensors[:2]
        if ctx.recompute_x is not None:
            x = ctx.recompute_x(x)
        return x, weight

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ConvFunction._saved(ctx)
        o = ctx.opts
        nd = weight.dim() - 2
        unbatched = x.dim() == nd + 1
        xb = x.unsqueeze(0) if unbatched else x
        gy = grad_y.unsqueeze(0) if unbatched else grad_y
        xp = xb if o.pad is None else _pad(xb, o.pad, o.padding_mode)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(gy, weight, xp.shape[2:], o.stride, o.padding, o.dilation, o.groups)
            if o.pad is not None:
                grad_x = unpad(grad_x, xb.shape[2:], o.pad, o.padding_mode)
            if unbatched:
                grad_x = grad_x.squeeze(0)
        if ctx.needs_input_grad[1]:
            grad_w = summed_per_sample(ctx, 1)   # in a per_sample_grads block: the batch sum of grad_w[n]
        if ctx.needs_input_grad[1] and grad_w is None:
            grad_w = _weight_grad(xp, gy, weight.shape[2:], o.stride, o.padding, o.dilation, o.groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = gy.sum([0] + list(range(2, gy.dim())))
        return grad_x, grad_w, grad_b, None

    grad_from_per_sample = (1,)

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, out=None):
        x, weight = ConvFunction._saved(ctx)
        o = ctx.opts
        if x.dim() == weight.dim() - 1:
            raise ValueError("per-sample gradients: an unbatched convolution input has no batch dim")
        xp = x if o.pad is None else _pad(x, o.pad, o.padding_mode)
        res = {}
        if ctx.needs_input_grad[1]:
            res[1] = _per_example_weight_grad(xp, grad_y, weight.shape[2:], o.stride, o.padding, o.dilation, o.groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            res[2] = grad_y.sum(list(range(2, grad_y.dim())))
        return res


# --- ConvTranspose1d / ConvTranspose2d / ConvTranspose3d ---
class ConvTransposeOptions(NamedTuple):
    """Resolved options of a transposed convolution (one entry per spatial dim)."""
    stride: tuple
    padding: tuple
    output_padding: tuple
    groups: int
    dilation: tuple


class ConvTransposeFunction(Rule):
    r"""N-d transposed convolution (N = 1, 2, 3): the adjoint of ``conv`` (plus a bias).

    Forward:   y = conv_transpose(x, w, s, p, output_padding, G, d) + b
               w: (C_in, C_out/G, *k); y has (H-1)s - 2p + d(k-1) + 1 + output_padding positions
    Backward:  grad_x = conv(grad_y, w, s, p, d, G)[..., :H]
               grad_w = the conv weight gradient with grad_y as the conv's input and x as
                        its output gradient (shape (C_in, C_out/G, *k), as w)
               grad_b = sum of grad_y over batch and space
    Saved:     x, w (Lean: as :class:`ConvFunction`, h in place of x = f(h))      Double backward: yes
    Per example n:  grad_w[n], grad_b[n] = the same over example n only (the ordinary grad_w is their sum)

    Compiled backend: the three sums in one call of torch's convolution backward primitive
    (``torch_bp::conv_transpose_backward``, csrc/cpu/conv.cpp; on CPU oneDNN's deconvolution backward,
    faster here than the weight gradient as im2col + matmul or as stride-1 weight gradients of the
    stride phases: ``python -m experiments.benchmarks.probes conv``), not differentiable: under
    ``create_graph`` the formulas above run.

    NOTE: conv(grad_y) has ``H + floor(output_padding / s)`` positions: output_padding can
    reach ``max(s, d) - 1``, so when d > s it may append whole strides that no input
    position produced; those trailing positions are cropped (they correspond to no x).
    """

    compiled = ("conv_transpose_backward",)  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, opts: ConvTransposeOptions):
        nd = weight.dim() - 2
        return own(_CONV_T[nd](x, weight, bias, opts.stride, opts.padding, opts.output_padding, opts.groups,
                               opts.dilation))

    setup_context = staticmethod(ConvFunction.setup_context)  # the same saved tensors (x or its recipe, w)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ConvFunction._saved(ctx)
        o = ctx.opts
        nd = weight.dim() - 2
        unbatched = x.dim() == nd + 1
        xb = x.unsqueeze(0) if unbatched else x
        gy = grad_y.unsqueeze(0) if unbatched else grad_y
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_w = summed_per_sample(ctx, 1)   # in a per_sample_grads block: the batch sum of grad_w[n]
        if backend.use_cpp(xb, gy, weight):
            # the same three sums in one call of torch's convolution backward primitive (csrc/cpu/conv.cpp)
            mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and grad_w is None,
                    ctx.has_bias and ctx.needs_input_grad[2]]
            if any(mask):
                grad_x, gw, grad_b = torch.ops.torch_bp.conv_transpose_backward(
                    gy, xb, weight, list(o.stride), list(o.padding), list(o.output_padding), list(o.dilation),
                    o.groups, mask)
                grad_w = gw if mask[1] else grad_w
                if grad_x is not None and unbatched:
                    grad_x = grad_x.squeeze(0)
            return grad_x, grad_w, grad_b, None
        if ctx.needs_input_grad[0]:
            grad_x = _CONV[nd](gy, weight, None, o.stride, o.padding, o.dilation, o.groups)
            grad_x = _narrow_to(grad_x, xb.shape[2:])
            if unbatched:
                grad_x = grad_x.squeeze(0)
        if ctx.needs_input_grad[1] and grad_w is None:
            # y = conv_transpose(x, w)  <=>  x is the output gradient of conv(y-shaped input, w)
            grad_w = _weight_grad(gy, xb, weight.shape[2:], o.stride, o.padding, o.dilation, o.groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = gy.sum([0] + list(range(2, gy.dim())))
        return grad_x, grad_w, grad_b, None

    grad_from_per_sample = (1,)

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, out=None):
        x, weight = ConvFunction._saved(ctx)
        o = ctx.opts
        if x.dim() == weight.dim() - 1:
            raise ValueError("per-sample gradients: an unbatched convolution input has no batch dim")
        res = {}
        if ctx.needs_input_grad[1]:
            res[1] = _per_example_weight_grad(grad_y, x, weight.shape[2:], o.stride, o.padding, o.dilation, o.groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            res[2] = grad_y.sum(list(range(2, grad_y.dim())))
        return res
