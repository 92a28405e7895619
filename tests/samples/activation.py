"""Samples for the activation family: elementwise activations, softmax and log_softmax."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


# --- activations: one shared generator, the options vary by layer ---
def _elementwise(make, kwargs=({},), kink=None, scale=1.0):
    for kw in kwargs:
        tag = ",".join(f"{k}={v}" for k, v in kw.items())
        yield Sample(f"2d {tag}", (make(4, 6, low=-2 * scale, high=2 * scale),), kw)
        yield Sample(f"scalar {tag}", (make(),), kw)
        yield Sample(f"empty {tag}", (make(0, 3),), kw)
        yield Sample(f"noncontiguous {tag}", (make(3, 5, 4, layout="t"),), kw)
        yield Sample(f"sliced {tag}", (make(3, 4, layout="slice"),), kw)
        yield Sample(f"large-magnitude {tag}", (make(4, 5, low=-60, high=60),), kw)
        if kink is not None:
            x = torch.tensor([kink, kink + 1.0, kink - 1.0], dtype=make.dtype).requires_grad_()
            yield Sample(f"at-kink {tag}", (x,), kw, gradcheck=False)


def _act_module_samples(ctor_kwargs):
    def gen(make):
        for kw in ctor_kwargs:
            yield ModuleSample(f"{kw}", (), kw, (make(3, 4),))
    return gen


_ACTIVATIONS = {
    # name: (functional kwargs to sample, kink position or None, module constructor kwargs)
    "relu": (({},), 0.0, ({},)),
    "leaky_relu": (({}, {"negative_slope": 0.2}), 0.0, ({}, {"negative_slope": 0.2})),
    "elu": (({}, {"alpha": 0.5}), 0.0, ({}, {"alpha": 0.5})),
    "gelu": (({}, {"approximate": "tanh"}), None, ({}, {"approximate": "tanh"})),
    "silu": (({},), None, ({},)),
    "softplus": (({}, {"beta": 2.0, "threshold": 5.0}), None, ({}, {"beta": 2.0, "threshold": 5.0})),
    "tanh": (({},), None, ({},)),
    "sigmoid": (({},), None, ({},)),
}

for _name, (_kws, _kink, _ctor) in _ACTIVATIONS.items():
    samples(_name)(lambda make, kws=_kws, kink=_kink: _elementwise(make, kws, kink))
    module_samples(_name)(_act_module_samples(_ctor))


@error_samples("gelu")
def _gelu_err(make):
    yield Sample("bad-approximate", (make(3),), {"approximate": "fast"})


# --- softmax / log_softmax ---
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
