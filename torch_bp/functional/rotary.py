"""``torch_bp.functional``: rotary position embedding. See the package docstring."""
from __future__ import annotations

import functools

import torch

from ..ops import rotary as _rotary


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """Rotate ``q`` and ``k`` by the position tables ``cos`` and ``sin``: the Hugging Face function of
    this name and signature (Llama, Mistral, Qwen, GPT-NeoX). ``cos`` and ``sin`` (e.g. (B, T, D)) get a
    dim inserted at ``unsqueeze_dim`` to broadcast against ``q`` (B, H, T, D) and ``k`` (B, Hk, T, D).
    Returns ``(q_embed, k_embed)``. Mixed floating dtypes are computed in their promoted dtype.
    """
    dtype = functools.reduce(torch.promote_types, (q.dtype, k.dtype, cos.dtype, sin.dtype))
    q, k, cos, sin = (t if t.dtype == dtype else t.to(dtype) for t in (q, k, cos, sin))
    return _rotary.RotaryEmbeddingFunction.apply(q, k, cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim))
