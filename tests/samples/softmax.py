"""Samples for softmax and log_softmax."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


def _softmax_samples(make):
    yield Sample("2d dim=1", (make(4, 6),), {"dim": 1})
    yield Sample("3d dim=0", (make(3, 2, 4),), {"dim": 0})
    yield Sample("3d dim=-1", (make(2, 3, 5),), {"dim": -1})
    yield Sample("dim=None (legacy choice, 2d -> 1)", (make(3, 4),))
    yield Sample("scalar", (make(),), {"dim": 0})
    yield Sample("empty-batch", (make(0, 5),), {"dim": 1})
    yield Sample("noncontiguous", (make(3, 5, 4, layout="t"),), {"dim": -1})
    yield Sample("sliced", (make(4, 3, layout="slice"),), {"dim": 0})
    yield Sample("dtype=float64", (make(3, 4),), {"dim": 1, "dtype": torch.float64})
    # x - max x is exact, so the result keeps full precision at 1e4 (and stays finite at +-1e4).
    yield Sample("large-magnitude offset", (make(4, 5, low=1e4, high=1e4 + 8),), {"dim": 1})
    yield Sample("large-magnitude spread", (make(4, 5, low=-60, high=60),), {"dim": -1})


samples("softmax")(_softmax_samples)
samples("log_softmax")(_softmax_samples)


def _softmax_modules(make):
    yield ModuleSample("dim=1", (), {"dim": 1}, (make(3, 4),))
    yield ModuleSample("dim=-1 3d", (-1,), {}, (make(2, 3, 4),))
    yield ModuleSample("dim=None", (), {}, (make(2, 3, 4),))


module_samples("softmax")(_softmax_modules)
module_samples("log_softmax")(_softmax_modules)


def _softmax_errors(make):
    yield Sample("integer input", (torch.arange(6).reshape(2, 3),), {"dim": 1})
    yield Sample("dim out of range", (make(2, 3),), {"dim": 2})


error_samples("softmax")(_softmax_errors)
error_samples("log_softmax")(_softmax_errors)
