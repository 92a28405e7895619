"""The one table of every layer torch_bp implements.

A row names the layer's functional (ours and torch's reference), the Function(s) holding
its backward rule, the module pairs (ours, torch.nn's) the converter swaps, and its
capabilities. Tests, the converter, the README's layer table, benchmarks and the fuzzer
are all driven by this table: adding a layer means adding a row (and samples in tests/).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as TF

from . import functional as F
from . import nn
from .nn import attention as _nn_attention, hf as _nn_hf, transformer as _nn_transformer  # noqa: F401
from .nn import fused as _nn_fused
from .ops import dropout, embedding, loss
from .ops import activation, linear, normalization
from .ops import conv, pooling
from .ops import padding, resample  # padding / resampling family
from .ops import attention, recurrent  # attention / recurrent family
from .ops import pointwise, rotary  # rules that real models need
from .ops import distance
from .ops import fused  # fusion pass: fused pairs of layers
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
    autocast: str = ""             # torch's autocast policy for the op: "lower", "fp32", "fp32_cuda" (_amp.py)
    notes: str = ""                # torch behaviour not reproduced, conventions
    extra: dict = field(default_factory=dict, compare=False)


@functools.wraps(TF._max_pool2d)  # torch's public max_pool2d is a boolean_dispatch with a (*args, **kwargs) signature
def _torch_max_pool2d(*args, **kwargs):
    return TF.max_pool2d(*args, **kwargs)


def _torch_signature(name):
    """torch's F.<name>, with the signature of its implementation ``F._<name>`` (the public one is a
    boolean_dispatch on return_indices with a (*args, **kwargs) signature)."""
    public = getattr(TF, name)
    return functools.wraps(getattr(TF, "_" + name))(lambda *args, **kwargs: public(*args, **kwargs))


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


def _adaptive_module(input, head_weight, tail_weights, cutoffs, head_bias):
    """torch's AdaptiveLogSoftmaxWithLoss (on the meta device) and the named tensors to call it with."""
    cutoffs = list(cutoffs)
    module = torch.nn.AdaptiveLogSoftmaxWithLoss(input.shape[-1], cutoffs[-1], cutoffs[:-1],
                                                 head_bias=head_bias is not None, device="meta")
    params = {"head.weight": head_weight, **({"head.bias": head_bias} if head_bias is not None else {})}
    for i in range(len(cutoffs) - 1):
        params[f"tail.{i}.0.weight"], params[f"tail.{i}.1.weight"] = tail_weights[2 * i], tail_weights[2 * i + 1]
    return module, params


def _adaptive_log_softmax_reference(input, target, head_weight, tail_weights, cutoffs, head_bias=None):
    """torch's AdaptiveLogSoftmaxWithLoss forward with the given parameters (torch.func.functional_call): the
    reference of torch_bp.functional.adaptive_log_softmax_with_loss."""
    module, params = _adaptive_module(input, head_weight, tail_weights, cutoffs, head_bias)
    return torch.func.functional_call(module, params, (input, target))


def _sync_batch_norm_reference(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                               eps=1e-05, process_group=None):
    """torch's batch_norm: on one process, the reference of torch_bp.functional.sync_batch_norm (the statistics of
    the group are this process's batch; tests/test_sync_batchnorm.py checks two processes)."""
    return TF.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm_relu_reference(input, running_mean, running_var, weight=None, bias=None, training=False,
                               momentum=0.1, eps=1e-05):
    """torch's relu(batch_norm(...)), the reference of torch_bp.functional.batch_norm_relu."""
    return TF.relu(TF.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps))


def _rotary_reference(q, k, cos, sin, unsqueeze_dim=1):
    """Hugging Face's apply_rotary_pos_emb (transformers.models.llama.modeling_llama), written out."""
    def rotate_half(x):
        return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), dim=-1)
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


