"""``torch_bp.functional``: padding. See the package docstring."""
from __future__ import annotations

from ..ops import padding as _padding


def pad(input, pad, mode="constant", value=None):
    # torch's own checks (pad length, mode, value with a non-constant mode, sizes) run in the forward
    return _padding.PadFunction.apply(input, tuple(int(p) for p in pad), mode, value)
