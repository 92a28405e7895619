"""Samples of the fused rules (torch_bp/ops/fused.py): those of the layers they fuse."""
from __future__ import annotations

from . import error_samples, samples
from .normalization import _batch_norm, _batch_norm_err


# --- batch_norm_relu --- (batch norm's samples: relu(batch_norm(...)) against torch's pair)
@samples("batch_norm_relu")
def _batch_norm_relu(make):
    yield from _batch_norm(make)


@error_samples("batch_norm_relu")
def _batch_norm_relu_err(make):
    yield from _batch_norm_err(make)
