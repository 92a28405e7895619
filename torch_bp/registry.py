"""The one table of every layer torch_bp implements.

A row names the layer's functional (ours and torch's reference), the Function(s) holding
its backward rule, the module pairs (ours, torch.nn's) the converter swaps, and its
capabilities. Tests, the converter, the README's layer table, benchmarks and the fuzzer
are all driven by this table: adding a layer means adding a row (and samples in tests/).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as TF

from . import functional as F
from . import nn
from .ops import dropout, embedding, loss
from .ops import activation, linear, normalization
from .ops import conv, pooling
from .ops import attention, recurrent  # attention / recurrent family
from .ops import distance
from .nn.rnn import torch_reference as rnn_reference  # attention / recurrent family


@dataclass(frozen=True)
class Layer:
    name: str                      # functional name, as in torch.nn.functional
    family: str                    # the module of torch_bp.ops holding the rule
    functional: Callable           # torch_bp.functional.<name>
    reference: Callable            # what torch does (the free oracle for every test)
    functions: tuple               # autograd.Function classes behind it
    modules: tuple = ()            # ((torch_bp.nn class, torch.nn class), ...)
    double_backward: bool = False  # backward built from differentiable ops (gradgradcheck)
    notes: str = ""                # torch behaviour not reproduced, conventions
    extra: dict = field(default_factory=dict, compare=False)


@functools.wraps(TF._max_pool2d)  # torch's public max_pool2d is a boolean_dispatch with a (*args, **kwargs) signature
def _torch_max_pool2d(*args, **kwargs):
    return TF.max_pool2d(*args, **kwargs)


def _row(name, family, functions, modules=(), **kw):
    return Layer(name, family, getattr(F, name), kw.pop("reference", getattr(TF, name, None)),
                 tuple(functions), tuple(modules), **kw)


def _linear_activation_reference(input, weight, bias=None, activation="relu", approximate="none"):
    """torch's act(linear(...)), the reference of torch_bp.functional.linear_activation."""
    if activation not in ("relu", "gelu", "silu"):
        raise ValueError(f"activation must be 'relu', 'gelu' or 'silu', got {activation!r}")
    h = TF.linear(input, weight, bias)
    return TF.gelu(h, approximate=approximate) if activation == "gelu" else getattr(TF, activation)(h)


def _linear_cross_entropy_reference(input, linear_weight, target, *, linear_bias=None, weight=None,
                                    reduction="mean", ignore_index=None, label_smoothing=0.0, options=None,
                                    chunk_size=None, mode="fused"):
    """torch's F.linear_cross_entropy (its reference path, options=None), with our keyword-only extras
    ``chunk_size`` and ``mode`` accepted and ignored: the reference of torch_bp.functional.linear_cross_entropy."""
    return TF.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias, weight=weight,
                                   reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)


