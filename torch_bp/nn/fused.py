"""Fusion: adjacent layers run as one fused rule (the fusion pass of ``torch_bp.convert``, docs/fusion.md).

The patterns are declared in :data:`torch_bp.registry.FUSIONS`: a module of one class followed, in an
``nn.Sequential``, by a module of another runs as one call of a fused rule. Nothing about the model
changes but the container's class: the children stay where they are (same objects, names, parameters,
buffers, ``state_dict`` keys), and :class:`FusedSequential` only decides, at each forward, which
adjacent pairs to run as one. A pair runs unfused, each module through its own call, where

- either module has a hook (its own or a global module hook): a hook sees exactly the call it was
  registered for. The gradient monitor's error-signal hooks and the per-sample hooks are such hooks,
  so those see every layer boundary (fusion yields to them);
- a ``per_sample_grads`` block is open or an error-signal capture is active (:func:`fusing`).
"""
from __future__ import annotations

import torch

from .. import _compat, _signals, per_sample
from .. import functional as F


def fusing() -> bool:
    """Fused calls are allowed now: no per-sample block open, no error-signal capture active."""
    return per_sample._state is None and _signals._capture is None


def _pair_free(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    return not _compat.has_hooks(first) and not _compat.has_hooks(second)


def match(first: torch.nn.Module, second: torch.nn.Module):
    """The declared fusion of ``first`` followed by ``second`` (registry.FUSIONS), or None."""
    from ..registry import FUSIONS
    for f in FUSIONS:
        if type(first) in f.first and type(second) in f.second and f.applies(first, second):
            return f
    return None


class FusedSequential(torch.nn.Sequential):
    """A :class:`torch.nn.Sequential` whose adjacent children run as one fused rule where a pattern of
    :data:`torch_bp.registry.FUSIONS` matches (Linear -> ReLU/GELU/SiLU, BatchNorm -> ReLU).

    ``torch_bp.convert(model)`` makes every ``nn.Sequential`` holding such a pair one of these (a class
    swap: children, parameters and ``state_dict`` unchanged); ``convert(model, fuse=False)`` and
    ``torch_bp.revert`` make it a plain ``nn.Sequential`` again. The values and gradients are those of
    the unfused children, within the dtype table of tests/harness.py. Calling a child on its own
    (``model[0](x)``) runs that child alone, as always.
    """

    def forward(self, input):
        if not fusing():
            return super().forward(input)
        mods = list(self._modules.values())
        i, n = 0, len(mods)
        while i < n:
            if i + 1 < n:
                f = match(mods[i], mods[i + 1])
                if f is not None and _pair_free(mods[i], mods[i + 1]):
                    input = f.run(mods[i], mods[i + 1], input)
                    i += 2
                    continue
            input = mods[i](input)
            i += 1
        return input


def fusible_pairs(seq: torch.nn.Sequential) -> int:
    """How many adjacent pairs of ``seq`` match a declared fusion (hooks aside)."""
    mods = list(seq._modules.values())
    count, i = 0, 0
    while i + 1 < len(mods):
        if match(mods[i], mods[i + 1]) is not None:
            count, i = count + 1, i + 2
        else:
            i += 1
    return count


# --- the fused calls of the registry's patterns ---
def activation_name(act: torch.nn.Module) -> tuple[str, str]:
    """(activation, approximate) of linear_activation for a ReLU, GELU or SiLU module."""
    name = type(act).__name__.lower()
    return name, getattr(act, "approximate", "none")


def linear_activation(linear: torch.nn.Module, act: torch.nn.Module, input):
    """Linear then ReLU/GELU/SiLU as :func:`torch_bp.functional.linear_activation`."""
    name, approximate = activation_name(act)
    return F.linear_activation(input, linear.weight, linear.bias, name, approximate)


def batch_norm_relu(bn: torch.nn.Module, relu: torch.nn.Module, input):
    """BatchNorm (its forward's bookkeeping: running statistics, num_batches_tracked) then ReLU as
    :func:`torch_bp.functional.batch_norm_relu`."""
    return bn._normalize(input, F.batch_norm_relu)
