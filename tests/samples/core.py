"""Samples for the core layers: linear, activations, layer/RMS norm."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


# --- linear ---
@samples("linear")
def _linear(make):
    yield Sample("2d", (make(5, 4), make(3, 4), make(3)))
    yield Sample("3d-no-bias", (make(2, 5, 4), make(3, 4)), {"bias": None})
    yield Sample("unbatched", (make(4), make(3, 4), make(3)))
    yield Sample("empty-batch", (make(0, 4), make(3, 4), make(3)))
    yield Sample("noncontiguous", (make(5, 4, layout="t"), make(3, 4, layout="slice"), make(3)))
    yield Sample("weight-only-grad", (make(5, 4, requires_grad=False), make(3, 4), make(3, requires_grad=False)))


@module_samples("linear")
def _linear_mod(make):
    yield ModuleSample("bias", (4, 3), {}, (make(5, 4),))
    yield ModuleSample("no-bias", (4, 3), {"bias": False}, (make(2, 5, 4),))


@error_samples("linear")
def _linear_err(make):
    yield Sample("shape-mismatch", (make(5, 4), make(3, 6), make(3)))
    yield Sample("dtype-mismatch", (make(5, 4), make(3, 4, dtype=torch.float64), None))
    yield Sample("bias-shape", (make(5, 4), make(3, 4), make(5)))


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


# --- layer_norm / rms_norm ---
@samples("layer_norm")
def _layer_norm(make):
    yield Sample("last-dim", (make(4, 6), [6], make(6), make(6)))
    yield Sample("two-dims", (make(2, 3, 4, 5), (4, 5), make(4, 5), make(4, 5)))
    yield Sample("no-affine", (make(3, 7), (7,)))
    yield Sample("weight-only", (make(3, 7), (7,), make(7)))
    yield Sample("bias-only", (make(3, 7), (7,), None, make(7)))
    yield Sample("eps-large", (make(3, 7), (7,), make(7), make(7)), {"eps": 0.5})
    yield Sample("unbatched", (make(7), (7,), make(7), make(7)))
    yield Sample("empty-batch", (make(0, 7), (7,), make(7), make(7)))
    yield Sample("noncontiguous", (make(3, 5, 6, layout="t"), (6,), make(6), make(6)))
    yield Sample("large-magnitude", (make(4, 8, low=1e4, high=1e4 + 10), (8,), make(8), make(8)), cond=1e4 / 3)
    yield Sample("input-grad-only", (make(4, 6), (6,), make(6, requires_grad=False), make(6, requires_grad=False)))


@module_samples("layer_norm")
def _layer_norm_mod(make):
    yield ModuleSample("affine", (6,), {}, (make(4, 6),))
    yield ModuleSample("no-bias", ((3, 6),), {"bias": False}, (make(2, 3, 6),))
    yield ModuleSample("no-affine", (6,), {"elementwise_affine": False}, (make(4, 6),))


@error_samples("layer_norm")
def _layer_norm_err(make):
    yield Sample("shape-mismatch", (make(4, 6), (5,), make(5), make(5)))
    yield Sample("weight-shape", (make(4, 6), (6,), make(5), make(6)))


@samples("rms_norm")
def _rms_norm(make):
    yield Sample("last-dim", (make(4, 6), [6], make(6)))
    yield Sample("two-dims", (make(2, 3, 4, 5), (4, 5), make(4, 5)))
    yield Sample("no-affine", (make(3, 7), (7,)))
    yield Sample("eps", (make(3, 7), (7,), make(7)), {"eps": 1e-3})
    yield Sample("unbatched", (make(7), (7,), make(7)))
    yield Sample("empty-batch", (make(0, 7), (7,), make(7)))
    yield Sample("noncontiguous", (make(3, 5, 6, layout="t"), (6,), make(6)))
    yield Sample("large-magnitude", (make(4, 8, low=1e4, high=2e4), (8,), make(8)))


@module_samples("rms_norm")
def _rms_norm_mod(make):
    yield ModuleSample("affine", (6,), {}, (make(4, 6),))
    yield ModuleSample("no-affine-eps", ((3, 6),), {"elementwise_affine": False, "eps": 1e-4}, (make(2, 3, 6),))


@error_samples("rms_norm")
def _rms_norm_err(make):
    yield Sample("shape-mismatch", (make(4, 6), (5,), make(5)))
