"""The private torch internals the loading and backend-selection code relies on, each with a
public fallback (tests/test_compat.py runs both on every torch CI installs).

A private probe is used only while it exists and answers; when a torch release removes or
changes it, the public fallback answers instead and torch_bp still imports and runs.

- :func:`functorch_transform_active`: whether a ``torch.func`` transform (``vmap``, ``grad``,
  ``jacrev``, ``jvp``, ...) is active. The private probe is
  ``torch._C._functorch.peek_interpreter_stack`` (torch has no public query). The public
  fallback looks at the tensors instead: inside a transform they are functorch wrappers
  without storage, so ``Tensor.untyped_storage()`` raises; a tensor without storage for
  another reason (sparse, nested) also reads as "in a transform", which only makes the
  caller take its Python rule.
"""
from __future__ import annotations

import torch


def _private_peek():
    functorch = getattr(torch._C, "_functorch", None)
    peek = getattr(functorch, "peek_interpreter_stack", None)
    if peek is None:
        return None
    try:
        peek()
    except Exception:  # present but changed: the public fallback answers
        return None
    return peek


_peek = _private_peek()  # None: the public fallback is in use


def _has_storage(t: torch.Tensor) -> bool:
    try:
        t.untyped_storage()
    except (NotImplementedError, RuntimeError):
        return False
    return True


def functorch_transform_active_public(*tensors) -> bool:
    """The public fallback of :func:`functorch_transform_active` (see the module docstring)."""
    return any(not _has_storage(t) for t in tensors if isinstance(t, torch.Tensor))


def functorch_transform_active(*tensors) -> bool:
    """True inside a ``torch.func`` transform (``tensors``: the ones the caller is about to use)."""
    if _peek is not None:
        return _peek() is not None
    return functorch_transform_active_public(*tensors)


def private_in_use() -> dict[str, bool]:
    """Which private probes this torch provides (``False``: the public fallback runs)."""
    return {"torch._C._functorch.peek_interpreter_stack": _peek is not None}


# --- the rules and functionals' private probes, each with a public fallback ---
def _private(path: str):
    """The private torch attribute at ``path`` (dotted, below ``torch``), or None where it is gone."""
    obj = torch
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


_transforms_active = _private("_C._are_functorch_transforms_active")
_maybe_get_level = _private("_C._functorch.maybe_get_level")
_internal_overlap = _private("_debug_has_internal_overlap")
_storage_use_count = _private("_C._storage_Use_Count")


def transforms_active() -> bool:
    """True while a ``torch.func`` transform runs. Private probe
    ``torch._C._are_functorch_transforms_active``; without it, True (the callers then take their
    plain path: recompute recipes and in-place buffers off, correct but leaner features unused)."""
    return True if _transforms_active is None else bool(_transforms_active())


def is_functorch_wrapped(t: torch.Tensor) -> bool:
    """True for a tensor wrapped by a ``torch.func`` transform (its values are not readable
    eagerly). Private probe ``torch._C._functorch.maybe_get_level``; public fallback: a wrapper has
    no storage."""
    if _maybe_get_level is not None:
        return _maybe_get_level(t) != -1
    return not _has_storage(t)


def has_internal_overlap(t: torch.Tensor) -> bool:
    """True when several elements of ``t`` share one memory location (torch refuses to write
    into such a tensor in place). Private probe ``torch._debug_has_internal_overlap``; public
    fallback: a dim of stride 0 and size > 1 (an expanded tensor, the case that occurs)."""
    if _internal_overlap is not None:
        return _internal_overlap(t) == 1
    return any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape))


def storage_use_count(t: torch.Tensor) -> int | None:
    """How many tensors use ``t``'s storage (None where torch cannot tell: callers then assume it
    is shared). Private probe ``torch._C._storage_Use_Count``."""
    if _storage_use_count is None:
        return None
    try:
        return int(_storage_use_count(t.untyped_storage()._cdata))
    except Exception:
        return None


def autocast_enabled() -> bool:
    """True while autocast is on for any device type (public API)."""
    return any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda", "xpu", "mps")
               if _autocast_device_ok(d))


def _autocast_device_ok(device: str) -> bool:
    try:
        torch.is_autocast_enabled(device)
    except Exception:  # a device type this build does not know
        return False
    return True


# --- module hooks (the fusion pass of torch_bp.convert: two modules run as one only where neither is hooked) ---
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def has_hooks(module: torch.nn.Module) -> bool:
    """Whether a call of ``module`` would run a hook: one registered on it, or a global module hook.

    torch has no public query; the private probe reads the hook dicts ``torch.nn.Module`` keeps
    (``module._forward_hooks``, ... and ``torch.nn.modules.module._global_forward_hooks``, ...). The
    fallback, where one of them is missing or not a mapping, answers True (a caller then keeps the
    module's own call, where every hook runs as registered)."""
    mm = torch.nn.modules.module
    try:
        for name in _HOOK_DICTS:
            if len(getattr(module, name)) or len(getattr(mm, "_global" + name)):
                return True
    except (AttributeError, TypeError):
        return True
    return False
