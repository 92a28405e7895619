"""Swap the layers of an existing model for their torch_bp twins, and back.

Three mechanisms, all declared in :mod:`torch_bp.registry`:

- **class swaps** (``LAYERS``' module pairs): our torch.nn twins subclass torch.nn's and keep
  their attributes, so a swap is a class change on a module that keeps its ``__dict__``
  (parameters, buffers, hooks, training mode, device, dtype): nothing is copied;
- **converters** (``CONVERTERS``) for modules that need more: torch.nn classes by exact class
  (the Transformer layers, MultiheadAttention's out-projection), and modules found in the wild
  (Hugging Face's RMSNorm, Conv1D, activation classes, attention calling
  ``apply_rotary_pos_emb``), recognised by structure and swapped only after a probe shows that
  the conversion computes what the original computes; a candidate that fails its probe is
  left as it is and reported. Users add their own with :func:`register_converter`;
- **functional interception** (:mod:`torch_bp._intercept`, ``functional=True``): calls to
  ``torch.nn.functional`` inside any module's forward run our rule where we have one;
- **fusion** (``fuse=True``, :mod:`torch_bp.nn.fused`, patterns in ``registry.FUSIONS``): an
  ``nn.Sequential`` holding an adjacent pair with a fused rule (Linear -> ReLU/GELU/SiLU,
  BatchNorm -> ReLU) becomes a :class:`~torch_bp.nn.fused.FusedSequential` (a class swap), which runs
  the pair as one rule; our Transformer layers call fused rules in their forward. Exact: the values and
  gradients of the unfused layers within the dtype table; yields to hooks (docs/fusion.md).
"""
from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import _intercept

log = logging.getLogger("torch_bp")

_USER: list = []   # registry.Converter entries added by register_converter (consulted first)
# class -> function overrides of the tables below, consulted last (tests patch these)
_CONVERTERS: dict = {}
_REVERTERS: dict = {}

# Probe tolerance per dtype: the table of tests/harness.py (our rule and the original evaluate
# one formula in a different order; see its docstring for the argument).
_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2 * 2.0 ** -7, torch.float16: 2 * 2.0 ** -10}


def _tol(dtype):
    t = _TOL.get(dtype, 1e-5)
    return dict(rtol=t, atol=t)


