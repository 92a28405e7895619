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
