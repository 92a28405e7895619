"""Which backend runs the rules: the Python rules of ``torch_bp.ops`` or the compiled kernels.

The Python rules are the specification and always available. The compiled backend
(``csrc/``, registered as ``torch.ops.torch_bp.*``) runs the same rules as fused CPU kernels;
a Function calls them when :func:`use_cpp` says so for its tensors, and falls back to its
Python rule otherwise.

One switch: the environment variable ``TORCH_BP_BACKEND`` (read at import) or
:func:`set_backend`, with the values

- ``"auto"`` (default): the compiled kernels if they load (built once, on first import, if a
  compiler is there), else the Python rules after one warning saying why;
- ``"python"``: the Python rules only; nothing is loaded or built;
- ``"cpp"``: the compiled kernels, or an error saying why they are unavailable.

:func:`backend_info` says which backend runs and why the compiled one does not, if it does not.

The compiled kernels run for CPU tensors of dtype float32, float64 or bfloat16 (all of one
dtype), outside ``torch.func`` transforms (``vmap``, ``grad``, ...): there the Python rule
runs, since ``generate_vmap_rule`` vmaps the rule itself, and in a backward with
``create_graph=True`` (double backward differentiates the Python rule).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from . import _ext

MODES = ("auto", "python", "cpp")
DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def compiled_rules() -> dict[str, tuple[str, ...]]:
    """Rule class name -> the compiled ops it calls (each rule's ``compiled`` declaration)."""
    from .ops._rule import RULES
    return {cls.__name__: cls.compiled for cls in RULES if cls.compiled}


_mode = "python"
_cpp = False        # the compiled kernels are loaded and selected
_reason = ""        # why not, when they are not
_warned = False


@dataclass(frozen=True)
class BackendInfo:
    backend: str           # "cpp" or "python": what runs now
    requested: str         # the mode asked for ("auto", "python", "cpp")
    library: str | None    # the loaded extension, if any
    reason: str            # why the compiled backend is not running ("" when it is)

    def __str__(self):
        if self.backend == "cpp":
            return (f"torch_bp backend: cpp (requested {self.requested!r}): compiled kernels from {self.library}, "
                    f"for CPU tensors of dtype float32/float64/bfloat16; the Python rules elsewhere")
        return f"torch_bp backend: python (requested {self.requested!r}): {self.reason}"


def backend_info(build: bool = False) -> BackendInfo:
    """Which backend runs, and why the compiled one does not if it does not.

    ``build=True`` builds the compiled kernels now if they are missing (retrying a build that
    failed before) and selects them when the mode is ``"auto"`` or ``"cpp"``.
    """
    global _cpp, _reason
    if build:
        lib, reason = _ext.load(build=True, force=True)
        if _mode != "python":
            _cpp, _reason = lib is not None, reason
    return BackendInfo("cpp" if _cpp else "python", _mode, _ext._loaded, _reason)


def set_backend(name: str) -> BackendInfo:
    """Select ``"auto"``, ``"python"`` or ``"cpp"`` (see the module docstring); returns :func:`backend_info`.

    ``"cpp"`` raises ``RuntimeError`` with the reason when the compiled kernels are unavailable.
    """
    global _mode, _cpp, _reason, _warned
    if name not in MODES:
        raise ValueError(f"torch_bp backend must be one of {MODES}, got {name!r}")
    if name == "python":
        _mode, _cpp, _reason = name, False, "selected (TORCH_BP_BACKEND=python or set_backend('python'))"
        return backend_info()
    lib, reason = _ext.load(build=True)
    if lib is None and name == "cpp":
        raise RuntimeError(f"torch_bp: the compiled backend is unavailable: {reason}")
    _mode, _cpp, _reason = name, lib is not None, reason
    if lib is None and not _warned:
        _warned = True
        warnings.warn(f"torch_bp: using the Python backend: {reason}", RuntimeWarning, stacklevel=2)
    if lib is not None:
        _register_fakes()
    return backend_info()


def use_cpp(*tensors) -> bool:
    """True when the compiled kernels should run for these tensors (``None`` entries are skipped).

    NOTE: False while grad mode is on. A Function's forward always runs with grad mode off; its
    backward runs with grad mode on only under ``create_graph=True``, where the backward must be
    differentiable: the Python rule, built from differentiable ops, runs there.
    """
    if not _cpp or torch.is_grad_enabled():
        return False
    dtype = None
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype not in DTYPES:
            return False
        if dtype is None:
            dtype = t.dtype
        elif t.dtype != dtype:
            return False
    if not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None:
        return False  # under vmap/grad/jacrev: the Python rule (generate_vmap_rule needs it)
    return True


# --- fake (meta) kernels: in torch_bp/kernels/cpu/<family>.py, beside csrc/cpu/<family>.cpp ---
_fakes_done = False


def _register_fakes():
    global _fakes_done
    if _fakes_done:
        return
    _fakes_done = True
    from .kernels.cpu import register_fakes
    register_fakes()


def _init():
    mode = os.environ.get("TORCH_BP_BACKEND", "auto").strip().lower() or "auto"
    if mode not in MODES:
        warnings.warn(f"torch_bp: TORCH_BP_BACKEND={mode!r} is not one of {MODES}; using 'auto'", RuntimeWarning)
        mode = "auto"
    set_backend(mode)


_init()
