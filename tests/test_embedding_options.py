"""embedding_bag's scale_grad_by_freq with indices of different counts, against torch.embedding's inverse-frequency
scaling composed with the bag sums (torch's own CPU embedding_bag kernel divides by another index's count there:
see EmbeddingBagFunction's NOTE); sparse gradients of both rules equal torch's, layout included."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import torch_bp.functional as F

IDX = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9, 0, 6, 4])   # counts 1, 2 and 3
OFFSETS = torch.tensor([0, 3, 3, 6])                    # bag 1 empty
BAG = torch.tensor([0, 0, 0, 2, 2, 2, 3, 3, 3, 3, 3])


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("padding_idx", [None, 4])
def test_bag_scale_grad_by_freq_is_inverse_frequency(mode, padding_idx):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 3, generator=g, dtype=torch.float64)
    up = torch.randn(4, 3, generator=g, dtype=torch.float64)
    ours = w.clone().requires_grad_()
    F.embedding_bag(IDX, ours, OFFSETS, mode=mode, scale_grad_by_freq=True, padding_idx=padding_idx).backward(up)
    ref = w.clone().requires_grad_()
    rows = TF.embedding(IDX, ref, padding_idx=padding_idx, scale_grad_by_freq=True)   # (n, D)
    keep = torch.ones_like(IDX, dtype=torch.bool) if padding_idx is None else IDX != padding_idx
    rows = rows * keep.unsqueeze(1)
    sums = torch.zeros(4, 3, dtype=torch.float64).index_add(0, BAG, rows)
    if mode == "mean":
        sums = sums / torch.zeros(4, dtype=torch.float64).index_add(0, BAG, keep.double()).clamp(min=1).unsqueeze(1)
    sums.backward(up)
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"mode": "sum"}, {"mode": "mean", "padding_idx": 4},
                                    {"mode": "sum", "per_sample_weights": torch.linspace(-1, 1, 11)}])
def test_bag_sparse_gradient_is_torchs(kwargs):
    w = torch.randn(10, 3)
    ours, ref = w.clone().requires_grad_(), w.clone().requires_grad_()
    up = torch.randn(4, 3)
    F.embedding_bag(IDX, ours, OFFSETS, sparse=True, **kwargs).backward(up)
    TF.embedding_bag(IDX, ref, OFFSETS, sparse=True, **kwargs).backward(up)
    assert ours.grad.layout == ref.grad.layout == torch.sparse_coo
    assert torch.equal(ours.grad._indices(), ref.grad._indices())
    torch.testing.assert_close(ours.grad._values(), ref.grad._values())


def test_sparse_with_scale_grad_by_freq_raises_in_backward_as_torch():
    for fn in (F.embedding, TF.embedding):
        w = torch.randn(10, 3, requires_grad=True)
        y = fn(IDX, w, sparse=True, scale_grad_by_freq=True)   # the forward runs, as torch's
        with pytest.raises(RuntimeError, match="scale_grad_by_freq not supported with sparse"):
            y.sum().backward()
