"""Recompute recipes: let a rule save an activation's *input* instead of its output.

An elementwise activation whose backward keeps its input ``h`` (GELU) records, for its output
``y``, the recipe ``(h, f)`` with ``y = f(h)``. A rule that would save ``y`` (a linear following
the activation) saves ``h`` instead (the activation keeps it alive anyway, so it costs nothing)
and recomputes ``y = f(h)`` in its backward. ``f`` is the activation's own forward, so the
recomputed ``y`` is bit-identical and the gradients are exact. In an MLP each layer then saves
one tensor instead of two.

Recipes compose: a batch norm records ``z = bn(c)`` (with its saved statistics, weight and bias:
the ``deps`` of the recipe); a ReLU that saves only a bit mask and whose input ``z`` has a recipe
records ``y = relu(bn(c))``. A convolution after BN -> ReLU then saves ``c``, which the batch norm
keeps anyway, instead of ``y``.

Where recipes live: a :class:`torch.utils.weak.WeakTensorKeyDictionary` keyed by ``y`` itself
(by identity, never by ``id()``, which a new tensor may reuse); an entry dies with ``y``. It holds
``h`` and the deps until then, which the activation's own saved tensors hold anyway.

Safety: a recipe is used only if neither ``y`` nor ``h`` nor a dep was modified in place since
the activation ran (version counters), and never while ``torch.compile`` traces or a torch.func
transform (vmap, grad, jacrev) runs: there nothing is recorded or read, and the rules save ``y``
as usual.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from ._util import plain_eager

# y -> (y's version, h, h's version, f, ((dep, dep's version), ...)); the entry dies with y
_RECIPES = WeakTensorKeyDictionary()


def active() -> bool:
    """Recipes are recorded and used only in plain eager autograd (not under torch.compile, torch.func
    transforms or inference mode, whose tensors carry no version counter and need no backward)."""
    return plain_eager() and not torch.is_inference_mode_enabled()


def record(y: torch.Tensor, h: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor], *deps) -> None:
    """Note that ``y == f(h)`` (called from the activation's ``setup_context``); ``deps``: the other
    tensors ``f`` reads (None entries are skipped)."""
    if not active() or y is h or not isinstance(y, torch.Tensor) or type(y) is not torch.Tensor:
        return
    _RECIPES[y] = (y._version, h, h._version, f, tuple((d, d._version) for d in deps if d is not None))


def recipe(y: torch.Tensor):
    """``(h, f)`` with ``y == f(h)`` if a valid recipe exists for ``y``, else None."""
    # active() first: torch.compile must not trace into the dictionary (it refuses to)
    if not active() or type(y) is not torch.Tensor or not _RECIPES:   # recorded for plain tensors only
        return None
    entry = _RECIPES.get(y)
    if entry is None:
        return None
    y_version, h, h_version, f, deps = entry
    if y._version != y_version or h._version != h_version:
        return None
    if any(d._version != v for d, v in deps):
        return None
    return h, f


def deps(y: torch.Tensor) -> tuple:
    """The tensors the recipe of ``y`` reads besides ``h`` (call after :func:`recipe` found one)."""
    return tuple(d for d, _ in _RECIPES[y][4])