LAYERS: list[Layer] = [
    # --- core: linear ---
    _row("linear", "linear", [linear.LinearFunction], [(nn.Linear, torch.nn.Linear)], double_backward=True,
         autocast="lower"),
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
         double_backward=True, autocast="fp32_cuda"),
    _row("tanh", "activation", [activation.TanhFunction], [(nn.Tanh, torch.nn.Tanh)], double_backward=True,
         reference=torch.tanh),
    _row("sigmoid", "activation", [activation.SigmoidFunction], [(nn.Sigmoid, torch.nn.Sigmoid)],
         double_backward=True, reference=torch.sigmoid),
    # --- core: softmax / log_softmax ---
    _row("softmax", "activation", [activation.SoftmaxFunction],
         [(nn.Softmax, torch.nn.Softmax), (nn.Softmax2d, torch.nn.Softmax2d)], double_backward=True,
         notes="Softmax2d is softmax over dim -3 of a 3-d or 4-d input, as torch", autocast="fp32_cuda"),
    _row("log_softmax", "activation", [activation.LogSoftmaxFunction], [(nn.LogSoftmax, torch.nn.LogSoftmax)],
         double_backward=True, autocast="fp32_cuda"),
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
    _row("prelu", "activation", [activation.PReLUFunction], [(nn.PReLU, torch.nn.PReLU)], double_backward=True,
         autocast="lower"),
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
         double_backward=True, notes="sparse=True: torch's sparse COO gradient (uncoalesced, input order)"),
    # --- core: losses ---
    _row("mse_loss", "loss", [loss.MSELossFunction], [(nn.MSELoss, torch.nn.MSELoss)], double_backward=True,
         autocast="fp32"),
    _row("l1_loss", "loss", [loss.L1LossFunction], [(nn.L1Loss, torch.nn.L1Loss)], double_backward=True,
         autocast="fp32"),
    _row("huber_loss", "loss", [loss.HuberLossFunction], [(nn.HuberLoss, torch.nn.HuberLoss)],
         double_backward=True, autocast="fp32"),
    _row("smooth_l1_loss", "loss", [loss.HuberLossFunction, loss.L1LossFunction],
         [(nn.SmoothL1Loss, torch.nn.SmoothL1Loss)], double_backward=True, notes="beta=0 runs l1_loss, as torch",
         autocast="fp32"),
    _row("cross_entropy", "loss", [loss.CrossEntropyFunction, loss.SoftCrossEntropyFunction],
         [(nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss)], double_backward=True,
         notes="log-softmax fused in; SoftCrossEntropyFunction for class-probability targets", autocast="fp32"),
    _row("nll_loss", "loss", [loss.NLLLossFunction], [(nn.NLLLoss, torch.nn.NLLLoss)], double_backward=True,
         autocast="fp32"),
    _row("binary_cross_entropy_with_logits", "loss", [loss.BCEWithLogitsFunction],
         [(nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss)], double_backward=True, autocast="fp32"),
    _row("linear_cross_entropy", "loss",
         [loss.LinearCrossEntropyFunction, linear.LinearFunction, loss.CrossEntropyFunction,
          loss.SoftCrossEntropyFunction],
         [(nn.LinearCrossEntropyLoss, torch.nn.LinearCrossEntropyLoss)], reference=_linear_cross_entropy_reference,
         notes="torch's signature and semantics (class weights, K-dim heads, probability targets) plus keyword-only "
               "chunk_size and mode; class indices of a (C, d) head: over chunks of rows, never the (N, C) logits; "
               "K-dim heads and probability targets: composed of our linear and cross_entropy rules; "
               "LinearCrossEntropy (ours) takes (*, d) inputs and loads nn.Linear's state_dict", autocast="lower"),
    # (more losses: below this line)
    # --- more pointwise losses: one pattern (ops/loss.py) ---
    _row("binary_cross_entropy", "loss", [loss.BCELossFunction], [(nn.BCELoss, torch.nn.BCELoss)],
         double_backward=True, notes="weight takes no gradient, as torch", autocast="fp32"),
    _row("kl_div", "loss", [loss.KLDivLossFunction], [(nn.KLDivLoss, torch.nn.KLDivLoss)], double_backward=True,
         notes="batchmean in the rule; d/dtarget is NaN at target 0, as torch's autograd of xlogy", autocast="fp32"),
    _row("poisson_nll_loss", "loss", [loss.PoissonNLLLossFunction], [(nn.PoissonNLLLoss, torch.nn.PoissonNLLLoss)],
         double_backward=True, autocast="fp32"),
    _row("gaussian_nll_loss", "loss", [loss.GaussianNLLLossFunction],
         [(nn.GaussianNLLLoss, torch.nn.GaussianNLLLoss)], double_backward=True,
         notes="var clamped at eps with the gradient passed unchanged, as torch"),
    _row("soft_margin_loss", "loss", [loss.SoftMarginLossFunction], [(nn.SoftMarginLoss, torch.nn.SoftMarginLoss)],
         double_backward=True, notes="target takes no gradient, as torch", autocast="fp32"),
    _row("hinge_embedding_loss", "loss", [loss.HingeEmbeddingLossFunction],
         [(nn.HingeEmbeddingLoss, torch.nn.HingeEmbeddingLoss)], double_backward=True, autocast="fp32"),
    _row("margin_ranking_loss", "loss", [loss.MarginRankingLossFunction],
         [(nn.MarginRankingLoss, torch.nn.MarginRankingLoss)], double_backward=True, autocast="fp32"),
    _row("multilabel_soft_margin_loss", "loss", [loss.MultiLabelSoftMarginLossFunction],
         [(nn.MultiLabelSoftMarginLoss, torch.nn.MultiLabelSoftMarginLoss)], double_backward=True,
         notes="weight takes a gradient, as torch's composite"),
    # --- row losses ---
    _row("cosine_embedding_loss", "loss", [loss.CosineEmbeddingLossFunction],
         [(nn.CosineEmbeddingLoss, torch.nn.CosineEmbeddingLoss)], double_backward=True, autocast="fp32"),
    _row("triplet_margin_loss", "loss", [loss.TripletHingeFunction, distance.PairwiseDistanceFunction],
         [(nn.TripletMarginLoss, torch.nn.TripletMarginLoss)], double_backward=True,
         notes="composed: our pairwise_distance rule, then the hinge rule (swap's minimum inside it)", autocast="fp32"),
    _row("triplet_margin_with_distance_loss", "loss", [loss.TripletHingeFunction, distance.PairwiseDistanceFunction],
         [(nn.TripletMarginWithDistanceLoss, torch.nn.TripletMarginWithDistanceLoss)], double_backward=True,
         notes="composed: distance_function (default: our pairwise_distance), then the hinge rule"),
    _row("multi_margin_loss", "loss", [loss.MultiMarginLossFunction], [(nn.MultiMarginLoss, torch.nn.MultiMarginLoss)],
         double_backward=True, notes="hinge active where z > 0 strictly, as torch", autocast="fp32"),
    _row("multilabel_margin_loss", "loss", [loss.MultiLabelMarginLossFunction],
         [(nn.MultiLabelMarginLoss, torch.nn.MultiLabelMarginLoss)], double_backward=True,
         notes="hinge active where z > 0 strictly, as torch", autocast="fp32"),

    _row("ctc_loss", "loss", [loss.CTCLossFunction], [(nn.CTCLoss, torch.nn.CTCLoss)], autocast="fp32",
         notes="alpha/beta recursions in log space over the extended targets, batched, a loop over time; the "
               "gradient is torch's (exact for log_probs from log_softmax); float32/float64 as torch's CPU kernel; "
               "targets outside [0, C) raise (torch's CPU kernel reads them unchecked)"),

    _row("adaptive_log_softmax_with_loss", "loss", [loss.AdaptiveLogSoftmaxFunction, loss.AdaptiveLogProbFunction],
         [(nn.AdaptiveLogSoftmaxWithLoss, torch.nn.AdaptiveLogSoftmaxWithLoss)],
         reference=_adaptive_log_softmax_reference,
         notes="torch_bp only as a functional (the module's forward of its parameters): head, tail clusters of the "
               "rows that need them, log-softmaxes and loss in one rule; log_prob: a second rule; predict: torch's "
               "argmax; under autocast computed in the input's dtype (outputs float32, as torch's)"),

    # --- core: normalization ---
    _row("layer_norm", "normalization", [normalization.LayerNormFunction], [(nn.LayerNorm, torch.nn.LayerNorm)],
         double_backward=True, autocast="fp32_cuda"),
    _row("rms_norm", "normalization", [normalization.RMSNormFunction], [(nn.RMSNorm, torch.nn.RMSNorm)],
         double_backward=True, autocast="fp32_cuda"),
    # --- conv / pooling / batch norm ---
    _row("conv1d", "conv", [conv.ConvFunction], [(nn.Conv1d, torch.nn.Conv1d)], double_backward=True, autocast="lower"),
    _row("conv2d", "conv", [conv.ConvFunction], [(nn.Conv2d, torch.nn.Conv2d)], double_backward=True, autocast="lower"),
    _row("conv_transpose2d", "conv", [conv.ConvTransposeFunction], [(nn.ConvTranspose2d, torch.nn.ConvTranspose2d)],
         double_backward=True, autocast="lower"),
    _row("max_pool2d", "pooling", [pooling.MaxPool2dFunction], [(nn.MaxPool2d, torch.nn.MaxPool2d)],
         double_backward=True, reference=_torch_max_pool2d,
         notes="ties: the whole gradient goes to the index torch's forward returns (first max in the window)"),
    _row("avg_pool2d", "pooling", [pooling.AvgPoolFunction], [(nn.AvgPool2d, torch.nn.AvgPool2d)],
         double_backward=True),
    _row("adaptive_avg_pool2d", "pooling", [pooling.AdaptiveAvgPoolFunction],
         [(nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d)], double_backward=True),
    _row("batch_norm", "normalization", [normalization.BatchNormFunction],
         [(nn.BatchNorm1d, torch.nn.BatchNorm1d), (nn.BatchNorm2d, torch.nn.BatchNorm2d),
          (nn.BatchNorm3d, torch.nn.BatchNorm3d)],
         double_backward=True, notes="Lightning's sync_batchnorm=True: ours with torch_bp.lightning.SyncBatchNormPlugin "
                                     "(its default plugin makes torch's SyncBatchNorm)"),
    _row("sync_batch_norm", "normalization", [normalization.SyncBatchNormFunction, normalization.BatchNormFunction],
         [(nn.SyncBatchNorm, torch.nn.SyncBatchNorm)], reference=_sync_batch_norm_reference,
         notes="torch_bp only as a functional; training: the statistics of the process group's batch by "
               "torch.distributed.all_reduce (forward: sums and centred sums; backward: sum(dy), sum(dy (x - mu))), "
               "CPU tensors with gloo too; eval or no group of more than one process: batch_norm's rule, as torch's "
               "module; grad of weight/bias: this process's part, as torch's; Lightning: "
               "torch_bp.lightning.SyncBatchNormPlugin"),
    _row("group_norm", "normalization", [normalization.GroupNormFunction], [(nn.GroupNorm, torch.nn.GroupNorm)],
         double_backward=True, autocast="fp32_cuda"),
    # (more convolution, pooling, resampling, padding and normalization layers: below this line)
    _row("local_response_norm", "normalization", [normalization.LocalResponseNormFunction],
         [(nn.LocalResponseNorm, torch.nn.LocalResponseNorm)], double_backward=True),
    _row("instance_norm", "normalization", [normalization.GroupNormFunction, normalization.BatchNormFunction],
         [(nn.InstanceNorm1d, torch.nn.InstanceNorm1d), (nn.InstanceNorm2d, torch.nn.InstanceNorm2d),
          (nn.InstanceNorm3d, torch.nn.InstanceNorm3d)],
         double_backward=True,
         notes="the group norm rule with a group per channel; with running statistics in eval, the batch norm rule"),
    _row("pad", "padding", [padding.PadFunction],
         [(ours, getattr(torch.nn, ours.__name__)) for ours in nn.PADDING_MODULES], double_backward=True,
         notes="reflect/replicate/circular: the backward scatter-adds every copy to its source"),
    _row("interpolate", "resample", [resample.InterpolateFunction],
         [(nn.Upsample, torch.nn.Upsample), (nn.UpsamplingNearest2d, torch.nn.UpsamplingNearest2d),
          (nn.UpsamplingBilinear2d, torch.nn.UpsamplingBilinear2d)], double_backward=True,
         notes="every mode (area included); upsample, upsample_nearest, upsample_bilinear call it"),
    _row("pixel_shuffle", "resample", [resample.PixelShuffleFunction], [(nn.PixelShuffle, torch.nn.PixelShuffle)],
         double_backward=True),
    _row("pixel_unshuffle", "resample", [resample.PixelShuffleFunction],
         [(nn.PixelUnshuffle, torch.nn.PixelUnshuffle)], double_backward=True),
    _row("channel_shuffle", "resample", [resample.ChannelShuffleFunction],
         [(nn.ChannelShuffle, torch.nn.ChannelShuffle)], double_backward=True),
    _row("unfold", "resample", [resample.FoldFunction], [(nn.Unfold, torch.nn.Unfold)], double_backward=True),
    _row("fold", "resample", [resample.FoldFunction], [(nn.Fold, torch.nn.Fold)], double_backward=True),
    _row("avg_pool1d", "pooling", [pooling.AvgPoolFunction], [(nn.AvgPool1d, torch.nn.AvgPool1d)],
         double_backward=True, extra={"compiled_ops": ()}),  # the compiled avg-pool kernels are 2-d
    _row("avg_pool3d", "pooling", [pooling.AvgPoolFunction], [(nn.AvgPool3d, torch.nn.AvgPool3d)],
         double_backward=True, extra={"compiled_ops": ()}),
    _row("adaptive_avg_pool1d", "pooling", [pooling.AdaptiveAvgPoolFunction],
         [(nn.AdaptiveAvgPool1d, torch.nn.AdaptiveAvgPool1d)], double_backward=True),
    _row("adaptive_avg_pool3d", "pooling", [pooling.AdaptiveAvgPoolFunction],
         [(nn.AdaptiveAvgPool3d, torch.nn.AdaptiveAvgPool3d)], double_backward=True),
    *(_row(name, "pooling", [pooling.MaxIndexPoolFunction], [(ours, getattr(torch.nn, ours.__name__))],
           double_backward=True, reference=_torch_signature(name),
           notes="ties: the whole gradient goes to the index torch's forward returns")
      for name, ours in (("max_pool1d", nn.MaxPool1d), ("max_pool3d", nn.MaxPool3d),
                         ("adaptive_max_pool1d", nn.AdaptiveMaxPool1d), ("adaptive_max_pool2d", nn.AdaptiveMaxPool2d),
                         ("adaptive_max_pool3d", nn.AdaptiveMaxPool3d),
                         ("fractional_max_pool2d", nn.FractionalMaxPool2d),
                         ("fractional_max_pool3d", nn.FractionalMaxPool3d))),
    *(_row(f"lp_pool{nd}d", "pooling", [pooling.LPPoolFunction], [(ours, getattr(torch.nn, ours.__name__))],
           double_backward=True) for nd, ours in ((1, nn.LPPool1d), (2, nn.LPPool2d), (3, nn.LPPool3d))),
    *(_row(f"max_unpool{nd}d", "pooling", [pooling.MaxUnpoolFunction], [(ours, getattr(torch.nn, ours.__name__))],
           double_backward=True) for nd, ours in ((1, nn.MaxUnpool1d), (2, nn.MaxUnpool2d), (3, nn.MaxUnpool3d))),
    _row("conv3d", "conv", [conv.ConvFunction], [(nn.Conv3d, torch.nn.Conv3d)], double_backward=True,
         extra={"compiled_ops": ()}, autocast="lower"),  # conv_weight_grad: 1-d and 2-d kernels
    _row("conv_transpose1d", "conv", [conv.ConvTransposeFunction], [(nn.ConvTranspose1d, torch.nn.ConvTranspose1d)],
         double_backward=True, autocast="lower"),
    _row("conv_transpose3d", "conv", [conv.ConvTransposeFunction], [(nn.ConvTranspose3d, torch.nn.ConvTranspose3d)],
         double_backward=True, autocast="lower"),

    # --- attention / recurrent ---
    _row("scaled_dot_product_attention", "attention", [attention.ScaledDotProductAttentionFunction],
         notes="saves O(L+S) per head (row log-sum-exp), recomputes probabilities in blocks; "
               "dropout masks are ours, not torch's", autocast="lower"),
    _row("multi_head_attention_forward", "attention",
         [linear.LinearFunction, attention.ScaledDotProductAttentionFunction, attention.AttentionWeightsFunction],
         [(nn.MultiheadAttention, torch.nn.MultiheadAttention)],
         notes="no fused fast path; a fully masked row gives 0 (torch: NaN with need_weights=True)"),
    _row("lstm", "recurrent", [recurrent.LSTMFunction], [(nn.LSTM, torch.nn.LSTM)],
         reference=rnn_reference("LSTM"), notes="mirrors torch.lstm; inter-layer dropout masks are ours",
         autocast="lower"),
    _row("gru", "recurrent", [recurrent.GRUFunction], [(nn.GRU, torch.nn.GRU)],
         reference=rnn_reference("GRU"), notes="mirrors torch.gru; inter-layer dropout masks are ours"),
    _row("rnn_tanh", "recurrent", [recurrent.RNNFunction], [(nn.RNN, torch.nn.RNN)],
         reference=rnn_reference("RNN_TANH"), notes="mirrors torch.rnn_tanh; inter-layer dropout masks are ours",
         autocast="lower"),
    _row("rnn_relu", "recurrent", [recurrent.RNNFunction], reference=rnn_reference("RNN_RELU"),
         notes="mirrors torch.rnn_relu (module: RNN(nonlinearity='relu'))", autocast="lower"),
    # (recurrent cells and other layers: below this line)
    _row("embedding_bag", "embedding", [embedding.EmbeddingBagFunction], [(nn.EmbeddingBag, torch.nn.EmbeddingBag)],
         double_backward=True, notes="sparse=True: torch's sparse COO gradient; scale_grad_by_freq: the inverse "
                                     "frequency of each index in the mini-batch (torch's CPU kernel divides by another "
                                     "index's count where counts differ)"),
    _row("rnn_tanh_cell", "recurrent", [recurrent.RNNCellFunction], [(nn.RNNCell, torch.nn.RNNCell)],
         reference=torch.rnn_tanh_cell, double_backward=True, notes="module: RNNCell (tanh or relu)", autocast="lower"),
    _row("rnn_relu_cell", "recurrent", [recurrent.RNNCellFunction], reference=torch.rnn_relu_cell,
         double_backward=True, notes="module: RNNCell(nonlinearity='relu')", autocast="lower"),
    _row("lstm_cell", "recurrent", [recurrent.LSTMCellFunction], [(nn.LSTMCell, torch.nn.LSTMCell)],
         reference=torch.lstm_cell, double_backward=True, autocast="lower_cuda"),
    _row("gru_cell", "recurrent", [recurrent.GRUCellFunction], [(nn.GRUCell, torch.nn.GRUCell)],
         reference=torch.gru_cell, double_backward=True, autocast="lower_cuda"),
    # --- bilinear, distances ---
    _row("bilinear", "linear", [linear.BilinearFunction], [(nn.Bilinear, torch.nn.Bilinear)], double_backward=True),
    _row("pairwise_distance", "distance", [distance.PairwiseDistanceFunction],
         [(nn.PairwiseDistance, torch.nn.PairwiseDistance)], double_backward=True,
         notes="norm's gradient conventions as torch's (0 at a zero norm; p=inf shared among ties)"),
    _row("cosine_similarity", "distance", [distance.CosineSimilarityFunction],
         [(nn.CosineSimilarity, torch.nn.CosineSimilarity)], double_backward=True,
         notes="norms clamped at eps without gradient, as torch", autocast="fp32_cuda"),

    # --- compiled backend: the linear layer's fused epilogue ---
    _row("linear_activation", "linear", [linear.LinearFunction, linear.BiasActivationFunction],
         reference=_linear_activation_reference, double_backward=True,
         notes="torch_bp only: act(linear(x, W, b)) for relu/gelu/silu, bias and activation in one pass",
         autocast="lower"),

    # --- fused pairs of layers (the fusion pass of torch_bp.convert; ops/fused.py) ---
    _row("batch_norm_relu", "fused", [fused.BatchNormReLUFunction], reference=_batch_norm_relu_reference,
         double_backward=True,
         notes="torch_bp only: relu(batch_norm(...)) as one rule saving no mask; run by convert's fusion pass for "
               "BatchNorm -> ReLU in an nn.Sequential",
         # bfloat16: the fused kernels need z unrounded (ops/fused.py), so the Python rule runs, on batch norm's kernels
         extra={"compiled_ops": {torch.bfloat16: ("batch_norm_fwd", "batch_norm_bwd")}}),

    # (rules that real models need, e.g. rotary position embedding: below this line)
    _row("mul", "pointwise", [pointwise.MulFunction], reference=torch.mul, double_backward=True,
         notes="torch.mul / a * b of floating tensors (gates, layer scale) or a tensor and a number; "
               "run in a converted model's forward where an operand requires grad"),
    _row("where", "pointwise", [pointwise.WhereFunction], reference=torch.where, double_backward=True,
         notes="torch.where(condition, input, other) with floating tensors or numbers (masks applied to "
               "a learned bias); run in a converted model's forward where an operand requires grad"),
    _row("apply_rotary_pos_emb", "rotary", [rotary.RotaryEmbeddingFunction], reference=_rotary_reference,
         notes="torch_bp only: Hugging Face's apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim) in one "
               "Function saving only cos and sin; swapped into attention modules by the converter"),

]

