"""Drop-in twins of ``torch.nn.functional``: same names, positional order, keywords, defaults.

Thin on purpose: each function resolves its options (defaults, autocast, argument checks
that torch makes before its kernel runs) and calls one Function from ``torch_bp.ops``,
where the backward rule lives. Nothing here states a gradient.

NOTE: ``inplace=True`` (relu, leaky_relu, elu, silu, dropout) is accepted for signature
compatibility but computed out of place: the result is returned and the input is left
untouched, because an in-place write would put torch's CopyBackwards, not our rule, on the
output. Code that uses the returned tensor, as every module does, behaves the same. What
torch refuses to write into, we refuse too (:func:`_check_inplace`).
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
from .ops import attention as _attn  # attention family
from .ops import recurrent as _rnn  # recurrent family


# --- linear ---
def linear(input, weight, bias=None):
    input, weight, bias = autocast_inputs("linear", input, weight, bias)
    if input.dim() == 0:
        raise RuntimeError("linear: input must have at least 1 dimension, got a 0-d tensor")
    return _lin.LinearFunction.apply(input, weight, bias)


def linear_activation(input, weight, bias=None, activation="relu", approximate="none"):
    """``activation(linear(input, weight, bias))``, the bias and the activation applied in one pass
    after the matmul (:class:`~torch_bp.ops.linear.BiasActivationFunction`). torch_bp only (no
    torch.nn.functional twin). ``activation``: ``"relu"``, ``"gelu"`` (with ``approximate``
    ``"none"`` or ``"tanh"``, as :func:`gelu`) or ``"silu"``.
    """
    input, weight, bias = autocast_inputs("linear", input, weight, bias)
    if activation not in ("relu", "gelu", "silu"):
        raise ValueError(f"linear_activation: activation must be 'relu', 'gelu' or 'silu', got {activation!r}")
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    if input.dim() == 0:
        raise RuntimeError("linear: input must have at least 1 dimension, got a 0-d tensor")
    if bias is not None and bias.dtype != input.dtype:
        # as torch's linear (addmm) does for a bias of another dtype
        raise RuntimeError(f"linear_activation: bias of dtype {bias.dtype} does not match input dtype {input.dtype}")
    h = _lin.LinearFunction.apply(input, weight, None)
    return _lin.BiasActivationFunction.apply(h, bias, activation, approximate)[0]


# --- activations ---
def _check_inplace(input):
    """With ``inplace=True``: the errors torch gives before it writes into ``input`` (a leaf, or a
    view of a leaf, that requires grad; elements sharing memory, as in an expanded tensor)."""
    if torch.is_grad_enabled() and input.requires_grad:
        if input.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        if input._is_view() and input._base.is_leaf and input._base.requires_grad:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place "
                               "operation.")
    if torch._debug_has_internal_overlap(input) == 1:
        raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a "
                           "single memory location. Please clone() the tensor before performing the operation.")


def relu(input, inplace=False):
    if inplace:
        _check_inplace(input)
    return _act.ReLUFunction.apply(input)


def _floating_only(input, name):
    """torch's kernels of these layers are defined for floating dtypes only."""
    if not input.is_floating_point():
        raise NotImplementedError(f"{name}: not implemented for input of dtype {input.dtype} "
                                  "(a floating point input is needed)")


def leaky_relu(input, negative_slope=0.01, inplace=False):
    _floating_only(input, "leaky_relu")
    if inplace:
        _check_inplace(input)
    return _act.LeakyReLUFunction.apply(input, float(negative_slope))


def elu(input, alpha=1.0, inplace=False):
    _floating_only(input, "elu")
    if inplace:
        _check_inplace(input)
    return _act.ELUFunction.apply(input, float(alpha))


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    _floating_only(input, "gelu")
    return _act.GELUFunction.apply(input, approximate)


def silu(input, inplace=False):
    _floating_only(input, "silu")
    if inplace:
        _check_inplace(input)
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
    if not training or p == 0 or input.numel() == 0:  # the identity, as torch
        if not (torch.is_grad_enabled() and input.requires_grad):
            return input  # torch returns the input itself
        return _drop.DropoutFunction.apply(input, None, None)
    if inplace:
        _check_inplace(input)
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


