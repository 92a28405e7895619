"""``torch_bp.functional``: layer, RMS, batch and group normalization. See the package docstring."""
from __future__ import annotations

import math

import torch

from .._amp import autocast_inputs
from ..ops import normalization as _norm
from ._checks import (
    _check_affine,
    _check_norm_dtypes,
    _floating_only,
    _normalized_size,
    _verify_values_per_channel,
)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05):
    input, weight, bias = autocast_inputs("layer_norm", input, weight, bias)
    _check_norm_dtypes(input, (weight, bias), "layer_norm")
    shape, d = _normalized_size(input, normalized_shape, "layer_norm")
    _check_affine(weight, shape, "weight", "layer_norm")
    _check_affine(bias, shape, "bias", "layer_norm")
    return _norm.LayerNormFunction.apply(input, weight, bias, d, float(eps))[0]


def rms_norm(input, normalized_shape, weight=None, eps=None):
    input, weight = autocast_inputs("rms_norm", input, weight)
    _floating_only(input, "rms_norm")
    shape, d = _normalized_size(input, normalized_shape, "rms_norm")
    _check_affine(weight, shape, "weight", "rms_norm")
    if eps is None:  # torch takes the eps of the compute dtype: float32's for bfloat16/float16
        eps = torch.finfo(torch.float32 if input.dtype in (torch.bfloat16, torch.float16) else input.dtype).eps
    return _norm.RMSNormFunction.apply(input, weight, d, float(eps))[0]


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-05):
    return _batch_norm(_norm.BatchNormFunction, input, running_mean, running_var, weight, bias, training, momentum,
                       eps)


def _batch_norm(rule, input, running_mean, running_var, weight, bias, training, momentum, eps):
    """batch_norm's checks, ``rule`` (batch norm's, or batch norm + relu's) and the running statistics' update."""
    # torch's order of checks: values per channel, eps (in F.batch_norm), then the kernel's
    if training and input.dim() >= 1:
        _verify_values_per_channel(input, input.shape[0] * math.prod(input.shape[2:]))
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    _check_norm_dtypes(input, (weight, bias, running_mean, running_var), "batch_norm")
    # torch takes a vector's channel count as 0 when it checks the statistics and parameters
    c = input.shape[1] if input.dim() >= 2 else 0
    for t, what in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"),
                    (bias, "bias")):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{what} should contain {c} elements not {t.numel()}")
    if input.dim() < 2:
        if input.numel() == 0:
            return input.clone()  # torch's result for an empty vector: nothing to normalise, no rule to run
        # torch then reads the channel count input.shape[1] of a vector or a scalar, and raises IndexError
        raise IndexError(f"batch_norm: expected input with at least 2 dims (N, C, ...), got {list(input.shape)}")
    n = input.shape[0] * math.prod(input.shape[2:])  # values per channel
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError("running_mean must be defined in evaluation mode")
    stats = (None, None) if training else (running_mean, running_var)
    y, mean, var = rule.apply(input, weight, bias, *stats, bool(training), float(eps))
    if training:
        _norm.update_running_stats(running_mean, running_var, mean, var, n, momentum)
    return y


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-05):
    input, weight, bias = autocast_inputs("group_norm", input, weight, bias)
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    c = input.shape[1]
    # torch's order: F.group_norm's checks (values per group, as computed there), then the kernel's
    _verify_values_per_channel(input, input.shape[0] * c // num_groups * math.prod(input.shape[2:]))
    _check_norm_dtypes(input, (weight, bias), "group_norm")
    if num_groups <= 0 or c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input "
                           f"of shape {list(input.shape)} and num_groups={num_groups}")
    for t, what in ((weight, "weight"), (bias, "bias")):
        if t is not None and (t.dim() != 1 or t.numel() != c):
            raise RuntimeError(f"Expected {what} to be a vector of size equal to the number of channels in input, "
                               f"but got {what} of shape {list(t.shape)} and input of shape {list(input.shape)}")
    return _norm.GroupNormFunction.apply(input, weight, bias, int(num_groups), float(eps))[0]


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-05):
    """Instance norm: the group norm rule with one group per channel (statistics per (n, c)) when
    ``use_input_stats``; else the batch norm rule in eval mode with the running statistics.

    The running statistics are updated as torch's: by the batch mean of the per-instance mean and
    unbiased variance (computed apart, without gradient, only when they are given)."""
    if use_input_stats and math.prod(input.shape[2:]) == 1:  # torch's F.instance_norm check comes first
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.size()}")
    if input.dim() < 2:
        raise RuntimeError(f"instance_norm: expected input with at least 2 dims (N, C, ...), got {list(input.shape)}")
    if input.shape[0] == 0 and (weight is not None or bias is not None or running_mean is not None):
        # as torch, whose instance_norm repeats weight/bias/statistics per instance (none here) and then indexes it
        raise IndexError("select(): index 0 out of range for tensor of size [0] at dimension 0 "
                         "(torch's instance_norm of an empty batch with weight, bias or running statistics)")
    c = input.shape[1]
    for t, what in ((running_mean, "running_mean"), (running_var, "running_var")):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{what} should contain {c} elements not {t.numel()}")
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    _check_norm_dtypes(input, (weight, bias, running_mean, running_var), "instance_norm")
    for t, what in ((weight, "weight"), (bias, "bias")):
        if t is not None and (t.dim() != 1 or t.numel() != c):
            raise RuntimeError(f"{what} should contain {c} elements not {t.numel()}")
    # one group per channel; no channels: one empty group (an empty result, as torch)
    y = _norm.GroupNormFunction.apply(input, weight, bias, max(c, 1), float(eps))[0]
    if running_mean is not None or running_var is not None:
        with torch.no_grad():
            var, mean = torch.var_mean(input.detach().flatten(2).to(torch.float64), -1, correction=1)  # (N, C)
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(mean.mean(0).to(running_mean.dtype), alpha=momentum)
            if running_var is not None:
                running_var.mul_(1 - momentum).add_(var.mean(0).to(running_var.dtype), alpha=momentum)
    return y


