r"""Triton kernels: the CUDA implementations of the ``torch_bp::*`` ops (``csrc/ops.cpp``).

Each launcher here takes and returns exactly what the op's schema says, and is registered as
the op's ``CUDA`` kernel by :func:`register`; the Functions in :mod:`torch_bp.ops` call the op
(``torch.ops.torch_bp.<name>``) when :func:`torch_bp.backend.use_cpp` accepts their tensors,
so torch.compile, the fake kernels and ``opcheck`` see one op per rule on every device.
Every kernel's docstring names the Python rule it implements; the math is stated once, there.

Triton is optional: this package imports ``triton`` when it is imported, and
:mod:`torch_bp.backend` imports it only on a machine with a CUDA device. With
``TRITON_INTERPRET=1`` set before the import, Triton's interpreter runs the same kernels on
CPU tensors; ``tests/test_triton.py`` checks every kernel that way against its Python rule.

Files (one per family, as ``torch_bp/ops/`` and ``csrc/cpu/``):
  normalization.py  layer_norm_fwd/_bwd, rms_norm_fwd/_bwd
  activation.py     softmax/log_softmax fwd/bwd, relu_fwd, relu_mask, mask_bwd, gelu/silu fwd/bwd
  linear.py         bias_act_fwd/_bwd (bias + relu | gelu (none, tanh) | silu)
  dropout.py        dropout_fwd, pack_mask
  loss.py           cross_entropy_fwd/_bwd (no probability tensor), linear_cross_entropy (chunked, fused)
  attention.py      attention_fwd/_bwd (flash style: row log-sum-exp saved, probabilities recomputed)
"""
from __future__ import annotations

import importlib

import torch

FAMILIES = ("normalization", "activation", "linear", "dropout", "loss", "attention")
_lib = None


def kernels() -> dict:
    """op name -> launcher: the CUDA kernels of these ``torch_bp`` ops (each family's ``OPS``)."""
    out = {}
    for family in FAMILIES:
        out.update(importlib.import_module(f"{__name__}.{family}").OPS)
    return out


def register() -> frozenset:
    """Register every launcher as the CUDA kernel of its ``torch_bp`` op (once); returns the op names.

    Needs the op schemas, i.e. the compiled library (``torch_bp._ext``) loaded.
    """
    global _lib
    if _lib is None:
        lib = torch.library.Library("torch_bp", "IMPL")
        for name, fn in kernels().items():
            lib.impl(name, fn, "CUDA")
        _lib = lib
    return frozenset(kernels())