def linear_cross_entropy(input, weight, target, bias=None, ignore_index=-100, reduction="mean",
                         label_smoothing=0.0, *, chunk_size=None, mode="fused"):
    """``cross_entropy(linear(input, weight, bias), target)`` over the last dim, for a language-model
    head, computed over chunks of rows so that the (N, V) logits never exist
    (:class:`~torch_bp.ops.loss.LinearCrossEntropyFunction`). torch_bp only.

    Args:
        input: (*, d) hidden states (any leading dims, flattened to N rows).
        weight: (V, d), as ``linear``'s (an ``nn.Linear(d, V)``'s weight).
        target: (*) class indices in [0, V) (int64 or uint8), ``input.shape[:-1]``.
        bias: (V,) or None.
        ignore_index, reduction, label_smoothing: as :func:`cross_entropy` (no class weights).
            ``reduction="none"`` returns a loss of ``target``'s shape.
        chunk_size: rows per chunk (default: as many as make about 2^24 logits).
        mode: ``"fused"`` (default): with a scalar loss (mean/sum) and a gradient to take,
            the gradients are computed chunk by chunk during the forward and saved (grad-sized:
            grad_x (N, d), grad_W (V, d)); no extra matmul. ``"recompute"``: only O(N) per-row
            statistics are saved and each chunk's logits are recomputed in backward (one extra
            matmul, ~4/3 the time). ``reduction="none"`` always recomputes.

    Same values and gradients as ``F.cross_entropy(F.linear(input, weight, bias).flatten(0, -2),
    target.flatten(), ...)`` (reshaped to ``target``'s shape for ``reduction="none"``).
    """
    input, weight, bias = autocast_inputs("linear", input, weight, bias)
    # under autocast: the matmuls in the autocast dtype, the loss in float32 (torch's cross_entropy)
    out_dtype = torch.float32 if torch.is_autocast_enabled(input.device.type) and input.is_floating_point() else None
    reduction = _reduction(None, None, reduction)
    if mode not in ("fused", "recompute"):
        raise ValueError(f"linear_cross_entropy: mode must be 'fused' or 'recompute', got {mode!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"linear_cross_entropy: chunk_size must be a positive integer, got {chunk_size!r}")
    if input.dim() == 0:
        raise RuntimeError("linear_cross_entropy: input must have at least 1 dimension, got a 0-d tensor")
    if weight.dim() != 2:
        raise RuntimeError(f"linear_cross_entropy: weight must be 2-d (num_classes, in_features), "
                           f"got shape {list(weight.shape)}")
    if input.shape[-1] != weight.shape[1]:
        raise RuntimeError(f"linear_cross_entropy: input of shape {list(input.shape)} and weight of shape "
                           f"{list(weight.shape)}: in_features {input.shape[-1]} != {weight.shape[1]} "
                           "(mat1 and mat2 shapes cannot be multiplied)")
    n_cls = weight.shape[0]
    if bias is not None and (bias.dim() > 1 or bias.numel() not in (1, n_cls)):
        raise RuntimeError(f"linear_cross_entropy: bias of shape {list(bias.shape)} does not broadcast to "
                           f"the {n_cls} classes (expected shape [{n_cls}])")
    for t, what in ((weight, "weight"), (bias, "bias")):
        if t is not None and t.dtype != input.dtype:
            raise RuntimeError(f"linear_cross_entropy: expected {what} of the input's dtype {input.dtype}, "
                               f"got {t.dtype}")
        if t is not None and t.device != input.device:
            raise RuntimeError(f"linear_cross_entropy: expected {what} on the input's device {input.device}, "
                               f"got {t.device}")
    if target.device != input.device:
        raise RuntimeError(f"linear_cross_entropy: expected target on the input's device {input.device}, "
                           f"got {target.device}")
    if input.dtype == torch.bool:  # torch's matmul (addmm) has no bool kernel
        raise NotImplementedError("linear_cross_entropy: matmul (addmm) not implemented for 'Bool'")
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise ValueError(f"linear_cross_entropy: expected target of shape {list(input.shape[:-1])} "
                         f"(input.shape[:-1]), got {list(target.shape)}")
    if not input.is_floating_point():
        raise NotImplementedError(f"linear_cross_entropy: not implemented for input of dtype {input.dtype}")
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {target.dtype}")
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    label_smoothing = max(float(label_smoothing), 0.0)  # as torch: a negative value is no smoothing
    if not torch.compiler.is_compiling() and torch._C._functorch.maybe_get_level(target) == -1:
        bad = (target != ignore_index) & ((target < 0) | (target >= n_cls))
        if bad.any():
            raise IndexError(f"Target {target[bad].reshape(-1)[0].item()} is out of bounds.")
    need = (input.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
    fused = need if (mode == "fused" and reduction != "none" and torch.is_grad_enabled() and any(need)) else None
    out = _loss.LinearCrossEntropyFunction.apply(input, weight, bias, target, reduction, int(ignore_index),
                                                 label_smoothing, None if chunk_size is None else int(chunk_size),
                                                 fused, out_dtype)[0]
    return out


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
    if not return_indices:
        return out
    return out, _pool.window_to_flat(indices, input.shape[-1], k, s, p, d)  # torch's flat indices


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
    # torch's order of checks: values per channel, eps (in F.batch_norm), then the kernel's
    if training and input.dim() >= 1:
        _verify_values_per_channel(input, input.shape[0] * math.prod(input.shape[2:]))
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    _check_norm_dtypes(input, (weight, bias, running_mean, running_var), "batch_norm")
    if input.dim() < 2:
        raise RuntimeError(f"batch_norm: expected input with at least 2 dims (N, C, ...), got {list(input.shape)}")
    c = input.shape[1]
    for t, what in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"),
                    (bias, "bias")):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{what} should contain {c} elements not {t.numel()}")
    n = input.shape[0] * math.prod(input.shape[2:])  # values per channel
    if not training and (running_mean is None or running_var is None):
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


# ====================================================================================
# --- scaled_dot_product_attention / multi_head_attention_forward --- (attention family)
# ====================================================================================
def _attention_seed(dropout_p):
    """The seed of the dropout masks of one attention call (drawn from torch's default generator)."""
    return int(torch.randint(0, 2 ** 62, (1,)).item()) if dropout_p > 0 else 0


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    query, key, value = autocast_inputs("scaled_dot_product_attention", query, key, value)
    if attn_mask is not None and attn_mask.is_floating_point():
        (attn_mask,) = autocast_inputs("scaled_dot_product_attention", attn_mask)
    if query.dim() < 2 or key.dim() < 2 or value.dim() < 2:
        raise RuntimeError(f"Expected query, key, and value to all be at least 2 dimensional, but got query.dim: "
                           f"{query.dim()} key.dim: {key.dim()} and value.dim: {value.dim()} instead.")
    if not (query.dtype == key.dtype == value.dtype):
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: "
                           f"{query.dtype} key.dtype: {key.dtype} and value.dtype: {value.dtype} instead.")
    if not (query.device == key.device == value.device):
        raise RuntimeError("Expected query, key, and value to have the same device type, but got "
                           f"{query.device}, {key.device} and {value.device} instead.")
    if query.shape[-1] != key.shape[-1]:
        raise RuntimeError(f"scaled_dot_product_attention: query and key must have the same last dim, got "
                           f"{query.shape[-1]} and {key.shape[-1]}")
    # as torch (2.13, CPU): a key/value length mismatch passes only when there is no query row
    # (an empty batch or L = 0) or the value is empty; an empty key does not excuse it
    lenient = math.prod(query.shape[:-1]) == 0 or value.numel() == 0
    empty = query.numel() == 0 or key.numel() == 0 or value.numel() == 0
    if key.shape[-2] != value.shape[-2] and not lenient:
        raise RuntimeError(f"scaled_dot_product_attention: key and value must have the same sequence length, got "
                           f"{key.shape[-2]} and {value.shape[-2]}")
    if not 0.0 <= dropout_p <= 1.0:
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {dropout_p}")
    if attn_mask is not None:
        if is_causal and not empty:  # as torch: an empty input returns before this check
            raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when "
                               "is_causal=True")
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise RuntimeError(f"Expected attn_mask dtype to be bool or float or to match query dtype, but got "
                               f"attn_mask.dtype: {attn_mask.dtype} and  query.dtype: {query.dtype} instead.")
    groups = 1
    if enable_gqa and query.dim() >= 3 and key.dim() >= 3:
        hq, hk, hv = query.shape[-3], key.shape[-3], value.shape[-3]
        if hk != hv or hq % hk:
            raise RuntimeError("Number of heads in key and value must divide the number of heads in query "
                               f"(got {hq} query heads, {hk} key heads and {hv} value heads)")
        groups = hq // hk
        if groups == 0:  # no query heads: as torch, key and value repeated 0 times (zero gradients)
            key, value, groups = key.narrow(-3, 0, 0), value.narrow(-3, 0, 0), 1
    batch = [t.shape[:-2] for t in (query, key, value)]
    if groups > 1:
        batch = [b[:-1] for b in batch]
    # as torch: with an empty input the output is zeros shaped by q k^T; only query and key are matched
    try:
        if empty:
            _attn.broadcast_shape(*batch[:2])
        else:
            target = _attn.broadcast_shape(*batch) + ((query.shape[-3],) if groups > 1 else ()) \
                + (query.shape[-2], key.shape[-2])
            if attn_mask is not None and _attn.broadcast_shape(attn_mask.shape, target) != target:
                raise RuntimeError(f"attn_mask does not broadcast to {list(target)}")
    except RuntimeError as e:
        raise RuntimeError(f"scaled_dot_product_attention: shapes do not broadcast: query {list(query.shape)}, "
                           f"key {list(key.shape)}, value {list(value.shape)}"
                           + ("" if attn_mask is None else f", attn_mask {list(attn_mask.shape)}") + f" ({e})")
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    seed = _attention_seed(dropout_p)
    return _attn.ScaledDotProductAttentionFunction.apply(query, key, value, attn_mask, bool(is_causal), float(scale),
                                                         groups, float(dropout_p), seed, None)[0]


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
                                 training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
                                 v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                                 is_causal=False):
    return _multi_head_attention(
        query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
        add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training, key_padding_mask, need_weights,
        attn_mask, use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight, static_k, static_v,
        average_attn_weights, is_causal, batch_first=False)


