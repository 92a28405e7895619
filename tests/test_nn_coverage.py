"""Every torch.nn module is either covered (a torch_bp twin with a rule) or listed, with a reason, in
``torch_bp.registry.NOT_COVERED``: a module a later torch adds fails here until it is one or the other."""
from __future__ import annotations

import torch
import torch.nn.modules

import torch_bp
from torch_bp import registry
from torch_bp.convert import _tables


def _torch_modules() -> set[str]:
    """The public module classes of torch.nn.modules (layers, losses, containers, base classes)."""
    return {name for name in torch.nn.modules.__all__
            if isinstance(getattr(torch.nn.modules, name), type)
            and issubclass(getattr(torch.nn.modules, name), torch.nn.Module)}


def _covered() -> set[str]:
    """torch.nn classes the converter swaps for a torch_bp twin (registry module pairs and converters)."""
    to_ours, _ = _tables()
    return {cls.__name__ for cls in to_ours if cls.__module__.startswith("torch.nn")}


def test_every_torch_nn_module_is_covered_or_listed():
    missing = sorted(_torch_modules() - _covered() - set(registry.NOT_COVERED))
    assert not missing, (f"torch.nn modules neither covered by a torch_bp twin nor listed in "
                         f"torch_bp.registry.NOT_COVERED with a reason: {missing}")


def test_not_covered_is_current():
    """No module is both covered and listed, every listed name is a torch.nn module, every reason says why."""
    both = sorted(_covered() & set(registry.NOT_COVERED))
    assert not both, f"covered, yet listed in NOT_COVERED: {both}"
    unknown = sorted(set(registry.NOT_COVERED) - _torch_modules())
    assert not unknown, f"NOT_COVERED names no torch.nn module: {unknown}"
    assert all(isinstance(r, str) and len(r) > 10 for r in registry.NOT_COVERED.values())


def test_twins_subclass_torch():
    """Each covered module's twin is a subclass of torch's class (usable wherever torch's is)."""
    for ours, theirs in registry.module_pairs():
        assert issubclass(ours, theirs), (ours, theirs)
    assert torch_bp.nn.__all__
