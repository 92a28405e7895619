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

The mechanisms that touch a rule from outside, each through autograd's public hooks on the
rule's backward node (the node of a custom Function is its ``ctx``), never by wrapping it:

- per-example gradients (:mod:`torch_bp.per_sample`): a rule that defines ``per_sample``
  (and optionally ``per_sample_norm_sq``, ``backward_per_sample``, ``grad_from_per_sample``)
  is called with its own ``ctx`` and grad_outputs while a ``per_sample_grads`` block is open;
- error-signal capture for the gradient monitor (:mod:`torch_bp._signals`): the gradient
  arriving at a watched module's output, read by a pre-hook on that output's node;
- recompute recipes (:mod:`torch_bp.ops._lean`): a rule whose docstring says it records or
  uses a recipe saves an activation's input instead of its output.

Every subclass is listed in :data:`RULES` (a test checks that each has a registry row).
"""
from __future__ import annotations

import torch

RULES: list[type] = []


class Rule(torch.autograd.Function):
    """Base of every torch_bp backward rule (see the module docstring)."""

    compiled: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        RULES.append(cls)
