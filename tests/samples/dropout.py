"""Samples for dropout (the harness seeds both runs alike, so torch draws the same mask)."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


@samples("dropout")
def _dropout(make):
    yield Sample("2d p=0.5", (make(6, 8),))
    yield Sample("3d p=0.2", (make(2, 3, 8),), {"p": 0.2})
    yield Sample("noncontiguous p=0.3", (make(4, 5, 6, layout="t"),), {"p": 0.3})
    yield Sample("sliced p=0.7", (make(5, 6, layout="slice"),), {"p": 0.7})
    yield Sample("scalar", (make(),), {"p": 0.4})
    yield Sample("p=0", (make(4, 5),), {"p": 0.0})
    yield Sample("p=1", (make(4, 5),), {"p": 1.0})
    yield Sample("eval (training=False)", (make(4, 5),), {"p": 0.5, "training": False})
    yield Sample("empty-batch", (make(0, 5),), {"p": 0.5})
    yield Sample("large-magnitude", (make(4, 5, low=-1e4, high=1e4),), {"p": 0.1})
    # torch writes into its input: only an input without grad can be compared (ours: out of place)
    yield Sample("inplace=True", (make(4, 5, requires_grad=False),), {"p": 0.5, "inplace": True})


@module_samples("dropout")
def _dropout_mod(make):
    yield ModuleSample("p=0.5", (), {}, (make(6, 7),))
    yield ModuleSample("p=0.25", (0.25,), {}, (make(2, 3, 4),))


@error_samples("dropout")
def _dropout_err(make):
    yield Sample("p>1", (make(3, 4),), {"p": 1.5})
    yield Sample("p<0", (make(3, 4),), {"p": -0.1})
    yield Sample("integer input", (torch.arange(6),), {"p": 0.5})


# --- dropout variants: one generator, the input ranks per layer ---
_VARIANTS = {
    # name: (shapes of batched and unbatched inputs, default training)
    "dropout1d": (((3, 4, 5), (4, 6)), True),
    "dropout2d": (((2, 3, 2, 3), (2, 4, 5)), True),    # 3-d: (N, C, L), torch's legacy reading
    "dropout3d": (((2, 3, 2, 2, 2), (3, 2, 2, 3)), True),
    "alpha_dropout": (((4, 6), (2, 3, 4)), False),
    "feature_alpha_dropout": (((2, 4, 3), (3, 4, 2, 2)), False),
}


def _variant_samples(make, shapes, training):
    for shape in shapes:
        yield Sample(f"{len(shape)}d p=0.5", (make(*shape),), {"training": True})
        yield Sample(f"{len(shape)}d p=0.2", (make(*shape),), {"p": 0.2, "training": True})
    big = shapes[0]
    yield Sample("noncontiguous p=0.3", (make(*big[:-2], big[-1], big[-2], layout="t"),), {"p": 0.3, "training": True})
    yield Sample("p=0", (make(*big),), {"p": 0.0, "training": True})
    yield Sample("p=1", (make(*big),), {"p": 1.0, "training": True})
    yield Sample("default training", (make(*big),))
    yield Sample("eval (training=False)", (make(*big),), {"training": False})
    yield Sample("empty-batch", (make(0, *big[1:]),), {"training": True})
    yield Sample("large-magnitude", (make(*big, low=-1e4, high=1e4),), {"p": 0.1, "training": True})
    yield Sample("inplace=True", (make(*big, requires_grad=False),), {"p": 0.5, "training": True, "inplace": True})
    # spatial dims of size 1: the channel mask has x's shape (the compiled bit-mask kernels run)
    yield Sample("spatial size 1 p=0.4", (make(*big[:2], *(1,) * (len(big) - 2)),), {"p": 0.4, "training": True})


def _variant_modules(shapes):
    def gen(make):
        yield ModuleSample("p=0.5", (), {}, (make(*shapes[0]),))
        yield ModuleSample("p=0.25 unbatched", (0.25,), {}, (make(*shapes[1]),))
    return gen


def _variant_errors(make):
    yield Sample("p>1", (make(2, 3, 4),), {"p": 1.5, "training": True})
    yield Sample("integer input", (torch.arange(24).reshape(2, 3, 4),), {"p": 0.5, "training": True})


for _name, (_shapes, _training) in _VARIANTS.items():
    samples(_name)(lambda make, shapes=_shapes, training=_training: _variant_samples(make, shapes, training))
    module_samples(_name)(_variant_modules(_shapes))
    error_samples(_name)(_variant_errors)


@error_samples("dropout1d")
def _dropout1d_err(make):
    yield from _variant_errors(make)
    yield Sample("4-d input", (make(2, 3, 4, 5),))


@error_samples("feature_alpha_dropout")
def _feature_alpha_err(make):
    yield from _variant_errors(make)
    yield Sample("1-d input", (make(5),), {"training": True})
