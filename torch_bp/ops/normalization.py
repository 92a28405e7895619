r"""Normalization layers: statistics over some dims, then an optional affine map.

Notation: the normalized dims (the trailing ``normalized_shape`` for layer/RMS norm) are
flattened to one dim of size D; ``mean`` is over that dim.
"""
from __future__ import annotations

import functools
import math

import torch

from .. import backend
from . import _lean
from ._util import example_rows, first_order_only, opmath, own
from ._rule import Rule


def _rows(x: torch.Tensor, d: int) -> torch.Tensor:
    return x.reshape(x.numel() // d if d else math.prod(x.shape[:-1]), d)  # (N, D); D = 0: N from the lead dims


def _example_sums(t: torch.Tensor, lead, batch_dim: int, shape, dtype) -> torch.Tensor:
    """(N, D) rows -> (B, *shape): the sum over the rows of each example (per-sample rules)."""
    return example_rows(t.reshape(*lead, t.shape[1]), batch_dim, t.shape[1]).sum(1).to(dtype).reshape(-1, *shape)


# --- LayerNorm ---
def _layer_norm_stats(xr: torch.Tensor, eps: float):
    """mu (of each row shifted by its first element, see the NOTE below) and r of rows xr (N, D)."""
    xs = xr - xr[:, :1]
    mu = xs.mean(1, keepdim=True)
    var = (xs - mu).pow(2).mean(1, keepdim=True)
    return mu, torch.rsqrt(var + eps).masked_fill(var.isinf(), float("nan"))


class LayerNormFunction(Rule):
    r"""LayerNorm over the trailing D elements.

    Forward:   mu = mean(x),  r = (mean((x - mu)^2) + eps)^(-1/2),  xh = (x - mu) r
               y = xh * w + b
    Backward:  g = grad_y * w
               grad_x = r * (g - mean(g) - xh * mean(g * xh))
               grad_w = sum over rows of grad_y * xh,   grad_b = sum over rows of grad_y
    Saved:     x, w, and per row mu and r (xh is recomputed: one (N, D) tensor fewer)
    Lean:      records y = layer_norm(x) as a recompute recipe (ops/_lean.py): a rule that would
               save y (the linear after a pre-LN norm) saves x, kept here anyway
    Double backward: yes: under create_graph=True the backward takes mu and r again from x
               (the forward's statistics, in differentiable ops) and runs the formula above
    Per example n:  grad_w[n], grad_b[n] = the sums above over the rows of example n only
    NOTE: mu is the mean of x - x[0] (each row shifted by its first element; mu and xh are
    unchanged mathematically). A constant row then centres to exactly 0, as torch's Welford
    statistics do; without the shift, mean(x) rounds off x and a constant row with a tiny
    eps normalizes to +-1 instead of 0. It also keeps precision for rows far from 0.
    NOTE: a row whose variance overflows (|x| > ~1e19 in float32) gives NaN, as torch's
    does, rather than r = 0 and a silently wrong y = b.
    """

    compiled = ("layer_norm_fwd", "layer_norm_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, d, eps):
        if d and backend.use_cpp(x, weight, bias, op="layer_norm_fwd"):  # the same rule, fused (csrc/, kernels/triton/)
            return torch.ops.torch_bp.layer_norm_fwd(x, weight, bias, d, eps)
        xr = opmath(_rows(x, d))  # (N, D)
        mu, rstd = _layer_norm_stats(xr, eps)
        y = (xr - xr[:, :1] - mu) * rstd
        if weight is not None:
            y = y * opmath(weight).reshape(-1)
        if bias is not None:
            y = y + opmath(bias).reshape(-1)
        return own(y.to(x.dtype).reshape(x.shape)), mu, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, ctx.d, ctx.eps = inputs
        y, mu, rstd = output
        ctx.mark_non_differentiable(mu, rstd)
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.save_for_backward(x, weight, mu, rstd)
        # y = layer_norm(x): a rule that would save y (the linear after a pre-LN norm) saves x, kept here
        _lean.record(y, x, functools.partial(_norm_again, LayerNormFunction, weight, bias, ctx.d, ctx.eps), weight, bias)

    @staticmethod
    def backward(ctx, grad_y, _grad_mu, _grad_rstd):
        x, weight, mu, rstd = ctx.saved_tensors
        d = ctx.d
        if d and backend.use_cpp(x, weight, grad_y, op="layer_norm_bwd"):
            mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.bias_shape is not None and ctx.needs_input_grad[2]]
            gx, gw, gb = torch.ops.torch_bp.layer_norm_bwd(grad_y, x, weight, mu, rstd, d, mask)
            return gx, gw, None if gb is None else gb.reshape(ctx.bias_shape), None, None
        xr = opmath(_rows(x, d))
        if torch.is_grad_enabled():  # create_graph: the statistics as functions of x (double backward)
            mu, rstd = _layer_norm_stats(xr, ctx.eps)
        xh = (xr - xr[:, :1] - mu) * rstd  # (N, D)
        gy = opmath(_rows(grad_y, d))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            g = gy * opmath(weight).reshape(-1) if weight is not None else gy
            grad_x = rstd * (g - g.mean(1, keepdim=True) - xh * (g * xh).mean(1, keepdim=True))
            grad_x = grad_x.to(x.dtype).reshape(x.shape)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_w = (gy * xh).sum(0).to(weight.dtype).reshape(weight.shape)
        if ctx.bias_shape is not None and ctx.needs_input_grad[2]:
            grad_b = gy.sum(0).to(grad_y.dtype).reshape(ctx.bias_shape)
        return grad_x, grad_w, grad_b, None, None

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, _grad_mu, _grad_rstd, out=None):
        x, weight, mu, rstd = ctx.saved_tensors
        shape = weight.shape if weight is not None else ctx.bias_shape        # normalized_shape
        lead = x.shape[:x.dim() - len(shape)]
        gy = opmath(_rows(grad_y, ctx.d))
        res = {}
        if weight is not None and ctx.needs_input_grad[1]:
            xr = opmath(_rows(x, ctx.d))
            xh = (xr - xr[:, :1] - mu) * rstd
            res[1] = _example_sums(gy * xh, lead, batch_dim, shape, weight.dtype)
        if ctx.bias_shape is not None and ctx.needs_input_grad[2]:
            res[2] = _example_sums(gy, lead, batch_dim, shape, grad_y.dtype)
        return res