@dataclass(frozen=True)
class Converter:
    """How ``torch_bp.convert`` turns one kind of module into ours (and ``revert`` back), beyond the
    class swap of the module pairs above.

    Either ``torch_cls`` (every module of exactly that class), or ``match`` (a structural test:
    attributes, parameter shapes) for classes found in the wild; a module that ``match`` accepts
    is swapped only if the conversion computes what the original computes on a random probe
    (``probe(module) -> inputs``, or ``check(module, tol) -> bool`` for a check of its own).
    """
    name: str                      # what it converts to, for reports
    ours: type                     # the class (or base class) of converted modules
    convert: Callable              # module -> converted module (None: does not apply)
    revert: Callable               # converted module -> the original
    torch_cls: type | None = None
    match: Callable | None = None
    probe: Callable | None = None
    check: Callable | None = None
    precision: torch.dtype | None = None  # the original computes in this dtype whatever its input's
                                          # (the probe's tolerance is then this dtype's)


def _probe_last_dim(module):
    """A (2, 3, D) input in the dtype of the module's 1-d parameter (D its length)."""
    p = next(iter(module._parameters.values()))
    return (torch.randn(2, 3, p.shape[0], generator=torch.Generator().manual_seed(0), dtype=p.dtype).to(p.device),)


def _probe_conv1d(module):
    w = module.weight
    return (torch.randn(2, 3, w.shape[0], generator=torch.Generator().manual_seed(0), dtype=w.dtype).to(w.device),)


