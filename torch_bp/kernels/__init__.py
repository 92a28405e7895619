"""Device kernels of the rules in :mod:`torch_bp.ops` that are written in Python (Triton).

The C++ CPU kernels live in ``csrc/cpu/``; the GPU kernels live here, one file per family
(``triton/normalization.py`` mirrors ``ops/normalization.py`` and ``csrc/cpu/normalization.cpp``).
Nothing here is imported by ``import torch_bp``: :mod:`torch_bp.backend` imports
:mod:`torch_bp.kernels.triton` only when a CUDA device and Triton are both present.
"""
