"""``torch_bp.functional``: dropout. See the package docstring."""
from __future__ import annotations

import torch

from ..ops import dropout as _drop
from ._checks import _check_inplace


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
    if input.is_complex():  # as torch, whose Bernoulli draw is not implemented for complex dtypes
        raise NotImplementedError(f"dropout: not implemented for input of dtype {input.dtype}")
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
