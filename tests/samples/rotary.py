"""Samples for the rotary family: Hugging Face's apply_rotary_pos_emb."""

import torch

from . import Sample, samples


def _tables(make, b, t, d, requires_grad=False):
    """cos/sin of positions 0..t-1 at Llama's frequencies, (b, t, d), as the rotary embedding module gives."""
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1).expand(b, t, d)
    cos = emb.cos().to(make.dtype).to(make.device).detach().requires_grad_(requires_grad)
    sin = emb.sin().to(make.dtype).to(make.device).detach().requires_grad_(requires_grad)
    return cos, sin


@samples("apply_rotary_pos_emb")
def _rotary(make):
    yield Sample("llama", (make(2, 4, 5, 8), make(2, 4, 5, 8), *_tables(make, 2, 5, 8)))
    yield Sample("gqa", (make(2, 4, 5, 8), make(2, 2, 5, 8), *_tables(make, 2, 5, 8)))
    yield Sample("seq-first-unsqueeze-2", (make(2, 5, 4, 6), make(2, 5, 2, 6), *_tables(make, 2, 5, 6)),
                 {"unsqueeze_dim": 2})
    yield Sample("odd-head-dim", (make(1, 2, 3, 5), make(1, 2, 3, 5), make(1, 3, 5, requires_grad=False),
                                  make(1, 3, 5, requires_grad=False)))
    yield Sample("tables-need-grad", (make(2, 2, 3, 4), make(2, 2, 3, 4), make(2, 3, 4), make(2, 3, 4)))
    yield Sample("noncontiguous", (make(2, 3, 4, 6).transpose(1, 2), make(2, 3, 4, 6).transpose(1, 2),
                                   *_tables(make, 2, 3, 6)))
    yield Sample("empty-batch", (make(0, 2, 3, 4), make(0, 2, 3, 4), *_tables(make, 0, 3, 4)))