# --- RMSNorm ---
class RMSNormFunction(Rule):
    r"""RMSNorm over the trailing D elements.

    Forward:   r = (mean(x^2) + eps)^(-1/2),   y = x * r * w
    Backward:  g = grad_y * w
               grad_x = r * (g - x * r^2 * mean(g * x))
               grad_w = sum over rows of grad_y * x * r
    Saved:     x, w, r (one number per row)
    Lean:      records y = rms_norm(x) as a recompute recipe (ops/_lean.py), as LayerNorm's
    Double backward: yes: under create_graph=True the backward takes r again from x (the forward's
               formula, in differentiable ops) and runs the formula above
    Per example n:  grad_w[n] = the sum above over the rows of example n only
    """

    compiled = ("rms_norm_fwd", "rms_norm_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, d, eps):
        if d and backend.use_cpp(x, weight, op="rms_norm_fwd"):  # the same rule, fused (csrc/, kernels/triton/)
            return torch.ops.torch_bp.rms_norm_fwd(x, weight, d, eps)
        xr = opmath(_rows(x, d))  # (N, D)
        r = torch.rsqrt(xr.pow(2).mean(1, keepdim=True) + eps)
        y = xr * r
        if weight is not None:
            y = y * opmath(weight).reshape(-1)
        return own(y.to(x.dtype).reshape(x.shape)), r

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, ctx.d, ctx.eps = inputs
        y, r = output
        ctx.mark_non_differentiable(r)
        ctx.save_for_backward(x, weight, r)
        # y = rms_norm(x): a rule that would save y saves x, kept here (as LayerNorm's)
        _lean.record(y, x, functools.partial(_norm_again, RMSNormFunction, weight, ctx.d, ctx.eps), weight)

    @staticmethod
    def backward(ctx, grad_y, _grad_r):
        x, weight, r = ctx.saved_tensors
        if ctx.d and backend.use_cpp(x, weight, grad_y, op="rms_norm_bwd"):
            return (*torch.ops.torch_bp.rms_norm_bwd(grad_y, x, weight, r, ctx.d, ctx.needs_input_grad[:2]), None, None)
        xr, gy = opmath(_rows(x, ctx.d)), opmath(_rows(grad_y, ctx.d))
        if torch.is_grad_enabled():  # create_graph: r as a function of x (double backward)
            r = torch.rsqrt(xr.pow(2).mean(1, keepdim=True) + ctx.eps)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            g = gy * opmath(weight).reshape(-1) if weight is not None else gy
            grad_x = r * (g - xr * r.pow(2) * (g * xr).mean(1, keepdim=True))
            grad_x = grad_x.to(x.dtype).reshape(x.shape)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_w = (gy * xr * r).sum(0).to(weight.dtype).reshape(weight.shape)
        return grad_x, grad_w, None, None

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, _grad_r, out=None):
        x, weight, r = ctx.saved_tensors
        res = {}
        if weight is not None and ctx.needs_input_grad[1]:
            lead = x.shape[:x.dim() - weight.dim()]
            gy, xr = opmath(_rows(grad_y, ctx.d)), opmath(_rows(x, ctx.d))
            res[1] = _example_sums(gy * xr * r, lead, batch_dim, weight.shape, weight.dtype)
        return res