def _swap_class(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    return new


def register_converter(torch_cls: type | None = None, convert_fn: Callable | None = None, ours_cls: type | None = None,
                       revert_fn: Callable | None = None, *, match: Callable | None = None,
                       probe: Callable | None = None, check: Callable | None = None, name: str | None = None) -> None:
    """Declare how to convert a module of yours to torch_bp (and back).

    Either ``torch_cls``: every module of exactly that class is converted by ``convert_fn(module)``;
    or ``match(module) -> bool``: a structural test, and then the conversion is kept only where the
    converted module gives the original's output on ``probe(module) -> tuple of inputs`` (parameters
    randomised in a copy) or where ``check(module, tol) -> bool`` says so. ``ours_cls`` is the class
    (or a base class) of converted modules, ``revert_fn`` gives the original back.
    Your declarations are consulted before the registry's (:data:`torch_bp.registry.CONVERTERS`).
    """
    from .registry import Converter
    if convert_fn is None or ours_cls is None or revert_fn is None or (torch_cls is None) == (match is None):
        raise ValueError("register_converter needs convert_fn, ours_cls, revert_fn and exactly one of "
                         "torch_cls and match")
    if match is not None and probe is None and check is None:
        raise ValueError("register_converter: a match needs a probe or a check")
    _USER.insert(0, Converter(name or ours_cls.__name__, ours_cls, convert_fn, revert_fn, torch_cls, match, probe,
                              check))


def _converters():
    from . import registry
    return _USER + registry.CONVERTERS


def _tables():
    """(class -> convert fn, class -> revert fn) of the class swaps and exact-class converters."""
    from . import registry
    conv = {torch_cls: (lambda m, c=ours: _swap_class(m, c)) for ours, torch_cls in registry.module_pairs()}
    rev = {ours: (lambda m, c=torch_cls: _swap_class(m, c)) for ours, torch_cls in registry.module_pairs()}
    for c in reversed(_converters()):  # the first declaration wins
        if c.torch_cls is not None:
            conv[c.torch_cls] = c.convert
            rev[c.ours] = c.revert
    conv.update(_CONVERTERS)
    rev.update(_REVERTERS)
    return conv, rev


def _outputs(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    return []


def verify(module: torch.nn.Module, converter) -> tuple[bool, str]:
    """Does ``converter`` compute what ``module`` computes? (ok, reason) from its probe or check."""
    try:
        if converter.check is not None:
            return (True, "") if converter.check(module, _tol) else (False, "differs on the probe")
        a = copy.deepcopy(module)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in a.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
            b = converter.convert(a)  # shares a's parameters
            if b is None:
                return False, "does not apply"
            x = converter.probe(a)
            ya, yb = _outputs(a(*x)), _outputs(b(*x))
    except Exception as e:  # noqa: BLE001 -- any failure means: not recognised
        return False, f"{type(e).__name__} on the probe"
    if len(ya) != len(yb) or not ya:
        return False, "different outputs on the probe"
    for s, t in zip(ya, yb):
        prec = converter.precision if converter.precision is not None and s.is_floating_point() and \
            torch.finfo(converter.precision).eps > torch.finfo(s.dtype).eps else s.dtype
        if s.shape != t.shape or s.dtype != t.dtype or not torch.allclose(s, t, **_tol(prec)):
            return False, "differs on the probe"
    return True, ""


def _convert_one(module, path, classes, wild, rejected):
    fn = classes.get(type(module))
    if fn is not None:
        return fn(module)
    reasons = []
    for c in wild:
        if c.match(module):
            ok, why = verify(module, c)
            new = c.convert(module) if ok else None
            if new is not None:
                return new
            reasons.append(f"{c.name}: {why or 'does not apply'}")
    if reasons:
        rejected.append((path, type(module).__name__, reasons))
    return module


def _walk(model, fn, path=""):
    model = fn(model, path)
    for name, child in list(model._modules.items()):
        if child is not None:
            model._modules[name] = _walk(child, fn, f"{path}.{name}" if path else name)
    return model


def _revert_one(module, rev, wild):
    fn = rev.get(type(module))
    if fn is not None:
        return fn(module)
    for c in wild:
        if isinstance(module, c.ours):
            return c.revert(module)
    return module


@dataclass
class ConversionReport:
    converted: Counter          # torch_bp class name -> count
    unconverted: Counter        # type name of leaf modules with own parameters left as they are
    params_total: int
    params_torch_bp: int
    param_free: Counter = field(default_factory=Counter)   # parameter-free leaf modules not converted
    rejected: list = field(default_factory=list)           # (path, class, reasons): recognised, probe failed
    backward: object = None     # torch_bp._coverage.BackwardCoverage, with example_inputs
    intercepting: bool = False  # functional calls in the forward run our rules

    @property
    def share(self) -> float:
        """Share of parameters owned by torch_bp layers (1.0 when the model has none)."""
        return 1.0 if self.params_total == 0 else self.params_torch_bp / self.params_total

    def __str__(self) -> str:
        conv = ", ".join(f"{k} x{v}" for k, v in sorted(self.converted.items())) or "nothing"
        lines = [f"torch_bp: converted {conv}",
                 f"torch_bp: {self.share:.1%} of {self.params_total} parameters in torch_bp layers",
                 f"torch_bp: functional calls in the forward {'are' if self.intercepting else 'are NOT'} "
                 f"intercepted"]
        if self.unconverted:
            left = ", ".join(f"{k} x{v}" for k, v in sorted(self.unconverted.items()))
            lines.append(f"torch_bp: not converted (no torch_bp rule): {left}")
        if self.param_free:
            left = ", ".join(f"{k} x{v}" for k, v in sorted(self.param_free.items()))
            lines.append(f"torch_bp: parameter-free modules not converted: {left}")
        for path, cls, reasons in self.rejected:
            lines.append(f"torch_bp: {path} ({cls}) looks convertible but was left alone: {'; '.join(reasons)}")
        if self.backward is None:
            lines.append("torch_bp: counted parameters only; pass example_inputs to count the backward graph")
        else:
            lines.append(str(self.backward))
        return "\n".join(lines)


def _is_ours(module: torch.nn.Module, layer_classes) -> bool:
    """A torch_bp layer: a class the converter produces (containers such as the Lightning
    models are torch_bp classes too, but not layers)."""
    return (type(module) in layer_classes or type(module).__module__.startswith("torch_bp.nn.")) and \
        not isinstance(module, torch.nn.Sequential)   # the fusion pass's FusedSequential is a container


def conversion_report(model: torch.nn.Module, example_inputs=None, loss_fn=None) -> ConversionReport:
    """What in ``model`` runs through torch_bp and what does not.

    Without ``example_inputs`` it counts parameters (and lists modules). With them (a tuple of
    positional arguments, a dict of keyword arguments, or one tensor) it also runs one forward
    and classifies the backward graph of the loss (``loss_fn(output)``, by default the output's
    ``.loss`` or the output itself): the share of backward compute nodes that are torch_bp rules,
    and what stayed with autograd by op and by module path (:mod:`torch_bp._coverage`).
    """
    converted, unconverted, param_free = Counter(), Counter(), Counter()
    total = ours = 0
    layer_classes = set(_tables()[1])
    wild = [c for c in _converters() if c.match is not None]
    rejected = []
    for path, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        total += own
        if _is_ours(module, layer_classes):
            converted[type(module).__name__] += 1
            ours += own
            continue
        if own:
            unconverted[type(module).__name__] += 1
        elif not module._modules:
            param_free[type(module).__name__] += 1
        _convert_one(module, path, {}, wild, rejected)  # only to list candidates that fail their probe
    report = ConversionReport(converted, unconverted, total, ours, param_free, rejected,
                              intercepting=_intercept.attached(model))
    if example_inputs is not None:
        from ._coverage import backward_coverage
        report.backward = backward_coverage(model, example_inputs, loss_fn)
    return report


def _set_fusion(module: torch.nn.Module, fuse: bool) -> torch.nn.Module:
    """The fusion pass on one module: a plain nn.Sequential holding a fusible pair becomes a FusedSequential
    (and back with ``fuse=False``); modules with a ``fuse_layers`` switch (our Transformer layers) get it set."""
    from .nn import fused
    if fuse and type(module) is torch.nn.Sequential and fused.fusible_pairs(module):
        return _swap_class(module, fused.FusedSequential)
    if not fuse and type(module) is fused.FusedSequential:
        return _swap_class(module, torch.nn.Sequential)
    if hasattr(type(module), "fuse_layers"):
        if fuse:
            module.fuse_layers = True
        else:
            module.__dict__.pop("fuse_layers", None)
    return module


def convert(model: torch.nn.Module, inplace: bool = False, functional: bool = True,
            fuse: bool = True) -> torch.nn.Module:
    """Replace every supported layer in ``model`` by its torch_bp twin.

    Parameters, buffers, hooks, training mode, device and dtype are kept (with
    ``inplace=False`` the model is deep-copied first). Unsupported modules are left as they
    are; modules recognised by structure whose probe fails are left too, and reported.
    ``functional=True`` also makes functional calls inside the model's forward (``F.silu``,
    ``F.cross_entropy``, ``F.scaled_dot_product_attention``, ``x.softmax(-1)``, ...) run our
    rules where we have one (:mod:`torch_bp._intercept`); ``False`` removes that.
    ``fuse=True`` runs adjacent layers with a fused rule as one (:mod:`torch_bp.nn.fused`: the same
    values and gradients, fewer passes over memory; the children, parameters and ``state_dict`` keys
    stay as they are; a pair with a hook on either module, or inside a ``per_sample_grads`` block or an
    error-signal capture, runs unfused); ``False`` turns that off (also on a model converted before).
    The summary (:func:`conversion_report`) is logged at INFO level.
    """
    if not inplace:
        model = copy.deepcopy(model)
    classes = _tables()[0]
    wild = [c for c in _converters() if c.match is not None]
    rejected = []
    model = _walk(model, lambda m, p: _convert_one(m, p, classes, wild, rejected))
    model = _walk(model, lambda m, p: _set_fusion(m, fuse))
    for path, cls, reasons in rejected:
        log.info("torch_bp: %s (%s) left alone: %s", path, cls, "; ".join(reasons))
    (_intercept.attach if functional else _intercept.detach)(model)
    if log.isEnabledFor(logging.INFO):
        log.info("%s", conversion_report(model))
    return model


def revert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """The way back: the original classes, and no interception (for export)."""
    if not inplace:
        model = copy.deepcopy(model)
    rev = _tables()[1]
    wild = [c for c in _converters() if c.match is not None]
    model = _walk(model, lambda m, p: _set_fusion(m, False))
    model = _walk(model, lambda m, p: _revert_one(m, rev, wild))
    return _intercept.detach(model)
