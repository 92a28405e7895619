"""``torch_bp.functional``: losses. See the package docstring."""
from __future__ import annotations

import warnings

import torch

from .._amp import autocast_inputs
from ..ops._util import plain_eager
from ..ops import loss as _loss
from .distance import pairwise_distance
from .linear import linear as _linear
from ._checks import (
    _check_class_targets,
    _check_class_weight,
    _floating_only,
    _int_check,
    _legacy_reduction,
    _no_grad_for,
    _pointwise_loss_args,
    _reduction,
)


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


class _LogitsShape:
    """What cross_entropy's checks read of the logits (rank, shape, dtype), without a tensor of them."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = torch.Size(shape), dtype

    def dim(self):
        return len(self.shape)

    def is_floating_point(self):
        return self.dtype.is_floating_point


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                         ignore_index=None, label_smoothing=0.0, options=None, chunk_size=None, mode="fused"):
    """torch's ``F.linear_cross_entropy``: ``cross_entropy(linear(input, linear_weight, linear_bias),
    target, weight=weight, ...)``, same signature, semantics and errors, plus two keyword-only
    extras of ours. ``weight`` is the class weight, as in torch.

    Class-index targets of a (C, in_features) head run :class:`~torch_bp.ops.loss.LinearCrossEntropyFunction`:
    over chunks of rows, so the (N, C) logits never exist. Probability targets (``target`` of the
    logits' shape) and K-dimensional heads (``linear_weight`` (C, d_1, ..., d_K, in_features)) are
    composed of our ``linear`` and ``cross_entropy`` rules (the logits are materialised, as torch's).

    Args (beyond torch's):
        options: torch's :class:`torch.nn.LinearCrossEntropyOptions` or None; we always chunk, its
            ``batch_chunk_size`` (when given) is our ``chunk_size``; the rest concern torch's kernels.
        chunk_size: rows per chunk (default: as many as make about 2^24 logits).
        mode: ``"fused"`` (default): with a scalar loss (mean/sum) and a gradient to take,
            the gradients are computed chunk by chunk during the forward and saved (grad-sized:
            grad_x (N, d), grad_W (C, d)); no extra matmul. ``"recompute"``: nothing beyond the
            inputs is saved and each chunk's logits are recomputed in backward (one extra
            matmul, ~4/3 the time). ``reduction="none"`` always recomputes.
    """
    if mode not in ("fused", "recompute"):
        raise ValueError(f"linear_cross_entropy: mode must be 'fused' or 'recompute', got {mode!r}")
    if chunk_size is None and options is not None:
        chunk_size = getattr(options, "batch_chunk_size", None)
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"linear_cross_entropy: chunk_size must be a positive integer, got {chunk_size!r}")
    # torch's checks, in torch's order
    if input.dim() < 1 or input.dim() > 2:
        raise RuntimeError(f"expected input with dimensionality 1 or 2, got {input.dim()}")
    if linear_weight.dim() < 2:
        raise RuntimeError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.dim()}")
    if input.shape[-1] != linear_weight.shape[-1]:
        raise RuntimeError("expected equal input and linear_weight last dimensions (in_features), "
                           f"got {input.shape[-1]} and {linear_weight.shape[-1]}, respectively")
    n_cls, out_features = linear_weight.shape[0], tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (n_cls, *out_features):
        raise RuntimeError(f"expected linear_bias shape {(n_cls, *out_features)}, got {tuple(linear_bias.shape)}")
    if out_features and input.dim() == 1:
        raise RuntimeError(f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires"
                           f" batched input, (N, {input.shape[-1]}), got unbatched input with shape "
                           f"{tuple(input.shape)}")
    logits_shape = (*input.shape[:-1], n_cls, *out_features)
    probabilities = tuple(target.shape) == logits_shape
    if probabilities and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    ignore_index = -100 if ignore_index is None else ignore_index
    if probabilities or out_features:  # composed of our linear and cross_entropy rules
        w2 = linear_weight.reshape(-1, input.shape[-1])
        logits = _linear(input, w2, None if linear_bias is None else linear_bias.reshape(-1)).reshape(logits_shape)
        if out_features and not probabilities and reduction != "none" and tuple(target.shape) == (
                input.shape[0], *out_features):
            # class indices of a K-dim head: the (N * d_1 ... d_K, C) rows of the class dim (the same
            # sums: each position is a row of its own)
            logits, target = logits.movedim(1, -1).reshape(-1, n_cls), target.reshape(-1)
        return cross_entropy(logits, target, weight, ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing)

    input, linear_weight, linear_bias, weight = autocast_inputs("linear_cross_entropy", input, linear_weight,
                                                                linear_bias, weight)
    # under autocast: the matmuls in the autocast dtype, the loss in float32 (torch's cross_entropy)
    out_dtype = torch.float32 if torch.is_autocast_enabled(input.device.type) and input.is_floating_point() else None
    reduction = _reduction(None, None, reduction)
    for t, what in ((linear_weight, "linear_weight"), (linear_bias, "linear_bias")):  # torch's linear (addmm)
        if t is not None and t.dtype != input.dtype:
            raise RuntimeError(f"linear_cross_entropy: expected {what} of the input's dtype {input.dtype}, "
                               f"got {t.dtype}")
        if t is not None and t.device != input.device:
            raise RuntimeError(f"linear_cross_entropy: expected {what} on the input's device {input.device}, "
                               f"got {t.device}")
    if input.dtype == torch.bool:  # torch's matmul (addmm) has no bool kernel
        raise NotImplementedError("linear_cross_entropy: matmul (addmm) not implemented for 'Bool'")
    if not input.is_floating_point():
        raise NotImplementedError(f"linear_cross_entropy: not implemented for input of dtype {input.dtype}")
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    label_smoothing = max(float(label_smoothing), 0.0)  # as torch: a negative value is no smoothing
    # the logits' checks of cross_entropy (on a shape-only stand-in: no logits are made)
    target = _check_class_targets(_LogitsShape(logits_shape, input.dtype), target, weight, ignore_index,
                                  "cross_entropy")
    need = (input.requires_grad, linear_weight.requires_grad, linear_bias is not None and linear_bias.requires_grad)
    fused = need if (mode == "fused" and reduction != "none" and torch.is_grad_enabled() and any(need)) else None
    return _loss.LinearCrossEntropyFunction.apply(input, linear_weight, linear_bias, target, weight, reduction,
                                                  int(ignore_index), label_smoothing,
                                                  None if chunk_size is None else int(chunk_size), fused, out_dtype)[0]


# --- more pointwise losses (rules: the pointwise pattern of torch_bp.ops.loss) ---
def _data_checks():
    """torch's checks of values (not under torch.compile tracing or torch.func transforms)."""
    return plain_eager()


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    input, target, weight = autocast_inputs("binary_cross_entropy", input, target, weight)
    reduction = _reduction(size_average, reduce, reduction)
    if target.size() != input.size():
        raise ValueError(f"Using a target size ({target.size()}) that is different to the input size "
                         f"({input.size()}) is deprecated. Please ensure they have the same size.")
    if weight is not None:
        weight = weight.expand(torch.broadcast_shapes(target.size(), weight.size()))
        if weight.shape != input.shape:  # torch's kernel writes a loss of the input's shape
            raise RuntimeError(f"The size of tensor weight {list(weight.shape)} must match the input's "
                               f"{list(input.shape)} (binary_cross_entropy)")
    _floating_only(input, "binary_cross_entropy")
    if target.dtype != input.dtype or (weight is not None and weight.dtype != input.dtype):
        raise RuntimeError(f"expected scalar type {input.dtype} for target and weight (binary_cross_entropy), "
                           f"got {target.dtype}" + ("" if weight is None else f" and {weight.dtype}"))
    _no_grad_for("binary_cross_entropy", weight=weight)
    if _data_checks() and input.numel():
        if not bool(((input >= 0) & (input <= 1)).all()):  # NaN fails too, as torch's check
            raise RuntimeError("all elements of input should be between 0 and 1")
        if not bool(((target >= 0) & (target <= 1)).all()):
            raise RuntimeError("all elements of target should be between 0 and 1")
    return _loss.BCELossFunction.apply(input, target, weight, reduction, ())


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    input, target = autocast_inputs("kl_div", input, target)
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce, reduction)
    elif reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                      "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                      stacklevel=2)
    if reduction != "batchmean":
        reduction = _reduction(None, None, reduction)
    torch.broadcast_shapes(input.shape, target.shape)
    if not (input.is_floating_point() and target.is_floating_point()):
        raise RuntimeError("kl_div: Integral inputs not supported.")
    return _loss.KLDivLossFunction.apply(input, target, reduction, (bool(log_target),))


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None,
                     reduction="mean"):
    input, target = autocast_inputs("poisson_nll_loss", input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not a valid value for reduction")
    torch.broadcast_shapes(input.shape, target.shape)
    _int_check(input, target, "poisson_nll_loss", RuntimeError)
    return _loss.PoissonNLLLossFunction.apply(input, target, reduction, (bool(log_input), bool(full), float(eps)))


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    input, target, var = autocast_inputs("gaussian_nll_loss", input, target, var)
    if isinstance(var, float):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        var = var * torch.ones_like(input)
    elif _data_checks() and bool((var < 0).any()):
        raise ValueError("var has negative entry/entries")
    if var.size() != input.size():  # torch's homoscedastic cases (one dim of var short or of size 1)
        if input.size()[:-1] == var.size():
            var = var.unsqueeze(-1)
        elif not (input.dim() == var.dim()
                  and sum(v for i, v in zip(input.size(), var.size()) if i != v) == 1):
            raise ValueError("var is of incorrect size")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not valid")
    torch.broadcast_shapes(input.shape, target.shape, var.shape)
    _int_check(input, target, "gaussian_nll_loss", RuntimeError)
    return _loss.GaussianNLLLossFunction.apply(input, target, var, reduction, (bool(full), float(eps)))


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    input, target = autocast_inputs("soft_margin_loss", input, target)
    reduction = _reduction(size_average, reduce, reduction)
    if torch.broadcast_shapes(input.shape, target.shape) != input.shape:
        raise RuntimeError(f"output with shape {list(input.shape)} doesn't match the broadcast shape "
                           f"{list(torch.broadcast_shapes(input.shape, target.shape))} (soft_margin_loss)")
    _floating_only(input, "soft_margin_loss")
    _no_grad_for("soft_margin_loss", target=target)
    return _loss.SoftMarginLossFunction.apply(input, target, reduction, ())


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None, reduction="mean"):
    input, target = autocast_inputs("hinge_embedding_loss", input, target)
    if input.is_complex():  # as torch, whose clamp is not implemented for complex dtypes
        raise NotImplementedError("clamp is not supported for complex types (hinge_embedding_loss)")
    reduction = _reduction(size_average, reduce, reduction)
    torch.broadcast_shapes(input.shape, target.shape)
    if input.dtype == torch.bool:
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported (hinge_embedding_loss)")
    if not input.is_floating_point():  # as torch: an integer input gives an integer loss (no mean)
        if reduction == "mean":
            raise RuntimeError("mean(): could not infer output dtype. Input dtype must be either a floating point "
                               f"or complex dtype. Got: {input.dtype} (hinge_embedding_loss)")
        return _loss.HingeEmbeddingLossFunction.apply(input, target, reduction, (float(margin),)).to(input.dtype)
    return _loss.HingeEmbeddingLossFunction.apply(input, target, reduction, (float(margin),))