# ====================================================================================
# --- BatchNorm --- (conv/pooling/batch-norm family: batch_norm, group_norm below)
# Notation: x is (N, C, *S); a "channel" reduction is over N and all of S, with
# n = N * prod(S) elements; per-channel vectors broadcast as (1, C, 1, ...).
# ====================================================================================
def _channel_dims(x: torch.Tensor):
    red = [0] + list(range(2, x.dim()))            # dims reduced per channel
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)  # per-channel broadcast shape
    return red, shape


class BatchNormFunction(Rule):
    r"""Batch normalization with batch statistics (training) or given statistics (eval).

    Forward:   training: mu = mean_c(x), v = mean_c((x - mu)^2) (biased)
               eval:     mu, v = running_mean, running_var
               r = (v + eps)^(-1/2),  xh = (x - mu) r,  y = xh * w + b
    Backward:  training: grad_x = w r (grad_y - sum_c(grad_y) / n - xh * sum_c(grad_y xh) / n)
               eval:     grad_x = w r grad_y        (the statistics are constants)
               grad_w = sum_c(grad_y * xh),   grad_b = sum_c(grad_y)
    Saved:     x, w, mu, v (r is recomputed, exactly as in forward; x - mu is formed again)
    Double backward: yes: under create_graph=True the backward takes the batch statistics again
               from x (training; the forward's formula, in differentiable ops) and runs the formula above
    Lean:      records y = bn(x) (with these mu, v, w, b) as a recompute recipe (ops/_lean.py): a rule
               that would save y (a conv, possibly after a ReLU) saves x, kept here anyway. Given
               ``running_mean``/``running_var`` in training mode, they are taken as the batch
               statistics of x (that recompute: the same normalisation code, bit-identical y, and
               the training-mode backward)
    Per example n (eval only: batch statistics mix the examples, so training mode raises):
               grad_w[n], grad_b[n] = the sums above over example n's positions only

    The running statistics are not touched here; :func:`update_running_stats` does that
    from the returned (mu, v), which are not differentiable. The running statistics get no
    gradient, as in torch.
    """

    compiled = ("batch_norm_fwd", "batch_norm_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training, eps):
        if x.dim() > 2 and x.numel() and x.is_contiguous() and backend.use_cpp(x, weight, bias):
            # the same rule, one task per channel (csrc/cpu/normalization.cpp); other layouts
            # (channels_last) keep theirs through the Python rule
            return torch.ops.torch_bp.batch_norm_fwd(x, weight, bias, running_mean, running_var, eps)
        red, _ = _channel_dims(x)
        xf = opmath(x)
        if training and running_mean is None and xf.numel():
            mean, var = _batch_stats(xf)
        elif training and running_mean is None:  # empty batch: NaN statistics (never used: no output, no update)
            mean = xf.mean(red)
            var = mean.clone()
        else:  # eval statistics, or the batch statistics given back (lean recompute)
            mean = running_mean.to(xf.dtype, copy=True)
            var = running_var.to(xf.dtype, copy=True)
        return _affine(xf, mean, var, weight, bias, eps).to(x.dtype), mean, var

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, _, _, ctx.training, ctx.eps = inputs
        y, mean, var = output
        ctx.mark_non_differentiable(mean, var)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, weight, mean, var)
        # y = bn(x) with these statistics: a rule that would save y saves x (kept here) instead
        _lean.record(y, x, functools.partial(_batch_norm_again, weight, bias, mean, var, ctx.training, ctx.eps),
                     weight, bias, mean, var)

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x, weight, mean, var = ctx.saved_tensors
        want_x, want_w = ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1]
        want_b = ctx.bias_dtype is not None and ctx.needs_input_grad[2]
        if x.dim() > 2 and x.numel() and x.is_contiguous() and backend.use_cpp(x, weight, grad_y):
            # csrc/cpu/normalization.cpp
            gx, gw, gb = torch.ops.torch_bp.batch_norm_bwd(grad_y, x, weight, mean, var, ctx.training, ctx.eps,
                                                           [want_x, want_w, want_b])
            return gx, gw, None if gb is None else gb.to(ctx.bias_dtype), None, None, None, None
        red, shape = _channel_dims(x)
        if torch.is_grad_enabled() and ctx.training and x.numel():
            mean, var = _batch_stats(opmath(x))  # create_graph: the statistics as functions of x
        rstd = torch.rsqrt(var + ctx.eps)  # (C,), exactly as in forward
        gy = opmath(grad_y)
        # NOTE: sum_c(grad_y xh) = r * sum_c(grad_y (x - mu)); x - mu is formed first (no
        # cancellation between two large sums when |mu| >> sqrt(v)), as in torch's kernel.
        xc = dotp = sum_gy = None
        if want_w or (want_x and ctx.training):
            xc = opmath(x) - mean.view(shape)
            dotp = _channel_sum(gy * xc)
        if want_b or (want_x and ctx.training):
            sum_gy = _channel_sum(gy)
        grad_x = grad_w = grad_b = None
        if want_x:
            scale = rstd if weight is None else rstd * opmath(weight)  # (C,)
            if ctx.training:
                n = max(x.numel() // x.shape[1], 1)
                g = torch.addcmul(gy, xc, (-dotp * rstd.square() / n).view(shape))  # grad_y - xh * sum(grad_y xh) / n
                grad_x = (g - (sum_gy / n).view(shape)) * scale.view(shape)
            else:
                grad_x = gy * scale.view(shape)
            grad_x = grad_x.to(x.dtype)
        if want_w:
            grad_w = (dotp * rstd if x.numel() else dotp).to(weight.dtype)  # empty batch: 0, not 0 * NaN
        if want_b:
            grad_b = sum_gy.to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None, None, None

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, _grad_mean, _grad_var, out=None):
        if ctx.training:
            raise RuntimeError(
                "per-sample gradients of batch_norm with batch statistics (training mode) are not defined: "
                "every output depends on every example of the batch. Use group_norm/layer_norm, eval mode, "
                "or frozen batch-norm parameters.")
        x, weight, mean, var = ctx.saved_tensors
        _, shape = _channel_dims(x)
        gy = opmath(grad_y)
        res = {}
        if weight is not None and ctx.needs_input_grad[1]:
            xh = (opmath(x) - mean.view(shape)) * torch.rsqrt(var + ctx.eps).view(shape)
            res[1] = _sum_space(gy * xh).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            res[2] = _sum_space(gy).to(ctx.bias_dtype)
        return res


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *S) -> (C,): the sum over N and S. NOTE: the contiguous trailing dims are reduced
    first (a fast inner reduction), then N: summing over (0, 2, ...) at once is a slow strided
    reduction on CPU."""
    return _sum_space(t).sum(0)


def _affine(xf: torch.Tensor, mean, var, weight, bias, eps: float) -> torch.Tensor:
    """y = (x - mu) r w + b per channel of xf (N, C, *S), r = (v + eps)^(-1/2), in xf's dtype: as
    y = x alpha + beta, alpha = r w, beta = b - mu alpha, one pass over x as torch's kernel (batch_norm's
    and sync_batch_norm's forward)."""
    _, shape = _channel_dims(xf)
    alpha = torch.rsqrt(var + eps)
    if weight is not None:
        alpha = alpha * opmath(weight)
    beta = -mean * alpha
    if bias is not None:
        beta = beta + opmath(bias)
    return torch.addcmul(beta.view(shape), xf, alpha.view(shape))