def _probe_activation(module):
    return (3 * torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64),)


def _activation_converters():
    return [Converter(f"{name}" + "".join(f"({k}={v!r})" for k, v in kw.items()), nn.hf.Activation,
                      nn.hf.to_activation(name, kw), nn.hf.revert, match=nn.hf.match_activation,
                      probe=_probe_activation)
            for name, kw in nn.hf.ACTIVATIONS if F.ours(name)]


CONVERTERS: list[Converter] = [
    # --- torch.nn classes that need more than a class swap ---
    Converter("NonDynamicallyQuantizableLinear", nn.attention.NonDynamicallyQuantizableLinear,
              nn.attention.convert_out_proj, nn.attention.revert_out_proj,
              torch_cls=nn.attention._TorchOutProj),
    *[Converter(ours.__name__, ours, nn.transformer.converter(ours), nn.transformer.reverter(torch_cls),
                torch_cls=torch_cls) for ours, torch_cls in nn.transformer.PAIRS],
    # --- modules found in the wild (Hugging Face transformers and alike): by structure, then a probe ---
    Converter("rms_norm", nn.hf.RMSNorm, nn.hf.to_rms_norm, nn.hf.revert, match=nn.hf.match_rms_norm,
              probe=_probe_last_dim),
    Converter("rms_norm(weight=1 + w)", nn.hf.RMSNorm, nn.hf.to_rms_norm_one_plus, nn.hf.revert,
              match=nn.hf.match_rms_norm, probe=_probe_last_dim),
    Converter("rms_norm(float32)", nn.hf.RMSNorm, nn.hf.to_rms_norm_float32, nn.hf.revert,
              match=nn.hf.match_rms_norm, probe=_probe_last_dim, precision=torch.float32),
    Converter("linear(weight.t())", nn.hf.Conv1D, nn.hf.to_conv1d, nn.hf.revert, match=nn.hf.match_conv1d,
              probe=_probe_conv1d),
    *_activation_converters(),
    Converter("apply_rotary_pos_emb", nn.hf._RotaryConverted, nn.hf.to_rotary, nn.hf.revert,
              match=nn.hf.match_rotary, check=nn.hf.rotary_probe_ok),
    # (more converters: below this line)
]



