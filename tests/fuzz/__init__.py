"""Property-based fuzzing of every registry layer against torch (used by tests/test_fuzz.py).

- ``cases.py``: a hypothesis strategy per layer, perturbing the registry's samples
  (dtype, options, shapes, values, strides, which inputs require grad);
- ``options.py``: the one table of per-layer option strategies;
- ``compare.py``: run torch and torch_bp on a case, same result or same exception type.
"""
from .cases import FuzzCase, fuzz_case
from .compare import check
from .options import OPTIONS

__all__ = ["FuzzCase", "fuzz_case", "check", "OPTIONS"]