def _batch_stats(xf: torch.Tensor):
    """Per-channel mean and biased variance of x (N, C, *S), two passes (mean, then the mean of
    squared deviations), each reducing the trailing dims first (see :func:`_channel_sum`)."""
    _, shape = _channel_dims(xf)
    n = xf.numel() // xf.shape[1]
    mean = _channel_sum(xf) / n
    var = _channel_sum((xf - mean.view(shape)).square_()) / n
    return mean, var


def _norm_again(rule, *args):
    """y = rule(x) once more, ``args`` ending in x (a lean rule's recompute recipe for the output of
    a layer or RMS norm): the forward runs again, so y is bit-identical; through the rule itself
    (differentiable) under create_graph."""
    if torch.is_grad_enabled():
        return rule.apply(args[-1], *args[:-1])[0]
    return rule.forward(args[-1], *args[:-1])[0]


def _batch_norm_again(weight, bias, mean, var, training, eps, x):
    """y = bn(x) once more with the statistics of the forward (a lean rule's recompute recipe):
    the same normalisation code, so y is bit-identical; differentiable (training-mode rule) under
    create_graph."""
    if torch.is_grad_enabled():
        return BatchNormFunction.apply(x, weight, bias, mean, var, training, eps)[0]
    return BatchNormFunction.forward(x, weight, bias, mean, var, training, eps)[0]


