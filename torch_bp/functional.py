"""Drop-in twins of ``torch.nn.functional``: same names, positional order, keywords, defaults.

Thin on purpose: each function resolves its options (defaults, autocast, argument checks
that torch makes before its kernel runs) and calls one Function from ``torch_bp.ops``,
where the backward rule lives. Nothing here states a gradient.

NOTE: ``inplace=True`` (relu, leaky_relu, elu, silu, dropout) is accepted for signature
compatibility but computed out of place: the result is returned and the input is left
untouched, because an in-place write would put torch's CopyBackwards, not our rule, on the
output. Code that uses the returned tensor, as every module does, behaves the same.
"""
from __future__ import annotations

import math
import warnings

import torch

from ._amp import autocast_inputs
from .ops import dropout as _drop
from .ops import embedding as _emb
from .ops import loss as _loss
from .ops import activation as _act
from .ops import linear as _lin
from .ops import normalization as _norm
from .ops import conv as _conv
from .ops import pooling as _pool


# --- linear ---
def linear(input, weight, bias=None):
    input, weight, bias = autocast_inputs("linear", input, weight, bias)
    if input.dim() == 0:
        raise RuntimeError("linear: input must have at least 1 dimension, got a 0-d tensor")
    return _lin.LinearFunction.apply(input, weight, bias)


# --- activations ---
def relu(input, inplace=False):
    return _act.ReLUFunction.apply(input)


def _floating_only(input, name):
    """torch's kernels of these layers are defined for floating dtypes only."""
    if not input.is_floating_point():
        raise NotImplementedError(f"{name}: not implemented for input of dtype {input.dtype} "
                                  "(a floating point input is needed)")


def leaky_relu(input, negative_slope=0.01, inplace=False):
    _floating_only(input, "leaky_relu")
    return _act.LeakyReLUFunction.apply(input, float(negative_slope))


def elu(input, alpha=1.0, inplace=False):
    _floating_only(input, "elu")
    return _act.ELUFunction.apply(input, float(alpha))


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    _floating_only(input, "gelu")
    return _act.GELUFunction.apply(input, approximate)


def silu(input, inplace=False):
    _floating_only(input, "silu")
    return _act.SiLUFunction.apply(input)


def softplus(input, beta=1.0, threshold=20.0):
    (input,) = autocast_inputs("softplus", input)
    _floating_only(input, "softplus")
    return _act.SoftplusFunction.apply(input, float(beta), float(threshold))


def tanh(input):
    return _act.TanhFunction.apply(input)


def sigmoid(input):
    return _act.SigmoidFunction.apply(input)