LAYERS: list[Layer] = [
    # --- core: linear ---
    _row("linear", "linear", [linear.LinearFunction], [(nn.Linear, torch.nn.Linear)], double_backward=True),
    # --- core: activations ---
    _row("relu", "activation", [activation.ReLUFunction], [(nn.ReLU, torch.nn.ReLU)], double_backward=True,
         notes="inplace=True computed out of place"),
    _row("leaky_relu", "activation", [activation.LeakyReLUFunction], [(nn.LeakyReLU, torch.nn.LeakyReLU)],
         double_backward=True, notes="inplace=True computed out of place"),
    _row("elu", "activation", [activation.ELUFunction], [(nn.ELU, torch.nn.ELU)], double_backward=True,
         notes="inplace=True computed out of place"),
    _row("gelu", "activation", [activation.GELUFunction], [(nn.GELU, torch.nn.GELU)], double_backward=True),
    _row("silu", "activation", [activation.SiLUFunction], [(nn.SiLU, torch.nn.SiLU)], double_backward=True,
         notes="inplace=True computed out of place"),
    _row("softplus", "activation", [activation.SoftplusFunction], [(nn.Softplus, torch.nn.Softplus)],
         double_backward=True),
    _row("tanh", "activation", [activation.TanhFunction], [(nn.Tanh, torch.nn.Tanh)], double_backward=True,
         reference=torch.tanh),
    _row("sigmoid", "activation", [activation.SigmoidFunction], [(nn.Sigmoid, torch.nn.Sigmoid)],
         double_backward=True, reference=torch.sigmoid),
    # --- core: softmax / log_softmax ---
    _row("softmax", "activation", [activation.SoftmaxFunction],
         [(nn.Softmax, torch.nn.Softmax), (nn.Softmax2d, torch.nn.Softmax2d)], double_backward=True,
         notes="Softmax2d is softmax over dim -3 of a 3-d or 4-d input, as torch"),
    _row("log_softmax", "activation", [activation.LogSoftmaxFunction], [(nn.LogSoftmax, torch.nn.LogSoftmax)],
         double_backward=True),
    # --- core: dropout ---
    _row("dropout", "dropout", [dropout.DropoutFunction], [(nn.Dropout, torch.nn.Dropout)], double_backward=True,
         notes="inplace=True computed out of place; on CUDA the mask differs from torch's (fused kernel)"),
    # (more activations and dropout variants: below this line)
    # --- more activations: one elementwise pattern (ops/activation.py) ---
    _row("hardtanh", "activation", [activation.HardtanhFunction], [(nn.Hardtanh, torch.nn.Hardtanh)],
         double_backward=True, notes="inplace=True computed out of place"),
    _row("relu6", "activation", [activation.HardtanhFunction], [(nn.ReLU6, torch.nn.ReLU6)], double_backward=True,
         notes="hardtanh(0, 6), as torch; inplace=True computed out of place"),
    _row("hardswish", "activation", [activation.HardswishFunction], [(nn.Hardswish, torch.nn.Hardswish)],
         double_backward=True, notes="inplace=True computed out of place"),
    _row("hardsigmoid", "activation", [activation.HardsigmoidFunction], [(nn.Hardsigmoid, torch.nn.Hardsigmoid)],
         double_backward=True, notes="inplace=True computed out of place"),
    _row("hardshrink", "activation", [activation.HardshrinkFunction], [(nn.Hardshrink, torch.nn.Hardshrink)],
         double_backward=True),
    _row("softshrink", "activation", [activation.SoftshrinkFunction], [(nn.Softshrink, torch.nn.Softshrink)],
         double_backward=True),
    _row("threshold", "activation", [activation.ThresholdFunction], [(nn.Threshold, torch.nn.Threshold)],
         double_backward=True, notes="inplace=True computed out of place"),
    _row("selu", "activation", [activation.ScaledELUFunction], [(nn.SELU, torch.nn.SELU)], double_backward=True,
         notes="torch's elu with selu's coefficients (one rule with celu); inplace=True computed out of place"),
    _row("celu", "activation", [activation.ScaledELUFunction], [(nn.CELU, torch.nn.CELU)], double_backward=True,
         notes="torch's elu with input scale 1/alpha (one rule with selu); inplace=True computed out of place"),
    _row("mish", "activation", [activation.MishFunction], [(nn.Mish, torch.nn.Mish)], double_backward=True,
         notes="inplace=True computed out of place"),
    _row("logsigmoid", "activation", [activation.LogSigmoidFunction], [(nn.LogSigmoid, torch.nn.LogSigmoid)],
         double_backward=True),
    _row("softsign", "activation", [activation.SoftsignFunction], [(nn.Softsign, torch.nn.Softsign)],
         double_backward=True),
    _row("tanhshrink", "activation", [activation.TanhshrinkFunction], [(nn.Tanhshrink, torch.nn.Tanhshrink)],
         double_backward=True),
    _row("glu", "activation", [activation.GLUFunction], [(nn.GLU, torch.nn.GLU)], double_backward=True),
    _row("prelu", "activation", [activation.PReLUFunction], [(nn.PReLU, torch.nn.PReLU)], double_backward=True),
    _row("rrelu", "activation", [activation.RReLUFunction, activation.LeakyReLUFunction],
         [(nn.RReLU, torch.nn.RReLU)], double_backward=True,
         notes="training: slopes drawn as torch's CPU kernel (same seed, same slopes), saved in x's dtype; "
               "eval: leaky_relu with the mean slope, as torch; inplace=True computed out of place"),
    _row("softmin", "activation", [activation.SoftmaxFunction], [(nn.Softmin, torch.nn.Softmin)],
         double_backward=True, notes="composed: softmax(-x), as torch (the rule is softmax's)"),
    # --- dropout variants: dropout's rule with a per-channel mask; alpha dropout ---
    _row("dropout1d", "dropout", [dropout.DropoutFunction], [(nn.Dropout1d, torch.nn.Dropout1d)],
         double_backward=True, notes="dropout's rule with one mask bit per channel; inplace=True computed out of place"),
    _row("dropout2d", "dropout", [dropout.DropoutFunction], [(nn.Dropout2d, torch.nn.Dropout2d)],
         double_backward=True, notes="dropout's rule with one mask bit per channel; inplace=True computed out of place"),
    _row("dropout3d", "dropout", [dropout.DropoutFunction], [(nn.Dropout3d, torch.nn.Dropout3d)],
         double_backward=True, notes="dropout's rule with one mask bit per channel; inplace=True computed out of place"),
    _row("alpha_dropout", "dropout", [dropout.AlphaDropoutFunction], [(nn.AlphaDropout, torch.nn.AlphaDropout)],
         double_backward=True, notes="mask as bits; dropout's saving and backward (identity and p=1: dropout's)"),
    _row("feature_alpha_dropout", "dropout", [dropout.AlphaDropoutFunction],
         [(nn.FeatureAlphaDropout, torch.nn.FeatureAlphaDropout)], double_backward=True,
         notes="alpha dropout with one mask bit per channel"),

    # --- core: embedding ---
    _row("embedding", "embedding", [embedding.EmbeddingFunction], [(nn.Embedding, torch.nn.Embedding)],
         double_backward=True, notes="sparse=True raises NotImplementedError (dense gradients only)"),
    # --- core: losses ---
    _row("mse_loss", "loss", [loss.MSELossFunction], [(nn.MSELoss, torch.nn.MSELoss)], double_backward=True),
    _row("l1_loss", "loss", [loss.L1LossFunction], [(nn.L1Loss, torch.nn.L1Loss)], double_backward=True),
    _row("huber_loss", "loss", [loss.HuberLossFunction], [(nn.HuberLoss, torch.nn.HuberLoss)],
         double_backward=True),
    _row("smooth_l1_loss", "loss", [loss.HuberLossFunction, loss.L1LossFunction],
         [(nn.SmoothL1Loss, torch.nn.SmoothL1Loss)], double_backward=True, notes="beta=0 runs l1_loss, as torch"),
    _row("cross_entropy", "loss", [loss.CrossEntropyFunction, loss.SoftCrossEntropyFunction],
         [(nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss)], double_backward=True,
         notes="log-softmax fused in; SoftCrossEntropyFunction for class-probability targets"),
    _row("nll_loss", "loss", [loss.NLLLossFunction], [(nn.NLLLoss, torch.nn.NLLLoss)], double_backward=True),
    _row("binary_cross_entropy_with_logits", "loss", [loss.BCEWithLogitsFunction],
         [(nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss)], double_backward=True),
    _row("linear_cross_entropy", "loss",
         [loss.LinearCrossEntropyFunction, linear.LinearFunction, loss.CrossEntropyFunction,
          loss.SoftCrossEntropyFunction],
         [(nn.LinearCrossEntropyLoss, torch.nn.LinearCrossEntropyLoss)], reference=_linear_cross_entropy_reference,
         notes="torch's signature and semantics (class weights, K-dim heads, probability targets) plus keyword-only "
               "chunk_size and mode; class indices of a (C, d) head: over chunks of rows, never the (N, C) logits; "
               "K-dim heads and probability targets: composed of our linear and cross_entropy rules; "
               "LinearCrossEntropy (ours) takes (*, d) inputs and loads nn.Linear's state_dict"),
    # (more losses: below this line)
    # --- more pointwise losses: one pattern (ops/loss.py) ---
    _row("binary_cross_entropy", "loss", [loss.BCELossFunction], [(nn.BCELoss, torch.nn.BCELoss)],
         double_backward=True, notes="weight takes no gradient, as torch"),
    _row("kl_div", "loss", [loss.KLDivLossFunction], [(nn.KLDivLoss, torch.nn.KLDivLoss)], double_backward=True,
         notes="batchmean in the rule; d/dtarget is NaN at target 0, as torch's autograd of xlogy"),
    _row("poisson_nll_loss", "loss", [loss.PoissonNLLLossFunction], [(nn.PoissonNLLLoss, torch.nn.PoissonNLLLoss)],
         double_backward=True),
    _row("gaussian_nll_loss", "loss", [loss.GaussianNLLLossFunction],
         [(nn.GaussianNLLLoss, torch.nn.GaussianNLLLoss)], double_backward=True,
         notes="var clamped at eps with the gradient passed unchanged, as torch"),
    _row("soft_margin_loss", "loss", [loss.SoftMarginLossFunction], [(nn.SoftMarginLoss, torch.nn.SoftMarginLoss)],
         double_backward=True, notes="target takes no gradient, as torch"),
    _row("hinge_embedding_loss", "loss", [loss.HingeEmbeddingLossFunction],
         [(nn.HingeEmbeddingLoss, torch.nn.HingeEmbeddingLoss)], double_backward=True),
    _row("margin_ranking_loss", "loss", [loss.MarginRankingLossFunction],
         [(nn.MarginRankingLoss, torch.nn.MarginRankingLoss)], double_backward=True),
    _row("multilabel_soft_margin_loss", "loss", [loss.MultiLabelSoftMarginLossFunction],
         [(nn.MultiLabelSoftMarginLoss, torch.nn.MultiLabelSoftMarginLoss)], double_backward=True,
         notes="weight takes a gradient, as torch's composite"),
    # --- row losses ---
    _row("cosine_embedding_loss", "loss", [loss.CosineEmbeddingLossFunction],
         [(nn.CosineEmbeddingLoss, torch.nn.CosineEmbeddingLoss)], double_backward=True),
    _row("triplet_margin_loss", "loss", [loss.TripletHingeFunction, distance.PairwiseDistanceFunction],
         [(nn.TripletMarginLoss, torch.nn.TripletMarginLoss)], double_backward=True,
         notes="composed: our pairwise_distance rule, then the hinge rule (swap's minimum inside it)"),
    _row("triplet_margin_with_distance_loss", "loss", [loss.TripletHingeFunction, distance.PairwiseDistanceFunction],
         [(nn.TripletMarginWithDistanceLoss, torch.nn.TripletMarginWithDistanceLoss)], double_backward=True,
         notes="composed: distance_function (default: our pairwise_distance), then the hinge rule"),
    _row("multi_margin_loss", "loss", [loss.MultiMarginLossFunction], [(nn.MultiMarginLoss, torch.nn.MultiMarginLoss)],
         double_backward=True, notes="hinge active where z > 0 strictly, as torch"),
    _row("multilabel_margin_loss", "loss", [loss.MultiLabelMarginLossFunction],
         [(nn.MultiLabelMarginLoss, torch.nn.MultiLabelMarginLoss)], double_backward=True,
         notes="hinge active where z > 0 strictly, as torch"),

    # --- core: normalization ---
    _row("layer_norm", "normalization", [normalization.LayerNormFunction], [(nn.LayerNorm, torch.nn.LayerNorm)]),
    _row("rms_norm", "normalization", [normalization.RMSNormFunction], [(nn.RMSNorm, torch.nn.RMSNorm)]),
    # --- conv / pooling / batch norm ---
    _row("conv1d", "conv", [conv.ConvFunction], [(nn.Conv1d, torch.nn.Conv1d)], double_backward=True),
    _row("conv2d", "conv", [conv.ConvFunction], [(nn.Conv2d, torch.nn.Conv2d)], double_backward=True),
    _row("conv_transpose2d", "conv", [conv.ConvTransposeFunction], [(nn.ConvTranspose2d, torch.nn.ConvTranspose2d)],
         double_backward=True),
    _row("max_pool2d", "pooling", [pooling.MaxPool2dFunction], [(nn.MaxPool2d, torch.nn.MaxPool2d)],
         double_backward=True, reference=_torch_max_pool2d,
         notes="ties: the whole gradient goes to the index torch's forward returns (first max in the window)"),
    _row("avg_pool2d", "pooling", [pooling.AvgPool2dFunction], [(nn.AvgPool2d, torch.nn.AvgPool2d)],
         double_backward=True),
    _row("adaptive_avg_pool2d", "pooling", [pooling.AdaptiveAvgPool2dFunction],
         [(nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d)], double_backward=True),
    _row("batch_norm", "normalization", [normalization.BatchNormFunction],
         [(nn.BatchNorm1d, torch.nn.BatchNorm1d), (nn.BatchNorm2d, torch.nn.BatchNorm2d)],
         notes="replaced by torch's SyncBatchNorm under sync_batchnorm=True (see notes)"),
    _row("group_norm", "normalization", [normalization.GroupNormFunction], [(nn.GroupNorm, torch.nn.GroupNorm)]),
    # (more convolution, pooling, resampling, padding and normalization layers: below this line)

    # --- attention / recurrent ---
    _row("scaled_dot_product_attention", "attention", [attention.ScaledDotProductAttentionFunction],
         notes="saves O(L+S) per head (row log-sum-exp), recomputes probabilities in blocks; "
               "dropout masks are ours, not torch's"),
    _row("multi_head_attention_forward", "attention",
         [linear.LinearFunction, attention.ScaledDotProductAttentionFunction, attention.AttentionWeightsFunction],
         [(nn.MultiheadAttention, torch.nn.MultiheadAttention)],
         notes="no fused fast path; a fully masked row gives 0 (torch: NaN with need_weights=True)"),
    _row("lstm", "recurrent", [recurrent.LSTMFunction], [(nn.LSTM, torch.nn.LSTM)],
         reference=rnn_reference("LSTM"), notes="mirrors torch.lstm; inter-layer dropout masks are ours"),
    _row("gru", "recurrent", [recurrent.GRUFunction], [(nn.GRU, torch.nn.GRU)],
         reference=rnn_reference("GRU"), notes="mirrors torch.gru; inter-layer dropout masks are ours"),
    _row("rnn_tanh", "recurrent", [recurrent.RNNFunction], [(nn.RNN, torch.nn.RNN)],
         reference=rnn_reference("RNN_TANH"), notes="mirrors torch.rnn_tanh; inter-layer dropout masks are ours"),
    _row("rnn_relu", "recurrent", [recurrent.RNNFunction], reference=rnn_reference("RNN_RELU"),
         notes="mirrors torch.rnn_relu (module: RNN(nonlinearity='relu'))"),
    # (recurrent cells and other layers: below this line)
    # --- bilinear, distances ---
    _row("bilinear", "linear", [linear.BilinearFunction], [(nn.Bilinear, torch.nn.Bilinear)], double_backward=True),
    _row("pairwise_distance", "distance", [distance.PairwiseDistanceFunction],
         [(nn.PairwiseDistance, torch.nn.PairwiseDistance)], double_backward=True,
         notes="norm's gradient conventions as torch's (0 at a zero norm; p=inf shared among ties)"),
    _row("cosine_similarity", "distance", [distance.CosineSimilarityFunction],
         [(nn.CosineSimilarity, torch.nn.CosineSimilarity)], double_backward=True,
         notes="norms clamped at eps without gradient, as torch"),

    # --- compiled backend: the linear layer's fused epilogue ---
    _row("linear_activation", "linear", [linear.LinearFunction, linear.BiasActivationFunction],
         reference=_linear_activation_reference, double_backward=True,
         notes="torch_bp only: act(linear(x, W, b)) for relu/gelu/silu, bias and activation in one pass"),

    # (rules that real models need, e.g. rotary position embedding: below this line)

]