def margin_ranking_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    input1, input2, target = autocast_inputs("margin_ranking_loss", input1, input2, target)
    reduction = _reduction(size_average, reduce, reduction)
    if input1.dim() != input2.dim() or input1.dim() != target.dim():
        raise RuntimeError(f"margin_ranking_loss : All input tensors should have same dimension but got sizes: "
                           f"input1: {input1.size()}, input2: {input2.size()}, target: {target.size()} ")
    torch.broadcast_shapes(input1.shape, input2.shape, target.shape)
    if torch.bool in (input1.dtype, input2.dtype):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported "
                           "(margin_ranking_loss)")
    return _loss.MarginRankingLossFunction.apply(input1, input2, target, reduction, (float(margin),))


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    input, target, weight = autocast_inputs("multilabel_soft_margin_loss", input, target, weight)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if input.dim() == 0:
        raise IndexError("Dimension specified as -1 but tensor has no dimensions")
    torch.broadcast_shapes(input.shape, target.shape, *(() if weight is None else (weight.shape,)))
    _floating_only(input, "multilabel_soft_margin_loss")
    if reduction not in ("none", "mean", "sum"):  # torch computes the loss first, then rejects it
        raise ValueError(reduction + " is not valid")
    return _loss.MultiLabelSoftMarginLossFunction.apply(input, target, weight, reduction, ())


