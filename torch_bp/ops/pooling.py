r"""Pooling: max (2-d window-local rule; 1-d/3-d, adaptive and fractional by torch's indices), max
unpooling, average and adaptive average (1-d, 2-d, 3-d).

Notation for one spatial dim: input size H, kernel k, stride s, padding p, dilation d;
output position o reads the window ``o s - p + j d`` for ``j < k``. Pooling acts on each
(batch, channel) plane separately; inputs are (N, C, *spatial) or unbatched (C, *spatial).

NOTE: the average poolings save their input x, although only its shape is needed (as torch's
own pooling backward does; x is usually saved by the layer before anyway): a shape kept on ctx
is not seen by torch.compile as an input of the backward graph and breaks it once dynamo
makes shapes dynamic. Max pooling saves a stand-in expanded to x's shape instead (a view of its indices).

The Python rules' forward passes are torch's own pooling kernels (forward primitives); the backward
rules are explicit: a scatter into the argmax for max pooling, a transposed convolution
with a kernel of ones for average pooling, two small matrix products for adaptive
average pooling. All three backward rules are linear in ``grad_y`` and built from
differentiable ops, so they support double backward. Max and average pooling also have
compiled kernels (csrc/cpu/pooling.cpp) that run the same rules, forward included.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as TF

from .. import backend
from ._util import opmath, own
from ._rule import Rule


# --- MaxPool2d ---
def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's output size of one pooled dim (the last window must start inside input or left padding)."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _window_index_dtype(kernel_size):
    return torch.uint8 if kernel_size[0] * kernel_size[1] <= 256 else torch.int32


def _window_corners(ho, wo, width, stride, padding, device):
    """(Ho, Wo): the flat index h * W + w of every output position's window corner (top left;
    negative inside the padding)."""
    oh = torch.arange(ho, device=device)[:, None] * stride[0] - padding[0]
    ow = torch.arange(wo, device=device) * stride[1] - padding[1]
    return oh * width + ow


def _window_offsets(width, kernel_size, dilation, device):
    """(kh * kw,): the flat offset of window element j = jh * kw + jw from the window's corner."""
    jh = torch.arange(kernel_size[0], device=device)[:, None] * (dilation[0] * width)
    jw = torch.arange(kernel_size[1], device=device) * dilation[1]
    return (jh + jw).reshape(-1)


def window_to_flat(idx, width, kernel_size, stride, padding, dilation):
    """Window-local argmax (row-major within the kernel) -> flat index h * W + w in the plane (int64)."""
    offsets = _window_offsets(width, kernel_size, dilation, idx.device)
    return _window_corners(idx.shape[-2], idx.shape[-1], width, stride, padding, idx.device) + offsets[idx.long()]


def _flat_to_window(flat, width, kernel_size, stride, padding, dilation):
    """The inverse of :func:`window_to_flat`, by a lookup table from the offset in the window."""
    offsets = _window_offsets(width, kernel_size, dilation, flat.device)
    dtype = _window_index_dtype(kernel_size)
    span = (kernel_size[0] - 1) * dilation[0] * width + (kernel_size[1] - 1) * dilation[1] + 1  # offsets[-1] + 1
    table = torch.zeros(span, dtype=dtype, device=flat.device)
    table[offsets] = torch.arange(offsets.numel(), device=flat.device).to(dtype)
    return table[flat - _window_corners(flat.shape[-2], flat.shape[-1], width, stride, padding, flat.device)]