_BY_NAME = {row.name: row for row in LAYERS}


def get(name: str) -> Layer:
    """The registry row for ``name`` (a functional name such as ``"layer_norm"``)."""
    return _BY_NAME[name]


def module_pairs() -> list[tuple[type, type]]:
    """All (torch_bp.nn class, torch.nn class) pairs, for the converter."""
    return [pair for row in LAYERS for pair in row.modules]


def markdown_table() -> str:
    """The README's table of supported layers, generated from this registry."""
    lines = ["| functional | module(s) | rule | double backward | notes |", "|---|---|---|---|---|"]
    for r in LAYERS:
        mods = ", ".join(f"`{ours.__name__}`" for ours, _ in r.modules) or "-"
        # each Function under its own ops module (a row may use another family's rule, e.g. linear)
        funcs = ", ".join(f"`ops.{f.__module__.rsplit('.', 1)[-1]}.{f.__name__}`" for f in r.functions)
        lines.append(f"| `{r.name}` | {mods} | {funcs} | {'yes' if r.double_backward else 'no'} | {r.notes} |")
    return "\n".join(lines)


# Per-example gradients: wrap every rule above that has a per_sample rule, once, inside the
# error-signal wrapper below (torch_bp/per_sample.py).
from .per_sample import instrument as _instrument_ps; _instrument_ps(f for row in LAYERS for f in row.functions)  # noqa: E402,E702
# Error-signal capture for the gradient monitor: wrap every rule above once (torch_bp/_signals.py).
from ._signals import instrument as _instrument; _instrument(f for row in LAYERS for f in row.functions)  # noqa: E402,E702
