"""``torch_bp.functional``: dropout and its variants. See the package docstring."""
from __future__ import annotations

import warnings

import torch

from ..ops import dropout as _drop
from ._checks import _check_inplace


def _check_p(p):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _dropout(input, p, training, inplace, noise_shape=None, alpha=False):
    """torch's ``_dropout_impl``: the identity (eval, p = 0, empty), input * 0 (p = 1), else a mask
    of ``noise_shape`` (x's shape, or (N, C, 1, ...) for channel dropout; a callable, evaluated
    where torch makes its feature noise, so its error comes where torch's does) and the rule."""
    _check_p(p)
    rule = (lambda x, m, s: _drop.AlphaDropoutFunction.apply(x, m, s, float(p))) if alpha else \
        _drop.DropoutFunction.apply
    if not training or p == 0 or input.numel() == 0:  # the identity, as torch
        if not (torch.is_grad_enabled() and input.requires_grad):
            return input  # torch returns the input itself
        return rule(input, None, None)
    if inplace:
        _check_inplace(input)
    if p == 1:  # as torch: input * 0 (a 0-d mask and scale broadcast; nothing is stored per element)
        zero = torch.zeros((), dtype=input.dtype, device=input.device)
        return rule(input, zero.bool(), zero)
    shape = None if noise_shape is None else noise_shape()
    if input.is_complex():  # as torch, whose Bernoulli draw is not implemented for complex dtypes
        raise NotImplementedError(f"dropout: not implemented for input of dtype {input.dtype}")
    if not input.is_floating_point():
        raise RuntimeError(f"result type Float can't be cast to the desired output type {input.dtype} "
                           "(dropout with 0 < p < 1 needs a floating point input)")
    # NOTE: the same draw as torch's CPU kernel (empty_like(x) or empty(feature noise shape), then bernoulli_(1 - p), then
    # div_(1 - p) or alpha dropout's affine map), so the same seed gives the same mask; CUDA
    # torch's plain dropout uses a fused kernel with its own random stream.
    noise = (torch.empty_like(input) if shape is None  # x's strides: the draw in x's memory order, as torch
             else torch.empty(shape, dtype=input.dtype, device=input.device)).bernoulli_(1 - p)
    mask = noise.bool()
    if alpha:
        a = 1.0 / ((_drop._SELU_ALPHA_PRIME ** 2 * p + 1) * (1 - p)) ** 0.5
        return rule(input, mask, noise.new_full((), a))
    return rule(input, mask, noise.new_ones(()).div_(1 - p))


def _feature_shape(input, batched=True):
    """Channel dropout's noise shape: (N, C, 1, ...) (unbatched: (C, 1, ...), torch's noise of
    the input with a batch dim of 1, without it)."""
    def shape():
        full = input.shape if batched else (1,) + tuple(input.shape)
        if len(full) < 2:
            raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
        noise = (full[0], full[1]) + (1,) * (len(full) - 2)
        return noise if batched else noise[1:]
    return shape


def dropout(input, p=0.5, training=True, inplace=False):
    return _dropout(input, p, training, inplace)


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    return _dropout(input, p, training, inplace, alpha=True)


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    return _dropout(input, p, training, inplace, _feature_shape(input), alpha=True)


def _deprecated_dims(name, ndim, dims, spatial):
    warnings.warn(f"{name}: Received a {ndim}-D input to {name}, which is deprecated and will result in an error "
                  f"in a future release. To retain the behavior and silence this warning, please use dropout "
                  f"instead. Note that {name} exists to provide channel-wise dropout on inputs with {spatial} "
                  f"spatial dimensions, a channel dimension, and an optional batch dimension (i.e. {dims[0]}D or "
                  f"{dims[1]}D inputs).", stacklevel=3)


def dropout1d(input, p=0.5, training=True, inplace=False):
    _check_p(p)
    if input.dim() not in (2, 3):
        raise RuntimeError(f"dropout1d: Expected 2D or 3D input, but received a {input.dim()}D input. Note that "
                           "dropout1d exists to provide channel-wise dropout on inputs with 1 spatial dimension, a "
                           "channel dimension, and an optional batch dimension (i.e. 2D or 3D inputs).")
    return _dropout(input, p, training, inplace, _feature_shape(input, batched=input.dim() == 3))


def dropout2d(input, p=0.5, training=True, inplace=False):
    _check_p(p)
    if input.dim() not in (3, 4):
        _deprecated_dims("dropout2d", input.dim(), (3, 4), 2)
    if input.dim() == 3:  # torch's historical behaviour: (N, C, L), not an unbatched (C, H, W)
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                      "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel dim. "
                      "This behavior will change in a future release to interpret the input as one without a "
                      "batch dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout behavior, "
                      "please switch to using dropout1d instead.", stacklevel=2)
    return _dropout(input, p, training, inplace, _feature_shape(input))


def dropout3d(input, p=0.5, training=True, inplace=False):
    _check_p(p)
    if input.dim() not in (4, 5):
        _deprecated_dims("dropout3d", input.dim(), (4, 5), 3)
    return _dropout(input, p, training, inplace, _feature_shape(input, batched=input.dim() == 5))