def _multi_head_attention(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k,
                          bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training,
                          key_padding_mask, need_weights, attn_mask, use_separate_proj_weight, q_proj_weight,
                          k_proj_weight, v_proj_weight, static_k, static_v, average_attn_weights, is_causal,
                          batch_first):
    """multi_head_attention_forward for (L, N, E) inputs, or (N, L, E) with ``batch_first`` (the module's).

    The in- and out-projections are our linear rule, the attention our attention rules; the
    outputs come straight out of them (no transpose after the last rule) in the layout asked for.
    """
    import torch.nn.functional as TF  # torch's argument checks, for the same errors and messages

    is_batched = TF._mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    key_padding_mask = TF._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                          other_type=TF._none_or_dtype(attn_mask), other_name="attn_mask",
                                          target_type=query.dtype)
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer module "
                           "method `generate_square_subsequent_mask` to create this mask.")
    causal = is_causal and key_padding_mask is None and not need_weights
    if causal:
        attn_mask = None  # the hint says the mask is causal: our rule applies causality by position
    else:
        attn_mask = TF._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                       target_type=query.dtype, check_other=False)
    # to (N, L, E) views: the inputs of our linear rule
    if not is_batched:
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    elif not batch_first:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    bsz, tgt_len, embed_dim = query.shape
    src_len = key.shape[1]
    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if use_separate_proj_weight:
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's "
                                 f"{value.shape[:2]}")
    elif key.shape != value.shape:
        raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")

    # in-projection (one linear for self-attention, as torch)
    b_q = b_k = b_v = None
    if in_proj_bias is not None:
        b_q, b_k, b_v = in_proj_bias.chunk(3)
    if not use_separate_proj_weight:
        if in_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is False but in_proj_weight is None")
        if query is key and key is value:
            q, k, v = linear(query, in_proj_weight, in_proj_bias).chunk(3, -1)
        else:
            w_q, w_k, w_v = in_proj_weight.chunk(3)
            q, k, v = linear(query, w_q, b_q), linear(key, w_k, b_k), linear(value, w_v, b_v)
    else:
        for w, n in ((q_proj_weight, "q"), (k_proj_weight, "k"), (v_proj_weight, "v")):
            if w is None:
                raise AssertionError(f"use_separate_proj_weight is True but {n}_proj_weight is None")
        eq, ek, ev = query.shape[-1], key.shape[-1], value.shape[-1]  # torch's _in_projection checks
        for w, want, n in ((q_proj_weight, (eq, eq), "query"), (k_proj_weight, (eq, ek), "key"),
                           (v_proj_weight, (eq, ev), "value")):
            if tuple(w.shape) != want:
                raise AssertionError(f"expecting {n} weights shape of {want}, but got {w.shape}")
        for b, n in ((b_q, "query"), (b_k, "key"), (b_v, "value")):
            if b is not None and tuple(b.shape) != (eq,):
                raise AssertionError(f"expecting {n} bias shape of {(eq,)}, but got {b.shape}")
        q, k, v = linear(query, q_proj_weight, b_q), linear(key, k_proj_weight, b_k), linear(value, v_proj_weight, b_v)

    # masks -> one additive float mask broadcastable to (N, H, L, S)
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            if attn_mask.shape != (tgt_len, src_len):
                raise RuntimeError(f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be "
                                   f"{(tgt_len, src_len)}.")
            attn_mask = attn_mask.reshape(1, 1, tgt_len, src_len)
        elif attn_mask.dim() == 3:
            if is_batched and attn_mask.shape != (bsz * num_heads, tgt_len, src_len):
                raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                                   f"{(bsz * num_heads, tgt_len, src_len)}.")
            attn_mask = attn_mask.reshape(bsz, num_heads, tgt_len, src_len)
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")

    q = q.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)   # (N, H, L, D)
    if bias_k is not None and bias_v is not None:
        if static_k is not None:
            raise AssertionError("bias cannot be added to static key.")
        if static_v is not None:
            raise AssertionError("bias cannot be added to static value.")
        k = torch.cat([k, bias_k.reshape(1, 1, embed_dim).expand(bsz, 1, embed_dim)], 1)
        v = torch.cat([v, bias_v.reshape(1, 1, embed_dim).expand(bsz, 1, embed_dim)], 1)
        if attn_mask is not None:
            attn_mask = torch.nn.functional.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = torch.nn.functional.pad(key_padding_mask, (0, 1))
    elif bias_k is not None:
        raise AssertionError("bias_k is set but bias_v is None")
    elif bias_v is not None:
        raise AssertionError("bias_v is set but bias_k is None")
    k = k.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)   # (N, H, S, D)
    v = v.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)
    for name, static in (("k", static_k), ("v", static_v)):
        if static is not None:
            if static.size(0) != bsz * num_heads:
                raise AssertionError(f"expecting static_{name}.size(0) of {bsz * num_heads}, but got {static.size(0)}")
            if static.size(2) != head_dim:
                raise AssertionError(f"expecting static_{name}.size(2) of {head_dim}, but got {static.size(2)}")
    if static_k is not None:
        k = static_k.reshape(bsz, num_heads, -1, head_dim)
    if static_v is not None:
        v = static_v.reshape(bsz, num_heads, -1, head_dim)
    if add_zero_attn:
        k = torch.cat([k, k.new_zeros(bsz, num_heads, 1, head_dim)], 2)
        v = torch.cat([v, v.new_zeros(bsz, num_heads, 1, head_dim)], 2)
        if attn_mask is not None:
            attn_mask = torch.nn.functional.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = torch.nn.functional.pad(key_padding_mask, (0, 1))
    src_len = k.shape[2]
    if key_padding_mask is not None:
        TF._check_key_padding_mask(key_padding_mask, src_len, bsz)
        kpm = key_padding_mask.reshape(bsz, 1, 1, src_len)
        attn_mask = kpm if attn_mask is None else attn_mask + kpm
    if not training:
        dropout_p = 0.0
    seed = _attention_seed(dropout_p)
    scale = math.sqrt(1.0 / float(head_dim))  # as torch's
    if not is_batched:  # attention on (H, L, D): the weights come out as (H, L, S) or (L, S)
        q, k, v = q[0], k[0], v[0]
        attn_mask = None if attn_mask is None else attn_mask[0]
    if need_weights:
        o, weights, _ = _attn.AttentionWeightsFunction.apply(q, k, v, attn_mask, False, scale, float(dropout_p),
                                                             seed, bool(average_attn_weights))
    else:
        # o in the memory order of the out-projection's input below, which is then a view of it
        perm = (1, 0, 2) if not is_batched else (0, 2, 1, 3) if batch_first else (2, 0, 1, 3)
        o, _ = _attn.ScaledDotProductAttentionFunction.apply(q, k, v, attn_mask, causal, scale, 1,
                                                             float(dropout_p), seed, perm)
        weights = None
    # (N, H, L, D) -> the output layout, then the out-projection (its output is the result)
    if not is_batched:
        o = o.transpose(0, 1).reshape(tgt_len, embed_dim)
    elif batch_first:
        o = o.transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
    else:
        o = o.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
    return linear(o, out_proj_weight, out_proj_bias), weights


