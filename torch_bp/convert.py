"""Swap the torch.nn layers of an existing model for their torch_bp twins, and back.

Our modules subclass torch.nn's and keep their attributes, so a swap is a class change
on a module that keeps its ``__dict__`` (parameters, buffers, hooks, training mode,
device and dtype): nothing is copied or re-initialised. Layers that need more than a
class swap (e.g. those that take an activation given as a string) register a converter
function with :func:`register_converter`.
"""
from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger("torch_bp")

# torch.nn class -> function(module) -> converted module; filled from the registry and by
# register_converter for layers needing more than a class swap.
_CONVERTERS: dict[type, Callable[[torch.nn.Module], torch.nn.Module]] = {}
_REVERTERS: dict[type, Callable[[torch.nn.Module], torch.nn.Module]] = {}


def _swap_class(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    return new


def register_converter(torch_cls: type, convert_fn: Callable, ours_cls: type, revert_fn: Callable) -> None:
    """Register how to convert ``torch_cls`` modules to ``ours_cls`` (and back)."""
    _CONVERTERS[torch_cls] = convert_fn
    _REVERTERS[ours_cls] = revert_fn


def _tables():
    from . import registry

    conv = {torch_cls: (lambda m, c=ours: _swap_class(m, c)) for ours, torch_cls in registry.module_pairs()}
    rev = {ours: (lambda m, c=torch_cls: _swap_class(m, c)) for ours, torch_cls in registry.module_pairs()}
    conv.update(_CONVERTERS)
    rev.update(_REVERTERS)
    return conv, rev


def _walk(model: torch.nn.Module, table) -> torch.nn.Module:
    fn = table.get(type(model))
    if fn is not None:
        model = fn(model)
    for name, child in list(model._modules.items()):
        if child is not None:
            model._modules[name] = _walk(child, table)
    return model


@dataclass
class ConversionReport:
    converted: Counter          # torch_bp class name -> count
    unconverted: Counter        # type name of leaf modules with own parameters left as they are
    params_total: int
    params_torch_bp: int

    @property
    def share(self) -> float:
        """Share of parameters owned by torch_bp layers (1.0 when the model has none)."""
        return 1.0 if self.params_total == 0 else self.params_torch_bp / self.params_total

    def __str__(self) -> str:
        conv = ", ".join(f"{k} x{v}" for k, v in sorted(self.converted.items())) or "nothing"
        lines = [f"torch_bp: converted {conv}",
                 f"torch_bp: {self.share:.1%} of {self.params_total} parameters in torch_bp layers"]
        if self.unconverted:
            left = ", ".join(f"{k} x{v}" for k, v in sorted(self.unconverted.items()))
            lines.append(f"torch_bp: not converted (no torch_bp rule): {left}")
        return "\n".join(lines)


def _is_ours(module: torch.nn.Module, layer_classes) -> bool:
    """A torch_bp layer: a class the converter produces (containers such as the Lightning
    models are torch_bp classes too, but not layers)."""
    return type(module) in layer_classes or type(module).__module__.startswith("torch_bp.nn.")


def conversion_report(model: torch.nn.Module) -> ConversionReport:
    """What in ``model`` runs through torch_bp layers and what does not."""
    converted, unconverted = Counter(), Counter()
    total = ours = 0
    layer_classes = set(_tables()[1])
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        total += own
        if _is_ours(module, layer_classes):
            converted[type(module).__name__] += 1
            ours += own
        elif own:
            unconverted[type(module).__name__] += 1
    return ConversionReport(converted, unconverted, total, ours)


def convert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """Replace every supported torch.nn layer in ``model`` by its torch_bp twin.

    Parameters, buffers, hooks, training mode, device and dtype are kept (with
    ``inplace=False`` the model is deep-copied first). Unsupported modules are left as
    they are. The summary (:func:`conversion_report`) is logged at INFO level.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model = _walk(model, _tables()[0])
    log.info("%s", conversion_report(model))
    return model


def revert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """The way back: replace torch_bp layers by the plain torch.nn classes (for export)."""
    if not inplace:
        model = copy.deepcopy(model)
    return _walk(model, _tables()[1])