@dataclass(frozen=True)
class Fusion:
    """A pattern of convert's fusion pass (torch_bp.nn.fused): in an ``nn.Sequential``, a module whose class is
    exactly one of ``first`` followed by one whose class is exactly one of ``second`` runs as
    ``run(first_module, second_module, input)``, one call of the fused rule of row ``name``, where
    ``applies(first_module, second_module)``. The run computes what the two modules' forwards compute
    (tests/test_fusion.py compares it with them, values and gradients)."""
    name: str                      # the registry row of the fused rule
    first: tuple
    second: tuple
    run: Callable
    applies: Callable = lambda first, second: True


FUSIONS: list[Fusion] = [
    Fusion("linear_activation", (nn.Linear,), (nn.ReLU, nn.GELU, nn.SiLU), _nn_fused.linear_activation),
    Fusion("batch_norm_relu", (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), (nn.ReLU,),
           _nn_fused.batch_norm_relu),
]

_BY_NAME = {row.name: row for row in LAYERS}

# Every torch.nn module class that has no module pair above (nor a converter of torch_bp.convert), with the
# reason (layout modules, which need no rule, included); tests/test_nn_coverage.py fails on a torch.nn module in
# neither, so a module a later torch adds is noticed.
_CONTAINER = "container: holds layers, computes nothing of its own (its children are converted)"
_LAYOUT = ("covered, no rule needed: a layout module (a view, or the input itself) whose backward is torch's "
           "exact view backward")
