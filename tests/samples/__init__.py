"""Sample inputs for every registry layer, shared by the harness, fuzzers and benchmarks.

Each family module registers generator functions with the decorators below:

- ``@samples("name")``: ``fn(make) -> iterable of Sample`` for the functional ``name``;
  ``make`` creates tensors of the dtype and device under test (see :class:`Make`).
- ``@module_samples("name")``: ``fn(make) -> iterable of ModuleSample`` for the modules of
  registry row ``name`` (constructor arguments and forward inputs).
- ``@error_samples("name")``: ``fn(make) -> iterable of Sample`` of *bad* inputs that torch
  rejects; ours must raise the same exception type.

Keep sizes small (gradcheck in float64 runs on every sample). Descriptions name what the
sample covers ("2d", "noncontiguous", "empty-batch", "large-magnitude", ...).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

SAMPLES: dict[str, Callable] = {}
MODULE_SAMPLES: dict[str, Callable] = {}
ERROR_SAMPLES: dict[str, Callable] = {}


@dataclass
class Sample:
    desc: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    # False for samples that sit on a kink (relu at 0): finite differences are meaningless
    # there, but the convention is still compared with torch.
    gradcheck: bool = True
    # Condition number of the sample (default 1): how much rounding in the inputs' own
    # magnitude is amplified by cancellation (e.g. layer_norm of values 1e4 +- 5: ~1e4/3).
    # The dtype tolerance of the harness is multiplied by it; set it only with that argument.
    cond: float = 1.0


@dataclass
class ModuleSample:
    desc: str
    ctor_args: tuple
    ctor_kwargs: dict
    inputs: tuple
    forward_kwargs: dict = field(default_factory=dict)
    train: bool = True
    # Names of the module classes of the row this sample is for (empty: all of them), for a
    # row whose modules take different inputs (BatchNorm1d and BatchNorm2d).
    only: tuple = ()


class Make:
    """Tensor factory for one dtype and device.

    ``make(*shape)`` draws uniform values in [low, high) as a leaf that requires grad
    (floating dtypes). ``layout`` gives the same values with another memory layout:
    ``"t"`` (last two dims transposed), ``"slice"`` (every other element of the last dim),
    ``"channels_last"`` (4-d). The result is always a leaf.
    """

    def __init__(self, dtype=torch.float32, device="cpu"):
        self.dtype, self.device = dtype, torch.device(device)

    def __call__(self, *shape, low=-2.0, high=2.0, requires_grad=True, layout=None, dtype=None):
        dtype = dtype or self.dtype
        if layout == "t":
            t = self._rand(shape[:-2] + (shape[-1], shape[-2]), low, high, dtype).transpose(-1, -2)
        elif layout == "slice":
            t = self._rand(shape[:-1] + (2 * shape[-1],), low, high, dtype)[..., ::2]
        elif layout == "channels_last":
            t = self._rand(shape, low, high, dtype).contiguous(memory_format=torch.channels_last)
        else:
            t = self._rand(shape, low, high, dtype)
        return t.detach().requires_grad_(requires_grad and t.is_floating_point())

    def _rand(self, shape, low, high, dtype):
        base = torch.rand(shape, dtype=torch.float64, device=self.device)
        return (low + (high - low) * base).to(dtype)

    def int(self, high, *shape, low=0):
        return torch.randint(low, high, shape, device=self.device)

    def prob(self, *shape, dim=-1):
        """Rows of a probability distribution along ``dim`` (no grad)."""
        return torch.softmax(self._rand(shape, -2, 2, torch.float64), dim).to(self.dtype)


def samples(name):
    def deco(fn):
        SAMPLES[name] = fn
        return fn
    return deco


def module_samples(name):
    def deco(fn):
        MODULE_SAMPLES[name] = fn
        return fn
    return deco


def error_samples(name):
    def deco(fn):
        ERROR_SAMPLES[name] = fn
        return fn
    return deco


def _load_all():
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_load_all()


def get_samples(name: str, dtype=torch.float32, device="cpu") -> list[Sample]:
    torch.manual_seed(1234)
    return list(SAMPLES[name](Make(dtype, device)))
