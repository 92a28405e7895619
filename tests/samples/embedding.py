"""Samples for embedding."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


@samples("embedding")
def _embedding(make):
    rep = torch.tensor([[1, 3, 3, 7], [3, 0, 1, 3]])  # repeated indices (index_add accumulates)
    yield Sample("2d indices", (make.int(10, 3, 4), make(10, 5)))
    yield Sample("1d indices", (make.int(10, 6), make(10, 3)))
    yield Sample("0d index", (torch.tensor(4), make(10, 3)))
    yield Sample("repeated", (rep, make(8, 4)))
    # padding_idx (no gradient for that row) and scale_grad_by_freq (divided by the count)
    # are conventions, not the derivative of the lookup: finite differences disagree by design
    # (torch's own rule fails gradcheck here too); compared with torch only.
    yield Sample("padding_idx", (rep, make(8, 4)), {"padding_idx": 3}, gradcheck=False)
    yield Sample("negative padding_idx", (torch.tensor([0, 7, 7, 2]), make(8, 4)), {"padding_idx": -1},
                 gradcheck=False)
    yield Sample("scale_grad_by_freq", (rep, make(8, 4)), {"scale_grad_by_freq": True}, gradcheck=False)
    yield Sample("scale_grad_by_freq+padding_idx", (rep, make(8, 4)),
                 {"scale_grad_by_freq": True, "padding_idx": 1}, gradcheck=False)
    yield Sample("padding_idx not looked up", (make.int(5, 2, 3), make(8, 4)), {"padding_idx": 6})
    yield Sample("int32 indices", (make.int(10, 5).int(), make(10, 3)))
    yield Sample("empty indices", (make.int(10, 0), make(10, 3)))
    yield Sample("noncontiguous", (make.int(10, 4, 3).t(), make(10, 5, layout="t")))
    yield Sample("large-magnitude", (make.int(10, 6), make(10, 3, low=-1e4, high=1e4)))
    # max_norm rescales the looked-up rows of weight in place (outside autograd), as torch:
    # finite differences of an input that the call itself rewrites are meaningless.
    yield Sample("max_norm", (rep, make(8, 4)), {"max_norm": 1.0}, gradcheck=False)
    yield Sample("max_norm norm_type=1", (rep, make(8, 4)), {"max_norm": 1.5, "norm_type": 1.0},
                 gradcheck=False)
    # sparse: the dense rule's numbers in torch's sparse COO layout (compared with torch's as a sparse tensor;
    # the numbers are gradchecked in the dense samples)
    yield Sample("sparse", (rep, make(8, 4)), {"sparse": True}, gradcheck=False)
    yield Sample("sparse padding_idx", (rep, make(8, 4)), {"sparse": True, "padding_idx": 3}, gradcheck=False)


@module_samples("embedding")
def _embedding_mod(make):
    x = torch.tensor([[1, 3, 3, 7], [3, 0, 1, 3]])
    yield ModuleSample("plain", (10, 4), {}, (x,))
    yield ModuleSample("padding_idx", (10, 4), {"padding_idx": 3}, (x,))
    yield ModuleSample("max_norm", (10, 4), {"max_norm": 1.0}, (x,))
    yield ModuleSample("scale_grad_by_freq", (10, 4), {"scale_grad_by_freq": True}, (x,))
    yield ModuleSample("sparse", (10, 4), {"sparse": True, "padding_idx": 1}, (x,))


@error_samples("embedding")
def _embedding_err(make):
    yield Sample("float indices", (make(3, requires_grad=False), make(10, 3)))
    yield Sample("index out of range", (torch.tensor([1, 10]), make(10, 3)))
    yield Sample("negative index", (torch.tensor([1, -1]), make(10, 3)))
    yield Sample("1-d weight", (torch.tensor([1, 2]), make(10)))
    yield Sample("padding_idx out of range", (torch.tensor([1, 2]), make(10, 3)), {"padding_idx": 10})
    yield Sample("negative padding_idx out of range", (torch.tensor([1, 2]), make(10, 3)), {"padding_idx": -11})


# --- embedding_bag ---
@samples("embedding_bag")
def _embedding_bag(make):
    idx = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9, 0, 6])
    offsets = torch.tensor([0, 3, 3, 6])  # bag 1 is empty
    for mode in ("sum", "mean", "max"):
        yield Sample(f"{mode}-offsets", (idx, make(10, 3), offsets), {"mode": mode})
        yield Sample(f"{mode}-2d", (torch.tensor([[1, 2, 4], [4, 3, 2]]), make(10, 3)), {"mode": mode})
        yield Sample(f"{mode}-padding-idx", (idx, make(10, 3), offsets), {"mode": mode, "padding_idx": 2})
    yield Sample("sum-per-sample-weights", (idx, make(10, 3), offsets),
                 {"mode": "sum", "per_sample_weights": make(10)})
    yield Sample("sum-psw-padding-2d", (torch.tensor([[1, 2, 4], [4, 3, 2]]), make(10, 3)),
                 {"mode": "sum", "per_sample_weights": make(2, 3), "padding_idx": 4})
    yield Sample("mean-include-last-offset", (idx, make(10, 3), torch.tensor([0, 3, 7, 10])),
                 {"mode": "mean", "include_last_offset": True})
    # scale_grad_by_freq: every index twice, so that torch's CPU kernel (which divides by the count of another
    # index, see EmbeddingBagFunction's NOTE) gives the inverse-frequency gradient too; the general case is
    # checked against torch.embedding's scaling in tests/test_embedding_options.py. The scaling is a convention,
    # not the derivative: compared with torch only.
    twice, off2 = torch.tensor([1, 2, 4, 2, 1, 4, 3, 3]), torch.tensor([0, 3, 3, 5])
    for mode in ("sum", "mean"):
        yield Sample(f"{mode}-scale-grad-by-freq", (twice, make(10, 3), off2), {"mode": mode, "scale_grad_by_freq": True},
                     gradcheck=False)
    yield Sample("mean-scale-grad-by-freq-padding", (twice, make(10, 3), off2),
                 {"mode": "mean", "scale_grad_by_freq": True, "padding_idx": 4}, gradcheck=False)
    # sparse=True: torch's sparse COO layout (the numbers: the dense samples' gradcheck)
    yield Sample("sum-sparse", (idx, make(10, 3), offsets), {"mode": "sum", "sparse": True}, gradcheck=False)
    yield Sample("mean-sparse-padding-idx", (idx, make(10, 3), offsets),
                 {"mode": "mean", "sparse": True, "padding_idx": 2}, gradcheck=False)
    yield Sample("sum-sparse-psw", (idx, make(10, 3), offsets),
                 {"mode": "sum", "sparse": True, "per_sample_weights": make(10)}, gradcheck=False)
    yield Sample("negative padding_idx", (idx, make(10, 3), offsets), {"mode": "sum", "padding_idx": -10},
                 gradcheck=False)


@module_samples("embedding_bag")
def _embedding_bag_mod(make):
    idx = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9])
    yield ModuleSample("mean", (10, 3), {}, (idx, torch.tensor([0, 3, 5])))
    yield ModuleSample("max-padding", (10, 3), {"mode": "max", "padding_idx": 4}, (idx, torch.tensor([0, 3, 5])))
    yield ModuleSample("sum-psw", (10, 3), {"mode": "sum"}, (idx, torch.tensor([0, 3, 5]), make(8)))
    twice = torch.tensor([1, 2, 4, 2, 1, 4, 9, 9])
    yield ModuleSample("mean-scale-grad-by-freq", (10, 3), {"scale_grad_by_freq": True}, (twice, torch.tensor([0, 3, 5])))
    yield ModuleSample("sum-sparse", (10, 3), {"mode": "sum", "sparse": True}, (idx, torch.tensor([0, 3, 5])))


@error_samples("embedding_bag")
def _embedding_bag_err(make):
    yield Sample("2d-with-offsets", (torch.tensor([[1, 2]]), make(10, 3), torch.tensor([0])))
    yield Sample("no-offsets", (torch.tensor([1, 2]), make(10, 3)))
    yield Sample("bad-mode", (torch.tensor([1, 2]), make(10, 3), torch.tensor([0])), {"mode": "median"})
    yield Sample("psw-mean", (torch.tensor([1, 2]), make(10, 3), torch.tensor([0])),
                 {"per_sample_weights": make(2)})
    yield Sample("max-scale-freq", (torch.tensor([1, 2]), make(10, 3), torch.tensor([0])),
                 {"mode": "max", "scale_grad_by_freq": True})
    yield Sample("max-sparse", (torch.tensor([1, 2]), make(10, 3), torch.tensor([0])), {"mode": "max", "sparse": True})
    yield Sample("padding_idx out of range", (torch.tensor([1, 2]), make(10, 3), torch.tensor([0])), {"padding_idx": 10})
    yield Sample("negative padding_idx out of range", (torch.tensor([1, 2]), make(10, 3), torch.tensor([0])),
                 {"padding_idx": -11})