_BASE = "base class of torch's recurrent modules (the concrete classes are listed)"
_NOT_YET = "not covered yet: torch's own backward runs"


def _lazy(becomes: str) -> str:
    return (f"lazy: after its first forward it becomes torch.nn.{becomes} (torch's cls_to_become); "
            "convert() after materialisation swaps that")


NOT_COVERED: dict[str, str] = {
    **dict.fromkeys(["Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict",
                     "Container"], _CONTAINER),
    **dict.fromkeys(["Flatten", "Unflatten", "Identity"], _LAYOUT),
    **dict.fromkeys(["RNNBase", "RNNCellBase"], _BASE),
    **{f"Lazy{name}": _lazy(name) for name in (
        "Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
        "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")},
    "CrossMapLRN2d": "torch's legacy CrossMapLRN2d backward is not the gradient of its forward (gradcheck fails "
                     "on torch's own module; its window loop never drops channel 0): a twin with the true gradient "
                     "would not match torch's module",
    "NLLLoss2d": "torch's deprecated alias of NLLLoss; not converted (NLLLoss is)",
    # --- end of pending: layers-a ---
}


def get(name: str) -> Layer:
    """The registry row for ``name`` (a functional name such as ``"layer_norm"``)."""
    return _BY_NAME[name]


def autocast_policy(name: str) -> str:
    """The autocast policy of the layer ``name`` ("" for names without a row)."""
    row = _BY_NAME.get(name)
    return "" if row is None else row.autocast


def compiled_ops(row: Layer, dtype: torch.dtype | None = None) -> set[str]:
    """The compiled ops this row's samples of ``dtype`` reach (None: of any dtype): its rules' declarations,
    unless the row states them (``extra["compiled_ops"]``): a tuple for every dtype (a rule shared with another
    row whose compiled path covers only that row's case, e.g. the 2-d pooling kernels of a rule that also serves
    1-d and 3-d), or a dict {dtype: tuple} for the dtypes whose path differs (the others: the declarations)."""
    declared = {op for f in row.functions for op in f.compiled}
    stated = row.extra.get("compiled_ops", declared)
    if not isinstance(stated, dict):
        return set(stated)
    if dtype is not None:
        return set(stated.get(dtype, declared))
    return declared.union(*stated.values())


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