# ======================================================================================
# --- softmax / log_softmax --- (core: softmax family)
# ======================================================================================
def _implicit_softmax_dim(name, ndim, stacklevel):
    """torch's legacy choice of dim when none is given (with its deprecation warning)."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                  "Change the call to include dim=X as an argument.", stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def _softmax_input(input, dim, stacklevel, dtype, name):
    (input,) = autocast_inputs(name, input)
    if dim is None:
        dim = _implicit_softmax_dim(name, input.dim(), stacklevel + 1)
    if dtype is not None:
        input = input.to(dtype)  # as torch: cast first, the gradient flows back through the cast
    # A non-floating input: torch's own kernel in the rule's forward checks dim first, then
    # raises NotImplementedError (an empty input passes, as in torch).
    return input, dim


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    input, dim = _softmax_input(input, dim, _stacklevel, dtype, "softmax")
    return _act.SoftmaxFunction.apply(input, dim)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    input, dim = _softmax_input(input, dim, _stacklevel, dtype, "log_softmax")
    return _act.LogSoftmaxFunction.apply(input, dim)


# ======================================================================================
# --- dropout --- (core: dropout family)
# ======================================================================================
def dropout(input, p=0.5, training=True, inplace=False):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0 or input.numel() == 0:
        return _drop.DropoutFunction.apply(input, None, None)  # identity, as torch
    if p == 1:  # as torch: input * 0 (a 0-d mask and scale broadcast; nothing is stored per element)
        zero = torch.zeros((), dtype=input.dtype, device=input.device)
        return _drop.DropoutFunction.apply(input, zero.bool(), zero)
    if not input.is_floating_point():
        raise RuntimeError(f"result type Float can't be cast to the desired output type {input.dtype} "
                           "(dropout with 0 < p < 1 needs a floating point input)")
    # NOTE: the same draw as torch's CPU kernel (empty_like(input).bernoulli_(1 - p), then
    # div_(1 - p)), so the same seed gives the same mask; CUDA torch uses a fused kernel with
    # its own random stream.
    noise = torch.empty_like(input).bernoulli_(1 - p)
    mask = noise.bool()
    scale = noise.new_ones(()).div_(1 - p)
    return _drop.DropoutFunction.apply(input, mask, scale)


# ======================================================================================
# --- embedding --- (core: embedding family)
# ======================================================================================
def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    if padding_idx is not None:  # as torch (which asserts)
        if padding_idx > 0 and padding_idx >= weight.size(0):
            raise AssertionError("Padding_idx must be within num_embeddings")
        if padding_idx < 0:
            if padding_idx < -weight.size(0):
                raise AssertionError("Padding_idx must be within num_embeddings")
            padding_idx = weight.size(0) + padding_idx
    if sparse:
        raise NotImplementedError("torch_bp embedding: sparse=True (sparse gradients) is not supported; "
                                  "use sparse=False for a dense gradient")
    if input.dtype not in (torch.int64, torch.int32):
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar "
                           f"types: Long, Int; but got {input.dtype} instead")
    if weight.dim() != 2:
        raise RuntimeError(f"'weight' must be 2-D, got weight of size {list(weight.shape)}")
    if max_norm is not None:
        # As torch: the looked-up rows whose norm exceeds max_norm are rescaled in place,
        # outside autograd (the renorm is not part of the gradient).
        input = input.contiguous()
        with torch.no_grad():
            torch.embedding_renorm_(weight, input, max_norm, norm_type)
    return _emb.EmbeddingFunction.apply(input, weight, padding_idx, bool(scale_grad_by_freq))


# ======================================================================================
# --- losses --- (core: loss family)
# ======================================================================================
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


# NOTE: the order of the checks below is torch's (shapes, then the reduction, then the
# kernel's own checks), so that an input with several problems raises what torch raises.
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    input, target, weight = autocast_inputs("mse_loss", input, target, weight)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _pointwise_loss_args(input, target, weight)
    if weight is not None and torch.bool in (input.dtype, target.dtype):  # torch's weighted path: input - target
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported "
                           "(mse_loss with weight: input and target must not be bool)")
    reduction = _reduction(None, None, reduction)
    _int_check(input, target, "mse_loss", NotImplementedError)
    return _loss.MSELossFunction.apply(input, target, weight, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    input, target, weight = autocast_inputs("l1_loss", input, target, weight)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _pointwise_loss_args(input, target, weight)
    if weight is not None and torch.bool in (input.dtype, target.dtype):  # torch's weighted path: input - target
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported "
                           "(l1_loss with weight: input and target must not be bool)")
    reduction = _reduction(None, None, reduction)  # integers: as torch, fine for 'none' and 'sum'
    return _loss.L1LossFunction.apply(input, target, weight, reduction)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    input, target, weight = autocast_inputs("huber_loss", input, target, weight)
    _pointwise_loss_args(input, target, weight)
    if weight is None:
        reduction = _reduction(None, None, reduction)
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    _int_check(input, target, "huber_loss", NotImplementedError)
    if not input.is_floating_point():  # torch's kernel writes the loss in the input's dtype
        raise RuntimeError(f"result type {target.dtype} can't be cast to the desired output type {input.dtype} "
                           "(huber_loss: the input must be floating point)")
    reduction = _reduction(None, None, reduction)
    if target.dtype != input.dtype:
        target = target.to(input.dtype)  # as torch's kernel: the result has the input's dtype
    return _loss.HuberLossFunction.apply(input, target, weight, reduction, float(delta), 1.0)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    input, target = autocast_inputs("smooth_l1_loss", input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _pointwise_loss_args(input, target, None)
    reduction = _reduction(None, None, reduction)
    if beta == 0.0:  # as torch: plain L1
        return _loss.L1LossFunction.apply(input, target, None, reduction)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    _int_check(input, target, "smooth_l1_loss", NotImplementedError)
    # smooth_l1 with beta = huber with delta = beta, divided by beta
    return _loss.HuberLossFunction.apply(input, target, None, reduction, float(beta), 1.0 / beta)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    input, target, weight, pos_weight = autocast_inputs("binary_cross_entropy_with_logits", input, target,
                                                        weight, pos_weight)
    reduction = _reduction(size_average, reduce, reduction)
    if target.size() != input.size():
        raise ValueError(f"Target size ({target.size()}) must be the same as input size ({input.size()})")
    if not input.is_floating_point():
        raise NotImplementedError(f"binary_cross_entropy_with_logits: not implemented for input of dtype "
                                  f"{input.dtype} (a floating point input is needed)")
    if not target.is_floating_point():
        raise RuntimeError(f"result type Float can't be cast to the desired output type {target.dtype} "
                           "(binary_cross_entropy_with_logits needs a floating point target)")
    for t, what in ((weight, "weight"), (pos_weight, "pos_weight")):
        if t is not None and torch.broadcast_shapes(t.shape, input.shape) != input.shape:
            raise RuntimeError(f"output with shape {list(input.shape)} doesn't match the broadcast shape "
                               f"{list(torch.broadcast_shapes(t.shape, input.shape))} ({what})")
    _no_grad_for("binary_cross_entropy_with_logits", weight=weight, pos_weight=pos_weight)
    return _loss.BCEWithLogitsFunction.apply(input, target, weight, pos_weight, reduction)


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
    if not torch.compiler.is_compiling() and torch._C._functorch.maybe_get_level(target) == -1:
        bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
        if bad.any():
            raise IndexError(f"Target {target[bad].reshape(-1)[0].item()} is out of bounds.")
    return target


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    input, weight = autocast_inputs("nll_loss", input, weight)
    reduction = _reduction(size_average, reduce, reduction)
    target = _check_class_targets(input, target, weight, ignore_index, "nll_loss")
    return _loss.NLLLossFunction.apply(input, target, weight, reduction, int(ignore_index))


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    input, target, weight = autocast_inputs("cross_entropy", input, target, weight)
    reduction = _reduction(size_average, reduce, reduction)
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    label_smoothing = max(float(label_smoothing), 0.0)  # as torch: a negative value is no smoothing
    if input.shape == target.shape:  # as torch: same shapes means class probabilities
        if not target.is_floating_point():
            raise RuntimeError(f"Expected floating point type for target with class probabilities, "
                               f"got {target.dtype}")
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        if not input.is_floating_point() and input.numel():
            raise NotImplementedError(f"cross_entropy: not implemented for input of dtype {input.dtype}")
        if input.dim() == 0:
            raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
        _check_class_weight(weight, input.shape[0 if input.dim() == 1 else 1], input, "cross_entropy: ")
        return _loss.SoftCrossEntropyFunction.apply(input, target, weight, reduction, label_smoothing)[0]
    if not input.is_floating_point() and input.numel():  # torch's log_softmax runs before nll_loss's checks
        raise NotImplementedError(f"cross_entropy: not implemented for input of dtype {input.dtype}")
    target = _check_class_targets(input, target, weight, ignore_index, "cross_entropy")
    return _loss.CrossEntropyFunction.apply(input, target, weight, reduction, int(ignore_index),
                                            label_smoothing)[0]


# --- normalization ---
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


# ====================================================================================
# --- convolution --- (conv/pooling/batch-norm family)
# ====================================================================================
def _conv_tuple(value, nd, what):
    t = (value,) * nd if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) == 1:
        t = t * nd
    if len(t) != nd:
        raise RuntimeError(f"expected {what} to be a single integer value or a list of {nd} values to match "
                           f"the convolution dimensions, but got {what}={list(t)}")
    return t


def _check_conv(input, weight, bias, nd, groups, name, transposed=False):
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
    for t, what in ((weight, "weight"), (bias, "bias")):
        if t is not None and t.dtype != input.dtype:
            raise RuntimeError(f"{name}: input dtype ({input.dtype}) and {what} dtype ({t.dtype}) should be the same")


def _check_positive(values, what):
    if any(v <= 0 for v in values):
        raise RuntimeError(f"non-positive {what} is not supported")


def _convnd(nd, name, input, weight, bias, stride, padding, dilation, groups, pad=None, padding_mode="zeros"):
    """conv1d/conv2d, and the modules' convolution with an explicit ``pad`` in ``padding_mode``."""
    input, weight, bias = autocast_inputs(name, input, weight, bias)
    _check_conv(input, weight, bias, nd, groups, name)
    stride, dilation = _conv_tuple(stride, nd, "stride"), _conv_tuple(dilation, nd, "dilation")
    _check_positive(stride, "stride")
    _check_positive(dilation, "dilation")
    k = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            total = [d * (kk - 1) for d, kk in zip(dilation, k)]
            padding = tuple(t // 2 for t in total)
            if any(t % 2 for t in total):  # as torch: the odd remainder goes on the right, as a zero pad
                pad = tuple((0, t - 2 * (t // 2)) for t in total)
        else:
            raise RuntimeError(f"Invalid padding string: {padding!r}")
    padding = _conv_tuple(padding, nd, "padding")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    sizes = input.shape[-nd:]
    padded = [h + 2 * p + (0 if pad is None else sum(pad[i])) for i, (h, p) in enumerate(zip(sizes, padding))]
    if any(hp < d * (kk - 1) + 1 for hp, d, kk in zip(padded, dilation, k)):
        raise RuntimeError(f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
                           f"Kernel size: ({' x '.join(str(d * (kk - 1) + 1) for d, kk in zip(dilation, k))}). "
                           "Kernel size can't be greater than actual input size")
    opts = _conv.ConvOptions(stride, padding, dilation, int(groups), pad, padding_mode)
    return _conv.ConvFunction.apply(input, weight, bias, opts)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _convnd(1, "conv1d", input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _convnd(2, "conv2d", input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    input, weight, bias = autocast_inputs("conv_transpose2d", input, weight, bias)
    nd = 2
    if isinstance(padding, str):
        raise TypeError(f"conv_transpose2d(): argument 'padding' must be tuple of ints, not str")
    _check_conv(input, weight, bias, nd, groups, "conv_transpose2d", transposed=True)
    stride, dilation = _conv_tuple(stride, nd, "stride"), _conv_tuple(dilation, nd, "dilation")
    padding, output_padding = _conv_tuple(padding, nd, "padding"), _conv_tuple(output_padding, nd, "output_padding")
    _check_positive(stride, "stride")
    _check_positive(dilation, "dilation")
    if any(p < 0 for p in padding + output_padding):
        raise RuntimeError("negative padding is not supported")
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={list(output_padding)}, stride={list(stride)}, dilation={list(dilation)}")
    k = weight.shape[2:]
    out = [(h - 1) * s - 2 * p + d * (kk - 1) + op + 1
           for h, s, p, d, kk, op in zip(input.shape[-nd:], stride, padding, dilation, k, output_padding)]
    if any(o <= 0 for o in out):
        raise RuntimeError(f"Given input size per channel: ({' x '.join(map(str, input.shape[-nd:]))}). "
                           f"Calculated output size per channel: ({' x '.join(map(str, out))}). Output size is too small")
    opts = _conv.ConvTransposeOptions(stride, padding, output_padding, int(groups), dilation)
    return _conv.ConvTransposeFunction.apply(input, weight, bias, opts)


# --- pooling ---
def _pool_pair(value, what, name):
    t = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) == 1:
        t = t * 2
    if len(t) != 2:
        raise RuntimeError(f"{name}: {what} must either be a single int, or a tuple of two ints")
    return t


def _pool_options(kernel_size, stride, padding, name):
    k = _pool_pair(kernel_size, "kernel_size", name)
    s = k if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _pool_pair(stride, "stride", name)
    return k, s, _pool_pair(padding, "padding", name)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    k, s, p = _pool_options(kernel_size, stride, padding, "max_pool2d")
    d = _pool_pair(dilation, "dilation", "max_pool2d")
    out, indices = _pool.MaxPool2dFunction.apply(input, k, s, p, d, bool(ceil_mode))
    return (out, indices) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    k, s, p = _pool_options(kernel_size, stride, padding, "avg_pool2d")
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    return _pool.AvgPool2dFunction.apply(input, k, s, p, bool(ceil_mode), bool(count_include_pad),
                                         divisor_override)


def adaptive_avg_pool2d(input, output_size):
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    else:
        output_size = tuple(output_size)
        if input.dim() <= len(output_size):
            raise ValueError(f"Input dimension should be at least {len(output_size) + 1}")
        output_size = tuple(v if v is not None else d for v, d in zip(output_size, input.shape[-len(output_size):]))
    return _pool.AdaptiveAvgPool2dFunction.apply(input, output_size)


# --- batch_norm / group_norm ---
def _verify_values_per_channel(input, values):
    if values == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-05):
    if input.dim() < 2:
        raise RuntimeError(f"batch_norm: expected input with at least 2 dims (N, C, ...), got {list(input.shape)}")
    c = input.shape[1]
    for t, what in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"),
                    (bias, "bias")):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{what} should contain {c} elements not {t.numel()}")
    n = input.shape[0] * math.prod(input.shape[2:])  # values per channel
    if training:
        _verify_values_per_channel(input, n)
    elif running_mean is None or running_var is None:
        raise RuntimeError("running_mean must be defined in evaluation mode")
    stats = (None, None) if training else (running_mean, running_var)
    y, mean, var = _norm.BatchNormFunction.apply(input, weight, bias, *stats, bool(training), float(eps))
    if training:
        _norm.update_running_stats(running_mean, running_var, mean, var, n, momentum)
    return y


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-05):
    input, weight, bias = autocast_inputs("group_norm", input, weight, bias)
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    c = input.shape[1]
    if num_groups <= 0 or c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input "
                           f"of shape {list(input.shape)} and num_groups={num_groups}")
    _verify_values_per_channel(input, input.shape[0] * c // num_groups * math.prod(input.shape[2:]))
    for t, what in ((weight, "weight"), (bias, "bias")):
        if t is not None and (t.dim() != 1 or t.numel() != c):
            raise RuntimeError(f"Expected {what} to be a vector of size equal to the number of channels in input, "
                               f"but got {what} of shape {list(t.shape)} and input of shape {list(input.shape)}")
    return _norm.GroupNormFunction.apply(input, weight, bias, int(num_groups), float(eps))[0]
