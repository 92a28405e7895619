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
