"""Kernels behind the rules of :mod:`torch_bp.ops`, one file per family in each folder:

- ``cpu/``: the Python side of the C++ CPU kernels in ``csrc/cpu/`` (their fake kernels);
- ``triton/``: the GPU kernels, written in Triton (``triton/normalization.py`` mirrors
  ``ops/normalization.py`` and ``csrc/cpu/normalization.cpp``). Nothing there is imported by
  ``import torch_bp``: :mod:`torch_bp.backend` imports :mod:`torch_bp.kernels.triton` only when a
  CUDA device and Triton are both present.

A rule names the ops it calls in its ``compiled`` declaration (:class:`torch_bp.ops._rule.Rule`).
"""
