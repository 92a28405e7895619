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
    # more activations (kinks: where the derivative jumps; hardshrink/threshold jump in value there)
    "hardtanh": (({}, {"min_val": -0.5, "max_val": 1.5}), -1.0, ({}, {"min_val": -0.5, "max_val": 1.5})),
    "relu6": (({},), 0.0, ({},)),
    "hardswish": (({},), 3.0, ({},)),
    "hardsigmoid": (({},), -3.0, ({},)),
    "hardshrink": (({}, {"lambd": 1.0}), 0.5, ({}, {"lambd": 1.0})),
    "softshrink": (({}, {"lambd": 1.0}), 0.5, ({}, {"lambd": 1.0})),
    "threshold": (({"threshold": 0.5, "value": -2.0}, {"threshold": -1.0, "value": 0.0}), 0.5,
                  ({"threshold": 0.5, "value": -2.0},)),
    "selu": (({},), 0.0, ({},)),
    "celu": (({}, {"alpha": 0.5}), 0.0, ({}, {"alpha": 0.5})),
    "mish": (({},), None, ({},)),
    "logsigmoid": (({},), None, ({},)),
    "softsign": (({},), None, ({},)),
    "tanhshrink": (({},), None, ({},)),
}

for _name, (_kws, _kink, _ctor) in _ACTIVATIONS.items():
    samples(_name)(lambda make, kws=_kws, kink=_kink: _elementwise(make, kws, kink))
    module_samples(_name)(_act_module_samples(_ctor))


@error_samples("hardtanh")
def _hardtanh_err(make):
    yield Sample("min_val > max_val", (make(3),), {"min_val": 1.0, "max_val": -1.0})
    yield Sample("bool input", (torch.tensor([True, False]),))


@error_samples("celu")
def _celu_err(make):
    yield Sample("alpha=0", (make(3),), {"alpha": 0.0})
    yield Sample("integer input", (torch.arange(3),))


@error_samples("softshrink")
def _softshrink_err(make):
    yield Sample("lambd<0", (make(3),), {"lambd": -1.0})
    yield Sample("integer input", (torch.arange(3),))


for _name in ("hardswish", "hardsigmoid", "hardshrink", "selu", "mish", "logsigmoid", "softsign", "tanhshrink",
              "relu6"):
    error_samples(_name)(lambda make: iter([Sample("bool input", (torch.tensor([True, False]),))]))


# --- glu ---
@samples("glu")
def _glu(make):
    yield Sample("2d dim=-1", (make(4, 6),))
    yield Sample("3d dim=1", (make(2, 4, 3),), {"dim": 1})
    yield Sample("1d dim=0", (make(6),), {"dim": 0})
    yield Sample("empty-batch", (make(0, 4),))
    yield Sample("noncontiguous dim=0", (make(4, 5, layout="t"),), {"dim": 0})
    yield Sample("large-magnitude", (make(3, 8, low=-60, high=60),))


@module_samples("glu")
def _glu_mod(make):
    yield ModuleSample("dim=-1", (), {}, (make(3, 4),))
    yield ModuleSample("dim=0", (0,), {}, (make(4, 3),))


@error_samples("glu")
def _glu_err(make):
    yield Sample("odd size", (make(3, 5),))
    yield Sample("0-d input", (make(),))
    yield Sample("dim out of range", (make(2, 4),), {"dim": 2})
    yield Sample("integer input", (torch.arange(4),))