def _sum_space(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *S) -> (N, C): per example and channel, the sum over the spatial dims (per-sample rules)."""
    return t if t.dim() == 2 else t.sum(list(range(2, t.dim())))


def update_running_stats(running_mean, running_var, mean, var, n, momentum):
    r"""torch's running-statistics rule, in place (no autograd):

        running_mean = (1 - m) running_mean + m mu
        running_var  = (1 - m) running_var  + m v n / (n - 1)      (unbiased batch variance)

    ``momentum=None`` (cumulative average, m = 1 / num_batches_tracked) is resolved by the
    module, as in torch. Nothing is updated for an empty batch (n == 0), as in torch.
    """
    if n == 0:
        return
    with torch.no_grad():
        for running, stat in ((running_mean, mean), (running_var, None if var is None else var * (n / (n - 1)))):
            if running is None:
                continue
            if running.numel() > 1 and running.stride(0) == 0:
                # an expanded (stride-0) buffer: torch's kernel writes it element by element, each
                # update reading the previous one's result; so do we
                for c in range(running.numel()):
                    running[c] = momentum * stat[c] + (1 - momentum) * opmath(running[c])
            else:
                running.copy_(momentum * stat + (1 - momentum) * opmath(running))


# --- GroupNorm ---
def _group_view(x, num_groups):
    n = x.shape[0]
    return n, num_groups, x.numel() // max(n * num_groups, 1)  # (N, G, D); D unused when N == 0


def _group_rstd(var: torch.Tensor, eps: float) -> torch.Tensor:
    """r = (var + eps)^(-1/2); var + eps in float64, as torch's kernel (its double eps promotes the sum):
    an eps below float32's normal range (1e-45) would otherwise round (to 1.4e-45) first."""
    return torch.rsqrt(var.double() + eps).to(var.dtype) if var.dtype != torch.float64 else torch.rsqrt(var + eps)


