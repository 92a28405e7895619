"""torch's argument checks, in one place: the errors torch raises before its kernels run.

Each functional of ``torch_bp.functional`` calls these before its Function, so that bad input
raises torch's exception type with a message like torch's, and the rules in ``torch_bp.ops``
see only valid tensors.
"""
from __future__ import annotations

import warnings

import torch

from .. import _compat

def _check_inplace(input):
    """With ``inplace=True``: the errors torch gives before it writes into ``input`` (a leaf, or a
    view of a leaf, that requires grad; elements sharing memory, as in an expanded tensor)."""
    if torch.is_grad_enabled() and input.requires_grad:
        if input.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        if input._is_view() and input._base.is_leaf and input._base.requires_grad:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place "
                               "operation.")
    if _compat.has_internal_overlap(input):
        raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a "
                           "single memory location. Please clone() the tensor before performing the operation.")


def _floating_only(input, name):
    """torch's kernels of these layers are defined for floating dtypes only."""
    if not input.is_floating_point():
        raise NotImplementedError(f"{name}: not implemented for input of dtype {input.dtype} "
                                  "(a floating point input is needed)")


def _implicit_softmax_dim(name, ndim, stacklevel):
    """torch's legacy choice of dim when none is given (with its deprecation warning)."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                  "Change the call to include dim=X as an argument.", stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def _legacy_reduction(size_average, reduce, reduction):
    """torch's mapping of the legacy size_average/reduce to ``reduction`` (with its warning)."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "mean" if size_average and reduce else ("sum" if reduce else "none")
        warnings.warn("size_average and reduce args will be deprecated, please use "
                      f"reduction='{reduction}' instead.", stacklevel=4)
    return reduction


def _reduction(size_average, reduce, reduction):
    """torch's resolution of ``reduction``: the legacy arguments, then a check of its value."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction == "elementwise_mean":
        warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
                      stacklevel=3)
        return "mean"
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def _no_grad_for(name, **tensors):
    """torch's error for an argument its loss takes no gradient for."""
    for what, t in tensors.items():
        if t is not None and t.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"The function '{name}' is not differentiable with respect to argument "
                               f"'{what}'. This input cannot have requires_grad True.")


def _pointwise_loss_args(input, target, weight):
    """Checks shared by mse/l1/huber/smooth_l1 (as torch: a warning for a target of another
    size, broadcasting, ``weight`` of the input's size)."""
    if target.size() != input.size():
        warnings.warn(f"Using a target size ({target.size()}) that is different to the input size "
                      f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
                      "Please ensure they have the same size.", stacklevel=3)
    torch.broadcast_shapes(input.shape, target.shape)  # RuntimeError naming the sizes, as torch
    if weight is not None and weight.size() != input.size():
        raise ValueError("Weights and input must have the same size.")


def _int_check(input, target, name, int_error):
    if not torch.promote_types(input.dtype, target.dtype).is_floating_point:
        raise int_error(f"{name}: not implemented for inputs of dtype {input.dtype} and {target.dtype} "
                        "(floating point inputs are needed)")


def _check_class_weight(weight, n_classes, input, prefix=""):
    if weight is not None and (weight.dim() != 1 or weight.numel() != n_classes):
        raise RuntimeError(f"{prefix}weight tensor should be defined either for all {n_classes} classes or no "
                           f"classes but got weight tensor of shape: {list(weight.shape)}")


def _check_class_targets(input, target, weight, ignore_index, name):
    """torch's checks of nll_loss_nd, in torch's order (input (C), (N, C) or (N, C, d1, ...),
    class-index targets). Returns the target (a (1,) target of a 1-d input as a 0-d one)."""
    if input.dim() < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {input.dim()})")
    if input.dim() != 1 and (target.dim() == 0 or input.shape[0] != target.shape[0]):
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
                         f"({target.shape[0] if target.dim() else 0}).")
    if input.dim() <= 2:
        if target.dim() > 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    elif tuple(target.shape[1:]) != tuple(input.shape[2:]) or target.dim() != input.dim() - 1:
        raise RuntimeError(f"Expected target size {[input.shape[0]] + list(input.shape[2:])}, "
                           f"got {list(target.shape)}")
    n_classes = input.shape[0 if input.dim() == 1 else 1]
    if n_classes == 0 and input.dim() != 4 and input.dim() > 2:
        # as torch, whose reshape to 4-d of an input without classes loses the target's layout
        raise RuntimeError(f"size mismatch (got input: {list(input.shape)}, target: {list(target.shape)}): "
                           "no classes")
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {target.dtype}")
    if target.dtype == torch.uint8 and input.dim() > 2:  # torch's nll_loss2d takes int64 targets only
        raise RuntimeError("expected scalar type Long but found Byte (class-index targets of a K-dim input)")
    if input.dim() == 1 and target.dim() == 1:  # as torch: a (1,) target of an unbatched input
        if target.shape[0] != 1:
            raise ValueError(f"For 1D input, 1D target must have size 1, but got target size: {target.shape[0]}")
        target = target.reshape(())
    _check_class_weight(weight, n_classes, input)
    if not input.is_floating_point():
        raise NotImplementedError(f"{name}: not implemented for input of dtype {input.dtype}")
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(f"expected scalar type {input.dtype} but found {weight.dtype} (weight)")
    _no_grad_for("nll_loss_forward", weight=weight)
    # A data-dependent check: skipped in traced code and under vmap, where the gather's own
    # index check still raises (a RuntimeError, not torch's IndexError).
    if not torch.compiler.is_compiling() and not _compat.is_functorch_wrapped(target):
        bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
        if bad.any():
            raise IndexError(f"Target {target[bad].reshape(-1)[0].item()} is out of bounds.")
    return target