# --- row losses: cosine embedding, triplet, multi-margin, multi-label margin ---
def _no_low_precision_cpu(input, kernel):
    """As torch: its CPU kernel of these losses has no bfloat16/float16 version."""
    if input.device.type == "cpu" and input.dtype in (torch.bfloat16, torch.float16):
        name = "BFloat16" if input.dtype == torch.bfloat16 else "Half"
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{name}'")


def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    input1, input2, target = autocast_inputs("cosine_embedding_loss", input1, input2, target)
    if input1.is_complex() or input2.is_complex():  # as torch, whose clamp is not implemented for complex dtypes
        raise NotImplementedError("clamp is not supported for complex types (cosine_embedding_loss)")
    reduction = _reduction(size_average, reduce, reduction)
    if target.dim() not in (0, 1):
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    if target.dim() == 1 and not (input1.dim() == 2 and input2.dim() == 2):
        raise RuntimeError(f"1D target tensor expects 2D input tensors, but found inputs with sizes "
                           f"{list(input1.shape)} and {list(input2.shape)}.")
    if target.dim() == 0 and not (input1.dim() == 1 and input2.dim() == 1):
        raise RuntimeError(f"0D target tensor expects 1D input tensors, but found inputs with sizes "
                           f"{list(input1.shape)} and {list(input2.shape)}.")
    rows = torch.broadcast_shapes(input1.shape, input2.shape)[:-1]  # torch's size error
    torch.broadcast_shapes(rows, target.shape)
    if not torch.promote_types(input1.dtype, input2.dtype).is_floating_point:
        raise RuntimeError("cosine_embedding_loss: expected floating point inputs")
    return _loss.CosineEmbeddingLossFunction.apply(input1, input2, target, float(margin), reduction)


