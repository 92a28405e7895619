"""``Rule``: the base class every torch_bp backward rule declares in its class line.

A ``Rule`` is an ordinary ``torch.autograd.Function``: ``forward``, ``setup_context`` and
``backward`` are staticmethods, called by torch exactly as written in the subclass, and
``apply`` is torch's own ``Function.apply``. Nothing in torch_bp rewrites a rule's class
after its body ran. What the base adds are declarations, read by the rest of the package:

``compiled``
    the ops of ``torch.ops.torch_bp`` the rule calls on the compiled backend (``csrc/cpu/
    <family>.cpp``; their fake kernels in ``torch_bp/kernels/cpu/<family>.py``). The rule
    calls them only where :func:`torch_bp.backend.use_cpp` allows and runs its own Python
    formula otherwise, so the Python rule stays the specification.

Three mechanisms act on a rule while it runs, all through public autograd APIs (the node of a
custom Function is its ``ctx``), and a rule takes part only through what it declares or calls
(docs/mechanisms.md):

- per-example gradients (:mod:`torch_bp.per_sample`): a rule that defines ``per_sample``
  (optionally ``per_sample_norm_sq``, ``grad_from_per_sample``) or ``backward_per_sample``
  takes part. Inside ``per_sample_grads``, forward hooks find the rule's node when it takes a
  tracked parameter, and a pre-hook on that node calls these with the ctx and the incoming
  grad_outputs just before ``backward``; the backward reuses what was computed through
  ``_util.summed_per_sample(ctx, i)`` and ``_util.backward_from_per_sample(ctx)``;
- error signals for the gradient monitor (:mod:`torch_bp._signals`): a pre-hook on the node
  that produced a watched layer's output reads the gradient arriving there; the rule neither
  sees nor declares anything;
- recompute recipes (:mod:`torch_bp.ops._lean`): the rule calls ``_lean.record`` /
  ``_lean.recipe`` in ``setup_context`` (its docstring says so); recipes are keyed weakly by
  tensor, checked by version counter, and off under torch.compile, torch.func and inference mode.

Every subclass is listed in :data:`RULES` (a test checks that each has a registry row).

The base also records each rule's ``forward`` signature on the function (``__signature__``, the
attribute :func:`inspect.signature` returns when present): torch's ``Function.apply`` binds the
call's arguments to ``inspect.signature(cls.forward)`` on every call of a Function with
``setup_context``, and building that signature anew each time is most of the fixed cost of a
call. The recorded signature is the one ``inspect`` would build; the function is not changed.
"""
from __future__ import annotations

import inspect

import torch

RULES: list[type] = []


class Rule(torch.autograd.Function):
    """Base of every torch_bp backward rule (see the module docstring)."""

    compiled: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        RULES.append(cls)
        fwd = cls.__dict__.get("forward")
        if isinstance(fwd, staticmethod) and "__signature__" not in fwd.__func__.__dict__:
            fwd.__func__.__signature__ = inspect.signature(fwd.__func__)