class GroupNormFunction(Rule):
    r"""GroupNorm: x (N, C, *S) viewed as (N, G, D) with D = C/G * prod(S); statistics per (n, g).

    Forward:   mu = mean_D(x), r = (mean_D((x - mu)^2) + eps)^(-1/2), xh = (x - mu) r
               y = xh * w[c] + b[c]
    Backward:  g = grad_y * w[c]     (viewed as (N, G, D))
               grad_x = r * (g - mean_D(g) - xh * mean_D(g * xh))
               grad_w[c] = sum over N and S of grad_y * xh,   grad_b[c] = sum over N and S of grad_y
    Saved:     x, w, mu, r (per (n, g); xh is recomputed)
    Double backward: yes: under create_graph=True the backward takes mu and r again from x (the
               forward's formula, in differentiable ops) and runs the formula above
    Per example n:  grad_w[n], grad_b[n] = the sums above over example n's positions only
    Compiled (csrc/cpu/normalization.cpp): the same rule, one task per (n, g); backward takes per
    (n, c) sum(grad_y) and sum(grad_y (x - mu)), from which mean_D(g) and mean_D(g * xh), grad_w and
    grad_b follow, then grad_x in one more pass
    """

    compiled = ("group_norm_fwd", "group_norm_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, num_groups, eps):
        if x.numel() and backend.use_cpp(x, weight, bias):
            # the same rule, one task per (n, g) (csrc/cpu/normalization.cpp)
            return torch.ops.torch_bp.group_norm_fwd(x, weight, bias, num_groups, eps)
        xf = opmath(x)
        n, c = x.shape[:2]
        groups = xf.reshape(_group_view(x, num_groups))  # (N, G, D)
        # NOTE: two passes, the mean, then the norm of x - mu (torch's one-pass var_mean, Welford over a
        # long group dim, runs ~15x slower on CPU); the buffer of x - mu then takes y: one (N, C, S) tensor
        mean = groups.mean(2, keepdim=True)  # NaN for empty groups
        buf = groups - mean
        if groups.numel():
            var = torch.linalg.vector_norm(buf, dim=2, keepdim=True).square_().div_(groups.shape[2])
        else:
            var = mean.clone()
        rstd = _group_rstd(var, eps)
        # y = x alpha + beta per (n, c), alpha = r w, beta = b - mu alpha: the same non-finite results
        # as torch's kernel, which computes it this way
        per_channel = (n, num_groups, c // num_groups)
        alpha = rstd.expand(per_channel).reshape(n, c)
        if weight is not None:
            alpha = alpha * opmath(weight)
        beta = -alpha * mean.expand(per_channel).reshape(n, c)
        if bias is not None:
            beta = beta + opmath(bias)
        x3 = xf.reshape(n, c, math.prod(x.shape[2:]))  # (N, C, S)
        y = torch.mul(x3, alpha.unsqueeze(-1), out=buf.view(x3.shape)).add_(beta.unsqueeze(-1)).view(x.shape)
        return own(y.to(x.dtype)), mean, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, ctx.num_groups, ctx.eps = inputs
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, weight, mean, rstd)

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, weight, mean, rstd = ctx.saved_tensors
        want_x, want_w = ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1]
        want_b = ctx.bias_dtype is not None and ctx.needs_input_grad[2]
        if x.numel() and backend.use_cpp(x, weight, grad_y):
            # csrc/cpu/normalization.cpp: per (n, c) sums of grad_y and grad_y (x - mu), then one pass
            gx, gw, gb = torch.ops.torch_bp.group_norm_bwd(grad_y, x, weight, mean, rstd, ctx.num_groups,
                                                           [want_x, want_w, want_b])
            return gx, gw, None if gb is None else gb.to(ctx.bias_dtype), None, None
        c, groups = x.shape[1], ctx.num_groups
        xg = opmath(x).reshape(_group_view(x, groups))  # (N, G, D)
        if torch.is_grad_enabled() and x.numel():  # create_graph: the statistics as functions of x
            mean = xg.mean(2, keepdim=True)
            rstd = _group_rstd((xg - mean).pow(2).mean(2, keepdim=True), ctx.eps)
        xh = (xg - mean) * rstd  # (N, G, D)
        gy = opmath(grad_y)
        channel = (1, c) + (1,) * (x.dim() - 2)  # a per-channel vector broadcast over (N, C, *S)
        sum_c = [0] + list(range(2, x.dim()))  # the dims a per-channel sum runs over
        grad_x = grad_w = grad_b = None
        if want_x:
            g = (gy if weight is None else gy * opmath(weight).view(channel)).reshape(xg.shape)
            grad_x = rstd * (g - g.mean(2, keepdim=True) - xh * (g * xh).mean(2, keepdim=True))
            grad_x = grad_x.reshape(x.shape).to(x.dtype)
        if want_w:
            grad_w = (gy * xh.reshape(x.shape)).sum(sum_c).to(weight.dtype)
        if want_b:
            grad_b = gy.sum(sum_c).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, _grad_mean, _grad_rstd, out=None):
        x, weight, mean, rstd = ctx.saved_tensors
        gy = opmath(grad_y)
        res = {}
        if weight is not None and ctx.needs_input_grad[1]:
            xh = ((opmath(x).reshape(_group_view(x, ctx.num_groups)) - mean) * rstd).reshape(x.shape)
            res[1] = _sum_space(gy * xh).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            res[2] = _sum_space(gy).to(ctx.bias_dtype)
        return res