def local_response_norm(input, size, alpha=0.0001, beta=0.75, k=1.0):
    dim = input.dim()
    if dim < 3:
        raise ValueError(f"Expected 3D or higher dimensionality input (got {dim} dimensions)")
    if not input.is_floating_point():  # no gradient to take: torch's function, with its integer conventions
        return torch.nn.functional.local_response_norm(input, size, alpha, beta, k)
    if dim > 3 and input.device.type == "cpu" and input.dtype in (torch.bfloat16, torch.float16):
        # as torch, whose local_response_norm of a 4-d or larger input runs avg_pool3d (no such CPU kernel)
        raise NotImplementedError(f'"avg_pool3d_out_frame" not implemented for {input.dtype} '
                                  "(torch's local_response_norm of a 4-d or larger input on CPU)")
    return _norm.LocalResponseNormFunction.apply(input, size, alpha, beta, k)



def sync_group(process_group=None):
    """The process group a SyncBatchNorm synchronises over: ``process_group`` (default: the world) when
    torch.distributed is initialised and the group has more than one process, else None (nothing to sync)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-05, process_group=None):
    """torch_bp only: :func:`batch_norm` whose training statistics are those of the whole batch across
    ``process_group`` (default: the world; torch.distributed's all_reduce, any backend, CPU tensors with gloo).

    Without an initialised process group of more than one process it is batch_norm's training rule (the
    statistics of this process's batch); in eval mode (``training=False``) it is :func:`batch_norm`. The running
    statistics are updated with the group's statistics (unbiased with the group's count), as torch's
    SyncBatchNorm."""
    if not training:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    group = sync_group(process_group)
    if input.dim() < 2:
        raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")
    if group is None:
        _verify_values_per_channel(input, input.shape[0] * math.prod(input.shape[2:]))
    if eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    _check_norm_dtypes(input, (weight, bias, running_mean, running_var), "batch_norm")
    c = input.shape[1]
    for t, what in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"),
                    (bias, "bias")):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{what} should contain {c} elements not {t.numel()}")
    y, mean, var, n = _norm.SyncBatchNormFunction.apply(input, weight, bias, float(eps), group)
    _norm.update_running_stats(running_mean, running_var, mean, var, int(n), momentum)
    return y
