"""Small helpers shared by the rules in ``torch_bp.ops``."""
from __future__ import annotations

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def opmath(t: torch.Tensor) -> torch.Tensor:
    """Upcast float16/bfloat16 to float32 for intermediate math, as torch's own kernels do.

    NOTE: a chain of elementwise ops evaluated in bfloat16 rounds after every op; torch's
    fused kernels compute in float32 and round once. Computing in float32 and casting the
    result back keeps us within one rounding of torch.
    """
    return t.float() if t.dtype in _LOW_PRECISION else t


def sum_to_size(t: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient back to ``size`` (the inverse of broadcasting)."""
    return t if t.shape == size else t.sum_to_size(size)