# --- LocalResponseNorm ---
def channel_window_sum(t: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """s_c = sum of t over channels [c - lo, c + hi] (dim 1; channels outside count as 0)."""
    if t.shape[1] == 0:  # no channels: nothing to sum (and no window to unfold)
        return t
    tp = t.movedim(1, -1)
    return torch.nn.functional.pad(tp, (lo, hi)).unfold(-1, lo + hi + 1, 1).sum(-1).movedim(-1, 1)


class LocalResponseNormFunction(Rule):
    r"""Local response normalization across channels (dim 1): F.local_response_norm.

    Forward:   s_c = sum_{j in W(c)} x_j^2,   W(c) = [c - lo, c + hi],  lo = size // 2,  hi = (size - 1) // 2
               (torch pads the channels so),   P = k + (alpha / size) s,   y = x P^(-beta)
    Backward:  grad_x_j = grad_y_j P_j^(-beta)
                          - (2 alpha beta / size) x_j sum_{c: j in W(c)} grad_y_c x_c P_c^(-beta-1)
               (the adjoint window sum runs over [j - hi, j + lo])
    Saved:     x (P is recomputed from x)        Double backward: yes (plain ops of x)

    Computed in float32 for bfloat16/float16 inputs and rounded once.
    """

    generate_vmap_rule = True

    @staticmethod
    def _p(x, size, alpha, k):
        return channel_window_sum(opmath(x).pow(2), size // 2, (size - 1) // 2).mul(alpha / size).add(k)

    @staticmethod
    def forward(x, size, alpha, beta, k):
        p = LocalResponseNormFunction._p(x, size, alpha, k)
        return (opmath(x) * p.pow(-beta)).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.size, ctx.alpha, ctx.beta, ctx.k = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        size, alpha, beta = ctx.size, ctx.alpha, ctx.beta
        p = LocalResponseNormFunction._p(x, size, alpha, ctx.k)
        x32, g = opmath(x), opmath(grad_y)
        back = channel_window_sum(g * x32 * p.pow(-beta - 1), (size - 1) // 2, size // 2)
        grad_x = g * p.pow(-beta) - (2 * alpha * beta / size) * x32 * back
        return grad_x.to(grad_y.dtype), None, None, None, None


# --- SyncBatchNorm ---
def _all_reduce(t, group):
    """Sum ``t`` over the process group in place (torch.distributed's public all_reduce); a no-op without one."""
    if group is not None:
        torch.distributed.all_reduce(t, group=group)
    return t


class SyncBatchNormFunction(Rule):
    r"""Batch normalization in training mode with the statistics of the batch across a process group.

    Notation: x_r (N_r, C, *S) the input on rank r; sum_c: the sum over a channel's positions of the local
    input; SUM: that sum, then summed over the ranks (torch.distributed.all_reduce); n = SUM 1 (every rank's
    values per channel).
    Forward:   mu = SUM x / n;   v = SUM (x - mu)^2 / n   (two all_reduces: the two passes of batch_norm's
               statistics, so no cancellation where |mu| >> sqrt(v));   r = (v + eps)^(-1/2)
               y = (x - mu) r w + b   (x on this rank)
    Backward:  one all_reduce of (sum_c grad_y, sum_c grad_y (x - mu)):
               grad_x = w r (grad_y - SUM grad_y / n - (x - mu) r^2 SUM grad_y (x - mu) / n)
               grad_w = sum_c grad_y (x - mu) r,   grad_b = sum_c grad_y   (this rank's part, as torch's
               SyncBatchNorm: data parallelism sums or averages parameter gradients afterwards)
    Saved:     x, w, mu, v (n as a number: the all_reduced count is read once in the forward)
    Double backward: no
    Without a process group (``group=None``: one process) it is batch_norm's training rule; the running statistics
    are updated by the caller from (mu, v, n), with the unbiased v n / (n - 1) of the whole group, as torch.
    """

    @staticmethod
    def forward(x, weight, bias, eps, group):
        _, shape = _channel_dims(x)
        xf = opmath(x)
        c = x.shape[1]
        local = torch.cat([_channel_sum(xf) if x.numel() else xf.new_zeros(c),
                           xf.new_full((1,), x.numel() // c if c else 0)])
        _all_reduce(local, group)
        n = local[c]
        mean = local[:c] / n
        sq = _channel_sum((xf - mean.view(shape)).square()) if x.numel() else xf.new_zeros(c)
        var = _all_reduce(sq, group) / n
        return _affine(xf, mean, var, weight, bias, eps).to(x.dtype), mean, var, n

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, ctx.eps, ctx.group = inputs
        _, mean, var, n = output
        ctx.mark_non_differentiable(mean, var, n)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.n = n.item()
        ctx.save_for_backward(x, weight, mean, var)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_y, _grad_mean, _grad_var, _grad_n):
        x, weight, mean, var = ctx.saved_tensors
        n = ctx.n
        _, shape = _channel_dims(x)
        c = x.shape[1]
        gy, xc = opmath(grad_y), opmath(x) - mean.view(shape)
        rstd = torch.rsqrt(var + ctx.eps)
        local = torch.cat([_channel_sum(gy), _channel_sum(gy * xc)]) if x.numel() else gy.new_zeros(2 * c)
        sum_gy, dotp = local[:c].clone(), local[c:].clone()          # this rank's sums (grad_w, grad_b)
        # NOTE: every rank reaches this all_reduce (a collective in the backward, as torch's SyncBatchNorm), also
        # one whose input needs no gradient, so that the others do not wait for it
        total = _all_reduce(local, ctx.group)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            scale = rstd if weight is None else rstd * opmath(weight)
            g = gy - (total[:c] / n).view(shape) - xc * (total[c:] * rstd.square() / n).view(shape)
            grad_x = (g * scale.view(shape)).to(x.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_w = (dotp * rstd if x.numel() else dotp).to(weight.dtype)  # an empty batch: 0, not 0 * NaN
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = sum_gy.to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None
