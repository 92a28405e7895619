"""The Python side of the compiled CPU kernels (``csrc/cpu/<family>.cpp``): one module per family
holding the fake (meta) kernels of its ops, and what else is registered with them."""
from __future__ import annotations

import torch

FAMILIES = ("activation", "attention", "conv", "dropout", "embedding", "linear", "loss", "normalization",
            "pooling", "recurrent")


def acc(dtype):
    """The accumulation dtype of a kernel computing in ``dtype`` (float32 for the 16-bit dtypes)."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def register_fakes() -> None:
    """Register every family's fake kernels (once the compiled library defining the ops is loaded)."""
    import importlib

    for fam in FAMILIES:
        importlib.import_module(f"{__name__}.{fam}").register(torch.library.register_fake)
