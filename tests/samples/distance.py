"""Samples for the distances: pairwise_distance (every p) and cosine_similarity (dims, broadcasting)."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


@samples("pairwise_distance")
def _pairwise(make):
    for p in (2.0, 1.0, 3.0, 1.5, 0.5, float("inf")):
        yield Sample(f"2d p={p}", (make(4, 5), make(4, 5)), {"p": p})
    yield Sample("p=0 (count)", (make(4, 5), make(4, 5)), {"p": 0.0})
    yield Sample("keepdim", (make(3, 4), make(3, 4)), {"keepdim": True})
    yield Sample("3d eps=0.1", (make(2, 3, 4), make(2, 3, 4)), {"eps": 0.1})
    yield Sample("broadcast x2 (D,)", (make(3, 4), make(4)))
    yield Sample("1d", (make(5), make(5)))
    yield Sample("scalar", (make(), make()))
    yield Sample("empty-batch", (make(0, 4), make(0, 4)))
    yield Sample("x2-no-grad", (make(3, 4), make(3, 4, requires_grad=False)))
    yield Sample("noncontiguous", (make(3, 4, layout="t"), make(3, 4, layout="slice")))
    x = make(2, 3)
    yield Sample("zero distance (x1 = x2, eps=0)", (x, x.detach().clone()), {"eps": 0.0}, gradcheck=False)


@module_samples("pairwise_distance")
def _pairwise_mod(make):
    yield ModuleSample("default", (), {}, (make(3, 4), make(3, 4)))
    yield ModuleSample("p=1 keepdim", (1.0,), {"keepdim": True}, (make(3, 4), make(3, 4)))


@error_samples("pairwise_distance")
def _pairwise_err(make):
    yield Sample("size mismatch", (make(3, 4), make(3, 5)))


@samples("cosine_similarity")
def _cosine(make):
    yield Sample("2d dim=1", (make(4, 5), make(4, 5)))
    yield Sample("2d dim=0", (make(4, 5), make(4, 5)), {"dim": 0})
    yield Sample("3d dim=-1", (make(2, 3, 4), make(2, 3, 4)), {"dim": -1})
    yield Sample("broadcast x2 (D,)", (make(3, 4), make(4)), {"dim": -1})
    yield Sample("1d dim=0", (make(5), make(5)), {"dim": 0})
    yield Sample("eps=0.5 (norms clamped)", (make(3, 4, low=-0.1, high=0.1), make(3, 4)), {"eps": 0.5},
                 gradcheck=False)  # the clamp passes no gradient (torch: a clamp under no_grad)
    yield Sample("empty-batch", (make(0, 4), make(0, 4)))
    yield Sample("x2-no-grad", (make(3, 4), make(3, 4, requires_grad=False)))
    yield Sample("noncontiguous", (make(3, 4, layout="t"), make(3, 4, layout="slice")))
    yield Sample("large-magnitude", (make(3, 4, low=-1e3, high=1e3), make(3, 4, low=-1e3, high=1e3)))
    z = torch.zeros(2, 3, dtype=make.dtype, requires_grad=True)
    yield Sample("zero vector", (z, make(2, 3)), gradcheck=False)


@module_samples("cosine_similarity")
def _cosine_mod(make):
    yield ModuleSample("default", (), {}, (make(3, 4), make(3, 4)))
    yield ModuleSample("dim=0", (0,), {}, (make(3, 4), make(3, 4)))


@error_samples("cosine_similarity")
def _cosine_err(make):
    yield Sample("size mismatch", (make(3, 4), make(3, 5)))
    yield Sample("dim out of range", (make(3, 4), make(3, 4)), {"dim": 2})
    yield Sample("integer inputs", (torch.arange(4), torch.arange(4)), {"dim": 0})