# ====================================================================================
# --- lstm / gru / rnn_tanh / rnn_relu --- (recurrent family)
# ====================================================================================
# Not in torch.nn.functional: these mirror the ATen ops torch.nn.LSTM/GRU/RNN call
# (torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu), with the same positional
# arguments, and also take what the modules handle around those ops: a PackedSequence as
# ``input`` (variable lengths, ``hx`` in the caller's batch order), an unbatched (T, I)
# input, and ``hx=None`` (zeros). ``params`` is the flat weight list in torch's order
# (``module._flat_weights``). Returns (output, h_n, c_n) for lstm and (output, h_n) else,
# ``output`` a PackedSequence when the input is one.
def lstm(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
         batch_first=False):
    return _recurrent("LSTM", input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


def gru(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
        batch_first=False):
    return _recurrent("GRU", input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


def rnn_tanh(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
             batch_first=False):
    return _recurrent("RNN_TANH", input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
                      batch_first)


def rnn_relu(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
             batch_first=False):
    return _recurrent("RNN_RELU", input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
                      batch_first)


_RNN_NAMES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def _recurrent(mode, input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """The checks torch.nn.LSTM/GRU/RNN make (same exception types and messages), then one Function."""
    from torch.nn.utils.rnn import PackedSequence

    params = list(params)
    packed = isinstance(input, PackedSequence)
    sorted_indices = unsorted_indices = batch_sizes = None
    if packed:
        input, batch_sizes, sorted_indices, unsorted_indices = input
    (input,) = autocast_inputs("rnn", input)
    params = list(autocast_inputs("rnn", *params))
    D = 2 if bidirectional else 1
    per = 2 + 2 * bool(has_biases)
    if num_layers < 1 or not params or len(params) % (num_layers * D):
        raise RuntimeError(f"{_RNN_NAMES[mode]}: expected a multiple of {num_layers * D} weights for "
                           f"num_layers={num_layers}, bidirectional={bidirectional}, got {len(params)}")
    k = len(params) // (num_layers * D)
    proj = mode == "LSTM" and k == per + 1
    if k != per + proj:
        raise RuntimeError(f"{_RNN_NAMES[mode]}: expected {per} weights per layer and direction "
                           f"(has_biases={has_biases}), got {k}")
    gates = _rnn.gate_count(mode)
    hidden_size = params[1].shape[0] // gates
    out_size = params[per].shape[0] if proj else hidden_size
    input_size = params[0].shape[1]
    name = _RNN_NAMES[mode]
    if input.dtype != params[0].dtype and not torch._C._is_any_autocast_enabled():
        if packed and mode == "LSTM":  # torch's module checks nothing here: its kernel raises
            raise RuntimeError(f"self and mat2 must have the same dtype, but got {input.dtype} and {params[0].dtype}")
        raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({params[0].dtype}). "
                         f"Convert input: input.to({params[0].dtype}), or convert model: model.to({input.dtype})")
    odd = [p.dtype for p in params if p.dtype != params[0].dtype]
    if odd and not torch._C._is_any_autocast_enabled():  # torch's kernels: one dtype for every weight
        raise RuntimeError(f"self and mat2 must have the same dtype, but got {params[0].dtype} and {odd[0]} "
                           f"(every weight and bias of the {_RNN_NAMES[mode]} must have one dtype)")
    is_lstm = mode == "LSTM"
    unbatched = False
    if packed:
        if input.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {input.dim()}")
        mini_batch = int(batch_sizes[0])
    else:
        if input.dim() not in (2, 3):
            tail = "instead" if is_lstm else "tensor instead"
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D {tail}")
        unbatched = input.dim() == 2
        mini_batch = 1 if unbatched else (input.shape[0] if batch_first else input.shape[1])
    if input.shape[-1] != input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {input_size}, got {input.shape[-1]}")
    if not packed and input.shape[1 if batch_first and not unbatched else 0] == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    state_dims = 2 if unbatched else 3
    expect_h = (num_layers * D, mini_batch, out_size)
    expect_c = (num_layers * D, mini_batch, hidden_size)
    if hx is None:
        h0 = input.new_zeros(expect_h)
        c0 = input.new_zeros(expect_c) if is_lstm else None
    else:
        h0, c0 = (hx[0], hx[1]) if is_lstm else (hx, None)
        if not packed:
            got = (h0.dim(), c0.dim()) if is_lstm else (h0.dim(),)
            if any(g != state_dims for g in got):
                kind = "unbatched 2-D" if unbatched else "batched 3-D"
                what = "hx and cx" if is_lstm else "hx"
                dims = f"({got[0]}-D, {got[1]}-D) tensors" if is_lstm else f"{got[0]}-D tensor"
                raise RuntimeError(f"For {kind} input, {what} should also be {state_dims}-D but got {dims}")
        for t, expect, label in ((h0, expect_h, "hidden[0]" if is_lstm else "hidden"), (c0, expect_c, "hidden[1]")):
            if t is None:
                continue
            shape = (t.shape[0], 1) + tuple(t.shape[1:]) if unbatched else tuple(t.shape)
            if shape != expect:
                raise RuntimeError(f"Expected {label} size {expect}, got {list(shape)}")
    opts = _rnn.RNNOptions(mode, int(num_layers), bool(bidirectional), bool(has_biases), proj,
                           float(dropout) if train else 0.0, bool(batch_first) and not packed, unbatched,
                           None if batch_sizes is None else tuple(int(b) for b in batch_sizes))
    if hx is None and unbatched:  # the Function takes (L*D, H) states with an unbatched input
        h0 = h0.squeeze(1)
        c0 = None if c0 is None else c0.squeeze(1)
    seed = int(torch.randint(0, 2 ** 62, (1,)).item()) if opts.dropout > 0 and num_layers > 1 else 0
    outs = _rnn.FUNCTIONS[mode].apply(opts, input, h0, c0, sorted_indices, unsorted_indices, seed, *params)
    output = outs[0]
    if packed:
        output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
    return (output, outs[1], outs[2]) if is_lstm else (output, outs[1])