def _triplet_dims(anchor, positive, negative):
    if not anchor.dim() == positive.dim() == negative.dim():
        raise RuntimeError(f"The anchor, positive, and negative tensors are expected to have the same number of "
                           f"dimensions, but got: anchor {anchor.dim()}D, positive {positive.dim()}D, and negative "
                           f"{negative.dim()}D inputs")


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, size_average=None,
                        reduce=None, reduction="mean"):
    """Composed: our pairwise_distance rule for the three distances, then :class:`TripletHingeFunction`."""
    anchor, positive, negative = autocast_inputs("triplet_margin_loss", anchor, positive, negative)
    reduction = _reduction(size_average, reduce, reduction)
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    _triplet_dims(anchor, positive, negative)
    d_ap = pairwise_distance(anchor, positive, p, eps)
    d_an = pairwise_distance(anchor, negative, p, eps)
    d_pn = pairwise_distance(positive, negative, p, eps) if swap else None
    return _loss.TripletHingeFunction.apply(d_ap, d_an, d_pn, float(margin), reduction)


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin=1.0,
                                      swap=False, reduction="mean"):
    """Composed: ``distance_function`` (default: our pairwise_distance), then :class:`TripletHingeFunction`."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if margin <= 0:
        raise ValueError(f"TripletMarginWithDistanceLoss: expected margin to be greater than 0, got {margin} instead")
    _triplet_dims(anchor, positive, negative)
    dist = pairwise_distance if distance_function is None else distance_function
    d_ap, d_an = dist(anchor, positive), dist(anchor, negative)
    d_pn = dist(positive, negative) if swap else None
    return _loss.TripletHingeFunction.apply(d_ap, d_an, d_pn, float(margin), reduction)


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None, reduction="mean"):
    input, weight = autocast_inputs("multi_margin_loss", input, weight)
    reduction = _reduction(size_average, reduce, reduction)
    if p not in (1, 2):
        raise ValueError("only p == 1 and p == 2 supported")
    if weight is not None and weight.dim() != 1:
        raise ValueError("weight must be one-dimensional")
    if input.dim() > 2 or (input.dim() == 2 and input.shape[1] == 0 and input.shape[0] > 0):
        raise RuntimeError(f"Expected non-empty vector or matrix with optional 0-dim batch size, but got: "
                           f"{list(input.shape)}")
    c = input.shape[-1] if input.dim() else 1
    n = input.shape[0] if input.dim() == 2 else 1
    if target.numel() != n or (input.dim() == 2 and target.dim() != 1) or target.dim() > 1:
        raise RuntimeError(f"inconsistent target size, expected {n} but got {list(target.shape)}")
    if weight is not None and weight.numel() != c:
        raise RuntimeError(f"inconsistent weight size, expected {c} but got {list(weight.shape)}")
    _floating_only(input, "multi_margin_loss")
    _no_low_precision_cpu(input, "multi_margin_loss_cpu_kernel")
    if target.dtype != torch.int64:
        raise RuntimeError(f"expected scalar type Long but found {target.dtype} (multi_margin_loss target)")
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(f"expected scalar type {input.dtype} but found {weight.dtype} (multi_margin_loss weight)")
    _no_grad_for("multi_margin_loss", weight=weight)
    if _data_checks() and target.numel() and bool(((target < 0) | (target >= c)).any()):
        raise RuntimeError("target out of range")
    # a vector input takes its target's shape: (1,) gives torch's (1,) unreduced loss, () a 0-d one
    x = input if input.dim() == 2 else input.reshape((1, c) if target.dim() == 1 else (c,))
    return _loss.MultiMarginLossFunction.apply(x, target, weight, int(p), float(margin), reduction)


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    input = autocast_inputs("multilabel_margin_loss", input)[0]
    reduction = _reduction(size_average, reduce, reduction)
    if input.dim() > 2 or (input.dim() == 2 and input.shape[1] == 0 and input.shape[0] > 0):
        raise RuntimeError(f"Expected non-empty vector or matrix with optional 0-dim batch size, but got: "
                           f"{list(input.shape)}")
    if target.shape != input.shape:
        raise RuntimeError(f"inconsistent target size: {list(target.shape)} for input of size: {list(input.shape)}")
    _floating_only(input, "multilabel_margin_loss")
    _no_low_precision_cpu(input, "multilabel_margin_loss_forward_out_frame")
    if target.dtype != torch.int64:
        raise RuntimeError(f"expected scalar type Long but found {target.dtype} (multilabel_margin_loss target)")
    c = input.shape[-1] if input.dim() else 1
    if _data_checks() and target.numel() and bool(((target < -1) | (target >= c)).any()):
        raise RuntimeError("argument #2 'target' is out of range")
    x, t = (input, target) if input.dim() else (input.reshape(1), target.reshape(1))
    out = _loss.MultiLabelMarginLossFunction.apply(x, t, reduction)
    return out.reshape(()) if input.dim() == 0 and reduction == "none" else out


def _ctc_check(ok, message):
    if not ok:
        raise RuntimeError(message + " (while checking arguments for ctc_loss_allocate_outputs)")


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    # torch's checks in torch's order: the reduction (Python), the argument types (its overloads: both lengths
    # tensors, or both sequences of ints), then at::ctc_loss's and ctc_loss_allocate_outputs' checks
    log_probs, = autocast_inputs("ctc_loss", log_probs)
    reduction = _reduction(None, None, reduction)
    as_tensors = isinstance(input_lengths, torch.Tensor) and isinstance(target_lengths, torch.Tensor)
    as_lists = all(isinstance(x, (list, tuple)) for x in (input_lengths, target_lengths))
    if not (as_tensors or as_lists) or isinstance(blank, bool) or not isinstance(blank, int) \
            or not isinstance(zero_infinity, bool):
        raise TypeError("ctc_loss(): expected (Tensor log_probs, Tensor targets, input_lengths, target_lengths, "
                        "int blank, str reduction, bool zero_infinity) with input_lengths and target_lengths both "
                        f"Tensors or both tuples of ints; got {type(input_lengths).__name__} and "
                        f"{type(target_lengths).__name__}, blank {type(blank).__name__}, "
                        f"zero_infinity {type(zero_infinity).__name__}")
    if as_tensors:
        for name, t in (("input_lengths", input_lengths), ("target_lengths", target_lengths)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise RuntimeError(f"{name} must be integral")
    batched = log_probs.dim() == 3
    if not batched:  # as torch: an unbatched (T, C) input is a batch of one (targets as given: (S,) or (1, S))
        log_probs = log_probs.unsqueeze(1)
    dev = log_probs.device
    il = input_lengths.reshape(-1).to(dev, torch.int64) if as_tensors else torch.tensor([int(x) for x in input_lengths],
                                                                                        dtype=torch.int64, device=dev)
    tl = target_lengths.reshape(-1).to(dev, torch.int64) if as_tensors else torch.tensor(
        [int(x) for x in target_lengths], dtype=torch.int64, device=dev)
    if log_probs.is_complex() or log_probs.dtype not in (torch.float32, torch.float64):
        raise NotImplementedError(f'"ctc_loss": not implemented for {log_probs.dtype} (torch_bp\'s rule, as torch\'s '
                                  "CPU kernel: float32 and float64)")
    if log_probs.numel() == 0:
        raise RuntimeError("log_probs tensor must not be empty")
    _ctc_check(log_probs.dim() == 3, f"Expected 3-dimensional tensor, but got {log_probs.dim()}-dimensional tensor "
                                     "for argument #1 'log_probs'")
    _ctc_check(1 <= targets.dim() <= 2, f"Expected 1 to 2 dimensions, but got {targets.dim()}-dimensional tensor for "
                                        "argument #2 'targets'")
    t_max, n, c = log_probs.shape
    if not 0 <= blank < c:
        raise RuntimeError("blank must be in label range")
    if il.numel() != n:
        raise RuntimeError("input_lengths must be of size batch_size")
    if tl.numel() != n:
        raise RuntimeError("target_lengths must be of size batch_size")
    tl_list, il_list = tl.tolist(), il.tolist()  # one transfer each, for the checks below
    for length in tl_list:
        _ctc_check(length >= 0, f"Expected target_lengths to have value at least 0, but got value {length}")
    s = max(tl_list, default=0)
    if targets.dim() == 1:  # concatenated: batch b's target is targets[offset_b : offset_b + L_b]
        total = sum(tl_list)
        _ctc_check(targets.shape[0] == total, f"Expected tensor to have size {total} at dimension 0, but got size "
                                              f"{targets.shape[0]} for argument #2 'targets'")
        offsets = torch.cumsum(tl, 0) - tl
        pos = offsets.unsqueeze(1) + torch.arange(s, device=dev)                      # (N, S)
        valid = torch.arange(s, device=dev) < tl.unsqueeze(1)
        padded = targets.to(dev).long()[torch.where(valid, pos, 0).clamp(max=max(total - 1, 0))] if total else \
            torch.zeros(n, s, dtype=torch.int64, device=dev)
    else:
        _ctc_check(targets.shape[0] == n, f"Expected tensor to have size {n} at dimension 0, but got size "
                                          f"{targets.shape[0]} for argument #2 'targets'")
        _ctc_check(targets.shape[1] >= s, f"Expected tensor to have size at least {s} at dimension 1, but got size "
                                          f"{targets.shape[1]} for argument #2 'targets'")
        padded = targets[:, :s].to(dev).long()
        valid = torch.arange(s, device=dev) < tl.unsqueeze(1)
    for length in il_list:
        _ctc_check(length >= 0, f"Expected input_lengths to have value at least 0, but got value {length}")
        _ctc_check(length <= t_max, f"Expected input_lengths to have value at most {t_max}, but got value {length}")
    if not bool(valid.all()):  # every target full-length: the targets themselves are saved, not a copy
        padded = torch.where(valid, padded, blank)  # positions past L_b are never read (torch ignores them too)
    if ((padded < 0) | (padded >= c)).any():
        # NOTE: torch's CPU kernel reads such a target out of bounds without a check; ours refuses
        raise RuntimeError(f"ctc_loss: targets must be class indices in [0, {c}) within each target length")
    return _loss.CTCLossFunction.apply(log_probs, padded, il, tl, int(blank), reduction, bool(zero_infinity),
                                       not batched)[0]


def adaptive_log_softmax_with_loss(input, target, head_weight, tail_weights, cutoffs, head_bias=None):
    """torch_bp only: :class:`torch.nn.AdaptiveLogSoftmaxWithLoss`'s forward as a function of its parameters.

    ``tail_weights``: the tail's weights in order, ``[tail[0][0].weight, tail[0][1].weight, tail[1][0].weight,
    ...]`` (projection, then output, per cluster); ``cutoffs``: the module's ``cutoffs`` (its last entry is
    n_classes). Returns torch's ``_ASMoutput(output, loss)``; torch's checks, in torch's order.
    """
    targ_dim = target.dim()
    if targ_dim == 1:
        if input.size(0) != target.size(0):
            raise RuntimeError("Input and target should have the same size in the batch dimension.")
        if input.dim() != 2:
            raise RuntimeError(f"1D target tensor expects 2D input tensors, but found inputs with size {input.size()}")
    elif targ_dim == 0:
        if input.dim() != 1:
            raise RuntimeError(f"0D target tensor expects 1D input tensors, but found inputs with size {input.size()}")
    else:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    cutoffs = tuple(int(c) for c in cutoffs)
    if len(tail_weights) != 2 * (len(cutoffs) - 1):
        raise ValueError(f"adaptive_log_softmax_with_loss: expected {2 * (len(cutoffs) - 1)} tail weights "
                         f"(a projection and an output weight per cluster), got {len(tail_weights)}")
    unbatched = targ_dim == 0
    x, t = (input.unsqueeze(0), target.unsqueeze(0)) if unbatched else (input, target)
    if t.dtype not in (torch.int32, torch.int64):  # torch's gather of the head's log-probabilities
        raise RuntimeError(f"gather(): Expected dtype int32/int64 for index (adaptive_log_softmax_with_loss: "
                           f"target of dtype {t.dtype})")
    t = t.long()
    # as torch: a tail cluster no target falls in never runs (its weights are not checked)
    used = [bool(((t >= lo) & (t < hi)).any()) for lo, hi in zip(cutoffs[:-1], cutoffs[1:])]
    _asm_check_shapes(x, head_weight, head_bias, tail_weights, used)
    if t.numel() and (bool((t < 0).any()) or bool((t >= cutoffs[-1]).any())):
        raise RuntimeError(f"Target values should be in [0, {cutoffs[-1] - 1}], but values in range "
                           f"[{t.min().item()}, {t.max().item()}] were found. ")
    from torch.nn.modules.adaptive import _ASMoutput  # torch's result type (a namedtuple); no public name

    # the weights of a cluster that does not run are passed detached: the output depends on them no more than
    # torch's does (no gradient, and no requires_grad from them alone)
    tail = [w if used[j // 2] else w.detach() for j, w in enumerate(tail_weights)]
    return _ASMoutput(*_loss.AdaptiveLogSoftmaxFunction.apply(x, t, cutoffs, unbatched, head_weight, head_bias, *tail))


def _asm_check_shapes(x, head_weight, head_bias, tail_weights, used=None):
    """torch's linear errors (RuntimeError) for the head and the shapes of the tail clusters that run
    (``used``; all by default), before any computation."""
    pairs = [(p, w) for i, (p, w) in enumerate(zip(tail_weights[0::2], tail_weights[1::2])) if used is None or used[i]]
    chain = [(x.shape[-1], head_weight)] + [(x.shape[-1], p) for p, _ in pairs] + [(p.shape[0], w) for p, w in pairs]
    tail_weights = [w for pair in pairs for w in pair]
    for width, w in chain:
        if w.dim() != 2 or w.shape[1] != width:
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied (input features {width}, weight of "
                               f"shape {tuple(w.shape)})")
    if head_bias is not None and head_bias.shape != (head_weight.shape[0],):
        raise RuntimeError(f"adaptive_log_softmax_with_loss: head bias of shape {tuple(head_bias.shape)} for a head "
                           f"of {head_weight.shape[0]} outputs")
    dtypes = {t.dtype for t in [x, head_weight, *tail_weights] + ([head_bias] if head_bias is not None else [])}
    if len(dtypes) > 1:
        raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got {sorted(map(str, dtypes))}")


def adaptive_log_prob(input, head_weight, tail_weights, cutoffs, head_bias=None):
    """torch_bp only: :meth:`torch.nn.AdaptiveLogSoftmaxWithLoss.log_prob` as a function of the parameters
    (arguments as :func:`adaptive_log_softmax_with_loss`): the (N, n_classes) log-probabilities."""
    cutoffs = tuple(int(c) for c in cutoffs)
    if input.dim() == 1:  # as torch's log_prob (its log_softmax over dim 1 of the head's 1-d output)
        raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
    if input.dim() != 2:
        raise RuntimeError(f"log_prob: expected a 2-D input (N, in_features), got size {tuple(input.shape)}")
    _asm_check_shapes(input, head_weight, head_bias, tail_weights)
    return _loss.AdaptiveLogProbFunction.apply(input, cutoffs, head_weight, head_bias, *tail_weights)