class MaxPool2dFunction(Rule):
    r"""Max over each (dilated, padded) window.

    Forward:   y[o] = max_{j in window(o)} x[j],   idx[o] = argmax within the window (row-major:
               j = jh * kw + jw), uint8 (int32 for windows of more than 256 elements)
    Backward:  grad_x[window(o)[idx[o]]] += grad_y[o]   (overlapping windows add up)
    Saved:     idx (1 byte per output for windows of up to 256 elements) and a stand-in with x's
               shape (stride 0, a view of idx's first element), not x: a ReLU before the pool keeps
               only a mask, so x would otherwise be kept for its shape alone
    Double backward: yes (grad of the scatter is a gather)

    Ties: the gradient goes, whole, to the single element torch's CPU kernel picks: the first
    maximum in the window's scan order (row-major), and a NaN in the window wins (the last one
    in that order; the output is NaN). The Python rule takes torch's own indices; the compiled
    kernel (csrc/cpu/pooling.cpp) scans the same way. ``return_indices`` gives torch's flat
    indices (h * W + w), converted from idx by :func:`window_to_flat`.
    """

    compiled = ("max_pool2d_fwd", "max_pool2d_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, kernel_size, stride, padding, dilation, ceil_mode):
        if x.dim() in (3, 4) and x.numel() and x.is_contiguous() and backend.use_cpp(x) \
                and all(p <= k // 2 for p, k in zip(padding, kernel_size)) and min(stride + dilation) > 0:
            ho, wo = (pool_out_size(x.shape[-2 + i], kernel_size[i], stride[i], padding[i], dilation[i], ceil_mode)
                      for i in range(2))
            if ho > 0 and wo > 0:  # else torch's kernel raises its error below
                return torch.ops.torch_bp.max_pool2d_fwd(x, kernel_size, stride, padding, dilation, ho, wo)
        y, flat = torch._C._nn.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
        return y, _flat_to_window(flat, x.shape[-1], kernel_size, stride, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.k, ctx.s, ctx.p, ctx.d, _ = inputs
        _, idx = output
        ctx.mark_non_differentiable(idx)
        # the stand-in for x's shape is a view of idx's first element: no storage beyond torch's indices
        stand_in = idx.reshape(-1)[0] if idx.numel() else x.new_empty(())
        ctx.save_for_backward(idx, stand_in.expand(x.shape))

    @staticmethod
    def backward(ctx, grad_y, _grad_idx):
        idx, x = ctx.saved_tensors
        if backend.use_cpp(grad_y):  # csrc/cpu/pooling.cpp
            return torch.ops.torch_bp.max_pool2d_bwd(grad_y, idx, x.shape, ctx.k, ctx.s, ctx.p, ctx.d), \
                None, None, None, None, None
        shape = x.shape
        plane = shape[-2] * shape[-1]
        flat = window_to_flat(idx, shape[-1], ctx.k, ctx.s, ctx.p, ctx.d)
        g = opmath(grad_y).flatten(-2)  # (*, Ho*Wo)
        grad_x = g.new_zeros(shape[:-2] + (plane,)).scatter_add(-1, flat.flatten(-2), g)
        return grad_x.view(shape).to(grad_y.dtype), None, None, None, None, None


# --- AvgPool1d / AvgPool2d / AvgPool3d ---
def _avg_divisor(size, out, k, s, p, ceil_mode, count_include_pad, device):
    r"""Per output position of one dim, the number of window elements torch divides by.

    torch clips a window to [-p, H + p) (ceil_mode may let the last window stick out
    beyond it) for count_include_pad=True, and to [0, H) for count_include_pad=False. The
    nd divisor is the product of the dims' counts.
    """
    start = torch.arange(out, device=device) * s - p
    end = torch.minimum(start + k, torch.tensor(size + p, device=device))
    if count_include_pad:
        return end - start
    return torch.minimum(end, torch.tensor(size, device=device)) - start.clamp(min=0)


_AVG_POOL = {2: TF.avg_pool2d, 3: TF.avg_pool3d}
_CONV_T = {1: TF.conv_transpose1d, 2: TF.conv_transpose2d, 3: TF.conv_transpose3d}


def _repeat_windows(g: torch.Tensor, k) -> torch.Tensor:
    """Each of the trailing len(k) dims' positions o repeated k times (windows side by side): (.., O) -> (.., O k)."""
    nd = len(k)
    lead, out = g.shape[:g.dim() - nd], g.shape[g.dim() - nd:]
    spread = g.reshape(*lead, *[v for o in out for v in (o, 1)])
    return spread.expand(*lead, *[v for o, kk in zip(out, k) for v in (o, kk)]).reshape(
        *lead, *[o * kk for o, kk in zip(out, k)])


def _outer(vectors) -> torch.Tensor:
    """The product ``v_1[i_1] v_2[i_2] ...`` as an nd tensor (the separable divisor of nd pooling)."""
    nd = len(vectors)
    out = vectors[0].reshape((-1,) + (1,) * (nd - 1))
    for i, v in enumerate(vectors[1:], 1):
        out = out * v.reshape((1,) * i + (-1,) + (1,) * (nd - 1 - i))
    return out


def avg_pool_adjoint(g, shape, k, s, p, ceil_mode, count_include_pad, divisor_override):
    """grad_x of ``y = avg_pool(x)`` (x of ``shape``) for ``grad_y = g``: see :class:`AvgPoolFunction`."""
    nd = len(k)
    sizes, out = shape[-nd:], g.shape[-nd:]
    if divisor_override is not None:
        g = g / divisor_override
    else:
        g = g / _outer([_avg_divisor(sizes[i], out[i], k[i], s[i], p[i], ceil_mode, count_include_pad, g.device)
                        for i in range(nd)]).to(g.dtype)
    if tuple(s) == tuple(k):  # windows side by side: the transposed convolution repeats each value
        full = _repeat_windows(g, k)
    else:
        planes = g.reshape(-1, 1, *out)
        full = _CONV_T[nd](planes, planes.new_ones(1, 1, *k), stride=tuple(s))  # (P, 1, (o-1)s+k per dim)
        full = full.reshape(*g.shape[:-nd], *full.shape[2:])
    extra = [p[i] + sizes[i] - full.shape[full.dim() - nd + i] for i in range(nd)]
    if any(e > 0 for e in extra):
        full = TF.pad(full, [v for e in reversed(extra) for v in (0, max(e, 0))])
    for i in range(nd):
        full = full.narrow(full.dim() - nd + i, p[i], sizes[i])
    return full.reshape(shape)


class AvgPoolFunction(Rule):
    r"""Average over each padded window (1-d, 2-d, 3-d: nd = len(kernel_size)).

    Forward:   y[o] = (1 / D[o]) sum_{j in window(o)} x[j]      D: divisor (the product over dims of
               _avg_divisor, or divisor_override)
    Backward:  grad_x = crop(conv_transpose(grad_y / D, ones(k), stride=s))  on each plane
    Saved:     x, for its shape (as torch)    Double backward: yes (linear in grad_y)
    Compiled (csrc/cpu/pooling.cpp, 2-d only): the forward sums each window and divides by D; the backward
    spreads grad_y / D over each window (written directly when windows do not overlap)

    NOTE: conv_transpose with stride s and no padding spreads each ``grad_y[o] / D[o]``
    over its window in *padded* coordinates [o s, o s + k); it has (Ho - 1) s + k
    positions. Input position h sits at padded position h + p, so the crop is [p, p + H)
    (zero-extended when the forward's floor left trailing input positions no window read;
    ceil_mode windows reaching past H + p contribute only to the cropped-away part). With
    stride = kernel the windows sit side by side and the transposed convolution is a repeat of
    each value over its k x k block (an expand), which the rule takes instead.
    """

    compiled = ("avg_pool2d_fwd", "avg_pool2d_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        nd = len(kernel_size)
        if nd == 2 and x.dim() in (3, 4) and x.numel() and backend.use_cpp(x) and min(stride) > 0 \
                and all(p <= k // 2 for p, k in zip(padding, kernel_size)):
            ho, wo = (pool_out_size(x.shape[-2 + i], kernel_size[i], stride[i], padding[i], 1, ceil_mode)
                      for i in range(2))
            if ho > 0 and wo > 0:  # else torch's kernel raises its error below
                return own(torch.ops.torch_bp.avg_pool2d_fwd(x, kernel_size, stride, padding, count_include_pad,
                                                             divisor_override, ho, wo))
        if nd == 1:  # torch's avg_pool1d has no divisor_override
            return own(TF.avg_pool1d(x, kernel_size, stride, padding, ceil_mode, count_include_pad))
        return own(_AVG_POOL[nd](x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.k, ctx.s, ctx.p, ctx.ceil, ctx.count_pad, ctx.div = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        nd = len(ctx.k)
        if nd == 2 and backend.use_cpp(grad_y):  # csrc/cpu/pooling.cpp
            return torch.ops.torch_bp.avg_pool2d_bwd(grad_y, x.shape, ctx.k, ctx.s, ctx.p, ctx.count_pad, ctx.div), \
                None, None, None, None, None, None
        grad_x = avg_pool_adjoint(opmath(grad_y), x.shape, ctx.k, ctx.s, ctx.p, ctx.ceil, ctx.count_pad, ctx.div)
        return grad_x.to(grad_y.dtype), None, None, None, None, None, None


# --- AdaptiveAvgPool1d / AdaptiveAvgPool2d / AdaptiveAvgPool3d ---
def _adaptive_matrix(size, out, dtype, device):
    r"""A (out, size) with A[o, h] = 1 / (end_o - start_o) on the window of output o.

    torch's windows: start_o = floor(o H / Ho), end_o = ceil((o + 1) H / Ho).
    """
    o = torch.arange(out, device=device)
    start = torch.div(o * size, out, rounding_mode="floor")
    end = torch.div((o + 1) * size + out - 1, out, rounding_mode="floor")
    h = torch.arange(size, device=device)
    inside = (h[None, :] >= start[:, None]) & (h[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


# the ATen ops (torch's kernels and their errors; torch.nn.functional's 2-d/3-d wrappers add Python checks)
_ADAPTIVE_AVG = {1: torch.ops.aten.adaptive_avg_pool1d, 2: torch.ops.aten.adaptive_avg_pool2d,
                 3: torch.ops.aten.adaptive_avg_pool3d}


class AdaptiveAvgPoolFunction(Rule):
    r"""Average over windows that tile the input (they may overlap by one), 1-d, 2-d or 3-d.

    Forward:   y = x x_1 A_1 ... x_n A_n  on each plane   (A_d: see _adaptive_matrix; the windows are
               separable, so is the averaging)
    Backward:  grad_x = grad_y x_1 A_1^T ... x_n A_n^T   (2-d: A_h^T grad_y A_w)
               (outputs dividing the input sizes: grad_y / prod(k) repeated over each window)
    Saved:     x, for its shape (as torch)    Double backward: yes (linear in grad_y)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, output_size, nd):
        return own(_ADAPTIVE_AVG[nd](x, output_size))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, ctx.nd = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        nd = ctx.nd
        sizes, out = x.shape[-nd:], grad_y.shape[-nd:]
        if all(0 < o <= h and h % o == 0 for o, h in zip(out, sizes)):
            # NOTE: windows of k = H/Ho per dim side by side: the adjoint repeats grad_y / prod(k) over
            # each window (for an output of one position per plane, an expand: no copy here)
            k = [h // o for o, h in zip(out, sizes)]
            g = (opmath(grad_y) / math.prod(k)).to(grad_y.dtype)
            if all(o == 1 for o in out):
                return g.expand(x.shape), None, None
            return _repeat_windows(g, k).reshape(x.shape), None, None
        g = opmath(grad_y)
        for i in range(nd):
            dim = g.dim() - nd + i
            a = _adaptive_matrix(sizes[i], out[i], g.dtype, g.device)  # (Ho, H)
            g = g.movedim(dim, -1).matmul(a).movedim(-1, dim)
        return g.to(grad_y.dtype), None, None


# --- MaxPool1d / MaxPool3d / AdaptiveMaxPool1d-3d / FractionalMaxPool2d-3d ---
_MAX_WITH_INDICES = {
    "max_pool1d": TF.max_pool1d, "max_pool3d": TF.max_pool3d,
    "adaptive_max_pool1d": TF.adaptive_max_pool1d, "adaptive_max_pool2d": TF.adaptive_max_pool2d,
    "adaptive_max_pool3d": TF.adaptive_max_pool3d,
    "fractional_max_pool2d": TF.fractional_max_pool2d, "fractional_max_pool3d": TF.fractional_max_pool3d,
}


class MaxIndexPoolFunction(Rule):
    r"""Max pooling read off torch's indices: max_pool1d/3d, adaptive_max_pool1d/2d/3d and
    fractional_max_pool2d/3d (``kind``), over the last nd dims.

    Forward:   y[o] = x[idx[o]], idx[o] = torch's argmax of window o (flat index into the nd plane;
               fractional: windows placed by torch's random samples, drawn as torch draws them)
    Backward:  grad_x[idx[o]] += grad_y[o]   (a scatter-add; overlapping windows add up)
    Saved:     idx (int64, torch's) and a stand-in with x's shape (stride 0), a view of idx's first element
    Double backward: yes (the scatter-add is linear in grad_y; its adjoint is a gather)

    Ties and NaN: whatever torch's kernel picks (its index) gets the whole gradient, as torch.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, kind, nd, options):
        y, idx = _MAX_WITH_INDICES[kind](x, **dict(options), return_indices=True)
        return own(y), idx

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, ctx.nd, _ = inputs
        _, idx = output
        ctx.mark_non_differentiable(idx)
        # the stand-in for x's shape is a view of idx's first element: no storage beyond torch's indices
        stand_in = idx.reshape(-1)[0] if idx.numel() else x.new_empty(())
        ctx.save_for_backward(idx, stand_in.expand(x.shape))

    @staticmethod
    def backward(ctx, grad_y, _grad_idx):
        idx, x = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        nd, shape = ctx.nd, x.shape
        g = opmath(grad_y).flatten(-nd)
        grad_x = g.new_zeros(shape[:len(shape) - nd] + (math.prod(shape[len(shape) - nd:]),))
        grad_x = grad_x.scatter_add(-1, idx.flatten(-nd), g)
        return grad_x.view(shape).to(grad_y.dtype), None, None, None


# --- MaxUnpool1d / MaxUnpool2d / MaxUnpool3d ---
_MAX_UNPOOL = {1: TF.max_unpool1d, 2: TF.max_unpool2d, 3: TF.max_unpool3d}


class MaxUnpoolFunction(Rule):
    r"""Max unpooling: the values written back at the indices a max pooling returned (nd = 1, 2, 3).

    Forward:   y = 0 (output_size per plane),  y[idx[o]] = x[o]
    Backward:  grad_x[o] = grad_y[idx[o]]   (a gather: the adjoint of the scatter)
    Saved:     idx        Double backward: yes (the gather is linear in grad_y; its adjoint a scatter-add)

    Repeated indices (possible with overlapping windows): torch's forward keeps one of the written values;
    the gather gives every x[o] with that index the gradient there, as torch's own backward.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, indices, kernel_size, stride, padding, output_size):
        return own(_MAX_UNPOOL[len(kernel_size)](x, indices, kernel_size, stride, padding, output_size))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, indices, kernel_size, *_ = inputs
        ctx.nd = len(kernel_size)
        ctx.save_for_backward(indices)

    @staticmethod
    def backward(ctx, grad_y):
        (idx,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        nd = ctx.nd
        if idx.numel() == 0:  # an empty batch or plane: nothing to gather (torch returns an empty gradient)
            return grad_y.new_zeros(idx.shape), None, None, None, None, None
        # idx.view, as torch's backward: a non-contiguous indices tensor raises its RuntimeError
        grad_x = grad_y.flatten(-nd).gather(-1, idx.view(*idx.shape[:idx.dim() - nd], -1)).view(idx.shape)
        return grad_x, None, None, None, None, None


# --- LPPool1d / LPPool2d / LPPool3d ---
def _avg_pool(x, k, s, ceil_mode):
    return TF.avg_pool1d(x, k, s, 0, ceil_mode) if len(k) == 1 else _AVG_POOL[len(k)](x, k, s, 0, ceil_mode)


class LPPoolFunction(Rule):
    r"""Power-average pooling, as torch composes it (nd = len(kernel_size), no padding, K = prod(k)).

    Forward:   a = avg_pool(x^p),  y = (K a)^(1/p)     (torch's ``sign(a) relu(|a|)`` in place of a: equal to
               a wherever it matters below; computed in torch's order and dtype, so y is torch's)
    Backward:  grad_a = grad_y (K / p) y^(1 - p)  where a != 0 (i.e. y != 0), else 0   (torch: relu's
               gradient at 0 is 0, which masks the infinite slope of the root at 0)
               grad_x = p x^(p - 1) avg_pool^T(grad_a)        (avg_pool^T: :func:`avg_pool_adjoint`)
    Saved:     x, y        Double backward: yes (plain ops of x and the output y)

    A negative window sum (odd p) gives y = NaN and a NaN gradient, as torch.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, norm_type, kernel_size, stride, ceil_mode):
        a = _avg_pool(x.pow(norm_type), kernel_size, stride, ceil_mode)
        return (torch.sign(a) * torch.relu(torch.abs(a))).mul(math.prod(kernel_size)).pow(1.0 / norm_type)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.p, ctx.k, ctx.s, ctx.ceil = inputs
        ctx.save_for_backward(x, output)

    @staticmethod
    def backward(ctx, grad_y):
        x, y = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        p, k = ctx.p, ctx.k
        x32, y32, g = opmath(x), opmath(y), opmath(grad_y)
        grad_a = torch.where(y32 != 0, g * (math.prod(k) / p) * y32.pow(1 - p), torch.zeros_like(g))
        grad_pow = avg_pool_adjoint(grad_a, x.shape, k, ctx.s, (0,) * len(k), ctx.ceil, True, None)
        grad_x = grad_pow * p * x32.pow(p - 1) if p != 1 else grad_pow
        return grad_x.to(grad_y.dtype), None, None, None, None