# --- prelu ---
@samples("prelu")
def _prelu(make):
    w = lambda *s: make(*s, low=0.05, high=0.5)  # noqa: E731
    yield Sample("2d per-channel", (make(4, 3), w(3)))
    yield Sample("3d one slope", (make(2, 3, 5), w(1)))
    yield Sample("4d per-channel", (make(2, 3, 2, 2), w(3)))
    yield Sample("1d one slope", (make(5), w(1)))
    yield Sample("scalar", (make(), w(1)))
    yield Sample("0-d weight", (make(3, 4), w()))
    yield Sample("weight-no-grad", (make(3, 4), make(4, low=0.05, high=0.5, requires_grad=False)))
    yield Sample("input-no-grad", (make(3, 4, requires_grad=False), w(4)))
    yield Sample("noncontiguous", (make(3, 5, 4, layout="t"), w(5)))
    yield Sample("empty-batch", (make(0, 3), w(3)))
    yield Sample("negative slopes", (make(3, 4), make(4, low=-2, high=-0.5)))
    x = torch.tensor([[0.0, 1.0, -1.0]], dtype=make.dtype).requires_grad_()
    yield Sample("at-kink", (x, w(3)), gradcheck=False)


@module_samples("prelu")
def _prelu_mod(make):
    yield ModuleSample("one slope", (), {}, (make(3, 4),))
    yield ModuleSample("per-channel", (4,), {}, (make(3, 4),))
    yield ModuleSample("per-channel 3d init=0.1", (3, 0.1), {}, (make(2, 3, 4),))


@error_samples("prelu")
def _prelu_err(make):
    yield Sample("channel mismatch", (make(3, 4), make(3)))
    yield Sample("2-d weight", (make(3, 4), make(4, 1)))
    yield Sample("0-d input, per-channel weight", (make(), make(3)))
    yield Sample("weight dtype", (make(3, 4), make(4, dtype=torch.float64)))


# --- rrelu (training: the harness seeds both runs alike, so torch draws the same slopes) ---
@samples("rrelu")
def _rrelu(make):
    yield Sample("eval 2d", (make(4, 6),))
    yield Sample("eval lower,upper", (make(4, 6),), {"lower": 0.2, "upper": 0.4})
    yield Sample("training 2d", (make(4, 6),), {"training": True})
    yield Sample("training lower,upper", (make(3, 5),), {"lower": 0.05, "upper": 0.9, "training": True})
    yield Sample("training lower=upper", (make(3, 5),), {"lower": 0.3, "upper": 0.3, "training": True})
    yield Sample("training noncontiguous", (make(3, 5, 4, layout="t"),), {"training": True})
    yield Sample("training scalar", (make(),), {"training": True})
    yield Sample("training empty", (make(0, 3),), {"training": True})
    yield Sample("training large-magnitude", (make(4, 5, low=-60, high=60),), {"training": True})


@module_samples("rrelu")
def _rrelu_mod(make):
    yield ModuleSample("default", (), {}, (make(3, 4),))
    yield ModuleSample("lower,upper", (0.1, 0.3), {}, (make(2, 3, 4),))


@error_samples("rrelu")
def _rrelu_err(make):
    yield Sample("lower > upper", (make(3),), {"lower": 0.5, "upper": 0.1})
    yield Sample("integer input", (torch.arange(3),))


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
samples("softmin")(_softmax_samples)


def _softmax_modules(make):
    only = ("Softmax", "LogSoftmax", "Softmin")
    yield ModuleSample("dim=1", (), {"dim": 1}, (make(3, 4),), only=only)
    yield ModuleSample("dim=-1 3d", (-1,), {}, (make(2, 3, 4),), only=only)
    yield ModuleSample("dim=None", (), {}, (make(2, 3, 4),), only=only)
    yield ModuleSample("Softmax2d 4d", (), {}, (make(2, 3, 2, 2),), only=("Softmax2d",))
    yield ModuleSample("Softmax2d 3d", (), {}, (make(3, 2, 4),), only=("Softmax2d",))


module_samples("softmax")(_softmax_modules)
module_samples("log_softmax")(_softmax_modules)
module_samples("softmin")(_softmax_modules)


def _softmax_errors(make):
    yield Sample("integer input", (torch.arange(6).reshape(2, 3),), {"dim": 1})
    yield Sample("dim out of range", (make(2, 3),), {"dim": 2})


error_samples("softmax")(_softmax_errors)
error_samples("log_softmax")(_softmax_errors)
error_samples("softmin")(_softmax_errors)