def _normalized_size(input, normalized_shape, name):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(shape) == 0 or tuple(input.shape[input.dim() - len(shape):]) != shape or input.dim() < len(shape):
        raise RuntimeError(
            f"{name}: expected input with trailing shape {list(shape)} (normalized_shape), "
            f"but got input of size {list(input.shape)}"
        )
    d = 1
    for s in shape:
        d *= s
    return shape, d


def _check_affine(param, shape, what, name):
    if param is not None and tuple(param.shape) != shape:
        raise RuntimeError(
            f"{name}: expected {what} of shape {list(shape)} (normalized_shape), got {list(param.shape)}"
        )


def _check_norm_dtypes(input, params, name):
    """As torch's CPU kernel: parameters of the input's dtype, or float32 for a bf16/fp16 input."""
    _floating_only(input, name)
    dtypes = {p.dtype for p in params if p is not None}
    if dtypes and dtypes != {input.dtype} and not (
            input.dtype in (torch.bfloat16, torch.float16) and dtypes == {torch.float32}):
        raise RuntimeError(f"{name}: weight and bias must have the input's dtype {input.dtype} (or float32 "
                           f"for a bfloat16/float16 input), got {sorted(map(str, dtypes))}")


def _conv_tuple(value, nd, what):
    t = (value,) * nd if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) == 1:
        t = t * nd
    if len(t) != nd:
        raise RuntimeError(f"expected {what} to be a single integer value or a list of {nd} values to match "
                           f"the convolution dimensions, but got {what}={list(t)}")
    return t


def _check_conv(input, weight, bias, nd, groups, name, transposed=False):
    if input.numel() and (input.dtype == torch.bool or (transposed and not input.is_floating_point())):
        raise NotImplementedError(f"{name}: not implemented for input of dtype {input.dtype}")
    if input.dim() not in (nd + 1, nd + 2):
        raise RuntimeError(f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {name}, "
                           f"but got input of size: {list(input.shape)}")
    if weight.dim() != nd + 2:
        raise RuntimeError(f"{name}: expected weight to be {nd + 2}-dimensional, got weight of size "
                           f"{list(weight.shape)}")
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    if weight.shape[0] % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size {list(weight.shape)} instead")
    channels = input.shape[-nd - 1]
    expected = weight.shape[0] if transposed else weight.shape[1] * groups
    if channels != expected:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(weight.shape)}, expected "
                           f"input{list(input.shape)} to have {expected} channels, but got {channels} channels instead")
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
                           f"{out_channels} elements, but got bias of size {list(bias.shape)} instead")
    # NOTE: torch checks the bias dtype on some backends only (e.g. mkldnn: float32 with a batch
    # > 1) and adds a cast bias on others (padding='same', a batch of one, ...); we always check.
    for t, what in ((weight, "weight"), (bias, "bias")):
        if t is not None and t.dtype != input.dtype:
            raise RuntimeError(f"{name}: input dtype ({input.dtype}) and {what} dtype ({t.dtype}) should be the same")


def _check_positive(values, what):
    if any(v <= 0 for v in values):
        raise RuntimeError(f"non-positive {what} is not supported")


def _pool_pair(value, what, name):
    t = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) == 1:
        t = t * 2
    if len(t) != 2:
        raise RuntimeError(f"{name}: {what} must either be a single int, or a tuple of two ints")
    return t


def _pool_options(kernel_size, stride, padding, name):
    k = _pool_pair(kernel_size, "kernel_size", name)
    no_stride = stride is None or (not isinstance(stride, int) and len(stride) == 0)
    s = k if no_stride else _pool_pair(stride, "stride", name)
    return k, s, _pool_pair(padding, "padding", name)


def _verify_values_per_channel(input, values):
    if values == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")


def _real_only(name, *tensors):
    """For rules defined for real tensors only, where torch also computes complex ones: say so."""
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_complex():
            raise NotImplementedError(f"{name}: torch_bp's rule is defined for real tensors; complex input of dtype "
                               f"{t.dtype} is not supported (torch.nn.functional.{name} computes it)")
