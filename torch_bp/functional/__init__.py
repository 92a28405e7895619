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

import torch.nn.functional as _torch_F

from .activation import (
    elu,
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)
from .activation import (  # more activations
    celu,
    glu,
    hardshrink,
    hardsigmoid,
    hardswish,
    hardtanh,
    logsigmoid,
    mish,
    prelu,
    relu6,
    rrelu,
    selu,
    softmin,
    softshrink,
    softsign,
    tanhshrink,
    threshold,
)
from .attention import (
    _multi_head_attention,  # noqa: F401  (torch_bp.nn.MultiheadAttention)
    multi_head_attention_forward,
    scaled_dot_product_attention,
)
from .conv import (
    _conv_transposend,  # noqa: F401  (torch_bp.nn.ConvTranspose*: output_size)
    _convnd,  # noqa: F401  (torch_bp.nn.Conv*: padding modes)
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
from .dropout import alpha_dropout, dropout, dropout1d, dropout2d, dropout3d, feature_alpha_dropout
from .embedding import embedding, embedding_bag
from .linear import linear, linear_activation
from .fused import batch_norm_relu
from .linear import bilinear
from .distance import cosine_similarity, pairwise_distance
from .loss import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    l1_loss,
    linear_cross_entropy,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)
from .loss import (  # more losses
    binary_cross_entropy,
    gaussian_nll_loss,
    hinge_embedding_loss,
    kl_div,
    margin_ranking_loss,
    multilabel_soft_margin_loss,
    poisson_nll_loss,
    soft_margin_loss,
)
from .loss import ctc_loss
from .loss import adaptive_log_prob, adaptive_log_softmax_with_loss  # torch_bp only: the module's forward
from .loss import (  # row losses
    cosine_embedding_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    triplet_margin_loss,
    triplet_margin_with_distance_loss,
)
from .normalization import sync_batch_norm  # torch_bp only: batch_norm across a process group
from .normalization import (
    batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    local_response_norm,
    rms_norm,
)
from .padding import pad
from .pooling import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    fractional_max_pool2d,
    fractional_max_pool3d,
    lp_pool1d,
    lp_pool2d,
    lp_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    max_unpool1d,
    max_unpool2d,
    max_unpool3d,
)
from .recurrent import gru, gru_cell, lstm, lstm_cell, rnn_relu, rnn_relu_cell, rnn_tanh, rnn_tanh_cell
from .resample import (channel_shuffle, fold, interpolate, pixel_shuffle, pixel_unshuffle, unfold, upsample,
                       upsample_bilinear, upsample_nearest)
from .pointwise import mul, where
from .rotary import apply_rotary_pos_emb

# The names defined by torch_bp (a rule of ours runs); every other public name of
# torch.nn.functional resolves to torch's own function (module __getattr__ below).
_OURS = frozenset(n for n, v in list(globals().items())
                  if not n.startswith("_") and callable(v) and getattr(v, "__module__", "").startswith(__name__))

# torch_bp's own code runs with the interception stepped aside (torch_bp/_intercept.py: outside).
from .._intercept import outside as _outside  # noqa: E402

for _name in _OURS | {"_convnd", "_conv_transposend", "_multi_head_attention"}:
    globals()[_name] = _outside(globals()[_name])
del _name


def ours(name: str) -> bool:
    """True if ``torch_bp.functional.<name>`` runs a torch_bp rule, False if it is torch's function.

    Raises AttributeError for a name that neither torch_bp nor ``torch.nn.functional`` has."""
    if name in _OURS:
        return True
    if name.startswith("_") or not hasattr(_torch_F, name):
        raise AttributeError(f"torch_bp.functional has no function {name!r} (nor has torch.nn.functional)")
    return False


def __getattr__(name: str):
    # a drop-in for torch.nn.functional: a public name we have no rule for is torch's
    if not name.startswith("_") and hasattr(_torch_F, name):
        return getattr(_torch_F, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {n for n in dir(_torch_F) if not n.startswith("_")})


__all__ = sorted(_OURS) + ["ours"]
