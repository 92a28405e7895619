r"""2-d pooling: max, average and adaptive average.

Notation for one spatial dim: input size H, kernel k, stride s, padding p, dilation d;
output position o reads the window ``o s - p + j d`` for ``j < k``. Pooling acts on each
(batch, channel) plane separately; inputs are (N, C, H, W) or unbatched (C, H, W).

NOTE: the average poolings save their input x, although only its shape is needed (as torch's
own pooling backward does; x is usually saved by the layer before anyway): a shape kept on ctx
is not seen by torch.compile as an input of the backward graph and breaks it once dynamo
makes shapes dynamic. Max pooling saves a one-element stand-in expanded to x's shape instead.

The Python rules' forward passes are torch's own pooling kernels (forward primitives); the backward
rules are explicit: a scatter into the argmax for max pooling, a transposed convolution
with a kernel of ones for average pooling, two small matrix products for adaptive
average pooling. All three backward rules are linear in ``grad_y`` and built from
differentiable ops, so they support double backward. Max and average pooling also have
compiled kernels (csrc/cpu/pooling.cpp) that run the same rules, forward included.
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF

from .. import backend
from ._util import opmath
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
    Saved:     idx (1 byte per output for windows of up to 256 elements) and a one-element stand-in
               with x's shape (stride 0), not x: a ReLU before the pool keeps only a mask, so x
               would otherwise be kept for its shape alone
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
        ctx.save_for_backward(idx, x.new_empty(()).expand(x.shape))

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


# --- AvgPool2d ---
def _avg_divisor(size, out, k, s, p, ceil_mode, count_include_pad, device):
    r"""Per output position of one dim, the number of window elements torch divides by.

    torch clips a window to [-p, H + p) (ceil_mode may let the last window stick out
    beyond it) for count_include_pad=True, and to [0, H) for count_include_pad=False. The
    2-d divisor is the product of the two dims' counts.
    """
    start = torch.arange(out, device=device) * s - p
    end = torch.minimum(start + k, torch.tensor(size + p, device=device))
    if count_include_pad:
        return end - start
    return torch.minimum(end, torch.tensor(size, device=device)) - start.clamp(min=0)


class AvgPool2dFunction(Rule):
    r"""Average over each padded window.

    Forward:   y[o] = (1 / D[o]) sum_{j in window(o)} x[j]      D: divisor (see _avg_divisor,
               or divisor_override)
    Backward:  grad_x = crop(conv_transpose(grad_y / D, ones(k), stride=s))  on each plane
    Saved:     x, for its shape (as torch)    Double backward: yes (linear in grad_y)
    Compiled (csrc/cpu/pooling.cpp): the forward sums each window and divides by D; the backward
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
        if x.dim() in (3, 4) and x.numel() and backend.use_cpp(x) and min(stride) > 0 \
                and all(p <= k // 2 for p, k in zip(padding, kernel_size)):
            ho, wo = (pool_out_size(x.shape[-2 + i], kernel_size[i], stride[i], padding[i], 1, ceil_mode)
                      for i in range(2))
            if ho > 0 and wo > 0:  # else torch's kernel raises its error below
                return torch.ops.torch_bp.avg_pool2d_fwd(x, kernel_size, stride, padding, count_include_pad,
                                                         divisor_override, ho, wo)
        return torch._C._nn.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                       divisor_override)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.k, ctx.s, ctx.p, ctx.ceil, ctx.count_pad, ctx.div = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if backend.use_cpp(grad_y):  # csrc/cpu/pooling.cpp
            return torch.ops.torch_bp.avg_pool2d_bwd(grad_y, x.shape, ctx.k, ctx.s, ctx.p, ctx.count_pad, ctx.div), \
                None, None, None, None, None, None
        shape, (kh, kw), (sh, sw), (ph, pw) = x.shape, ctx.k, ctx.s, ctx.p
        h, w = shape[-2:]
        ho, wo = grad_y.shape[-2:]
        g = opmath(grad_y)
        if ctx.div is not None:
            g = g / ctx.div
        else:
            dh = _avg_divisor(h, ho, kh, sh, ph, ctx.ceil, ctx.count_pad, g.device)
            dw = _avg_divisor(w, wo, kw, sw, pw, ctx.ceil, ctx.count_pad, g.device)
            g = g / (dh[:, None] * dw[None, :]).to(g.dtype)
        if (sh, sw) == (kh, kw):  # windows side by side: the transposed convolution repeats each value
            lead = g.shape[:-2]
            full = g[..., :, None, :, None].expand(*lead, ho, kh, wo, kw).reshape(*lead, ho * kh, wo * kw)
        else:
            planes = g.reshape(-1, 1, ho, wo)
            ones = planes.new_ones(1, 1, kh, kw)
            full = TF.conv_transpose2d(planes, ones, stride=(sh, sw))  # (P, 1, (ho-1)sh+kh, (wo-1)sw+kw)
        extra_h, extra_w = ph + h - full.shape[-2], pw + w - full.shape[-1]
        if extra_h > 0 or extra_w > 0:
            full = TF.pad(full, (0, max(extra_w, 0), 0, max(extra_h, 0)))
        grad_x = full[..., ph:ph + h, pw:pw + w].reshape(shape).to(grad_y.dtype)
        return grad_x, None, None, None, None, None, None


# --- AdaptiveAvgPool2d ---
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


class AdaptiveAvgPool2dFunction(Rule):
    r"""Average over Ho x Wo windows that tile the input (they may overlap by one).

    Forward:   y = A_h x A_w^T  on each plane   (A: see _adaptive_matrix; the windows are
               separable, so is the averaging)
    Backward:  grad_x = A_h^T grad_y A_w
               (Ho, Wo dividing H, W: grad_y / (kh kw) repeated over each kh x kw window)
    Saved:     x, for its shape (as torch)    Double backward: yes (linear in grad_y)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, output_size):
        return torch._C._nn.adaptive_avg_pool2d(x, output_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _ = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        h, w = x.shape[-2:]
        ho, wo = grad_y.shape[-2:]
        if 0 < ho <= h and 0 < wo <= w and h % ho == 0 and w % wo == 0:
            # NOTE: windows of kh x kw = (H/Ho) x (W/Wo) side by side: A_h^T grad_y A_w repeats
            # grad_y / (kh kw) over each window (for output 1 x 1, an expand: no copy here)
            kh, kw = h // ho, w // wo
            g = (opmath(grad_y) / (kh * kw)).to(grad_y.dtype)
            if (ho, wo) == (1, 1):
                return g.expand(x.shape), None
            return g[..., :, None, :, None].expand(*g.shape[:-2], ho, kh, wo, kw).reshape(x.shape), None
        g = opmath(grad_y)
        a_h = _adaptive_matrix(h, ho, g.dtype, g.device)  # (Ho, H)
        a_w = _adaptive_matrix(w, wo, g.dtype, g.device)  # (Wo, W)
        grad_x = a_h.t().matmul(g).matmul(a_w)  # (*, H, W)
        return grad_x.to(grad_y.dtype), None
