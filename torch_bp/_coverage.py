"""Which backward rules a model's loss actually runs: torch_bp's, or autograd's.

:func:`backward_coverage` runs one forward (and the graph walk a backward would do) and
classifies every node of the backward graph reachable from the loss:

- **ours**: the node of a :class:`torch_bp.ops._rule.Rule` (a custom Function's node knows
  its Function class);
- **not counted**: ``AccumulateGrad``, layout and view nodes (view, reshape, transpose,
  permute, expand, (un)squeeze, slice, select, split, cat, stack, clone, dtype/device copies:
  their backward moves or re-lays gradient values, it computes none), and tensor-tensor
  additions ``AddBackward0`` (residual connections: the gradient passes through unchanged,
  reduced to the operand's shape). Their count is reported beside the share;
- **autograd**: every other node; listed by op name and by the module path whose forward
  created it (a TorchFunctionMode active during the forward tags each new node with the
  innermost module being run; nodes created outside the model's forward, e.g. by the loss
  function passed in, are listed as ``<outside the model>``).

The share is ours / (ours + autograd).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

from .ops._rule import Rule

_LAYOUT = re.compile(r"^(View|UnsafeView|ReshapeAlias|Transpose|T|Permute|Expand|Squeeze|Unsqueeze|Slice|Select|"
                     r"Split|SplitWithSizes|Unbind|Cat|Stack|Clone|ToCopy|Alias|AsStrided|Narrow|Unflatten|"
                     r"Flatten|Lift|LiftFresh)Backward\d*$")
_ADD = {"AddBackward0"}
_KEY = "torch_bp_module"


def classify(node) -> str:
    """'ours', 'layout', 'add' or 'autograd' for one node of a backward graph."""
    name = type(node).__name__
    if name == "AccumulateGrad" or _LAYOUT.match(name):
        return "layout"
    fwd = getattr(node, "_forward_cls", None)
    if isinstance(fwd, type) and issubclass(fwd, Rule):
        return "ours"
    if name in _ADD:
        return "add"
    return "autograd"


class _Tagger(TorchFunctionMode):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            fn = getattr(t, "grad_fn", None) if isinstance(t, torch.Tensor) else None
            if fn is not None and _KEY not in fn.metadata:
                fn.metadata[_KEY] = self.path[-1] if self.path else ""
        return out


def _nodes(roots):
    seen, stack, out = set(), [r for r in roots if r is not None], []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        out.append(n)
        stack.extend(f for f, _ in n.next_functions if f is not None)
    return out


@dataclass
class BackwardCoverage:
    ours: int
    autograd: int
    not_counted: Counter                                  # 'layout' / 'add' -> count
    by_op: Counter = field(default_factory=Counter)       # autograd node name -> count
    by_module: Counter = field(default_factory=Counter)   # (module path, node name) -> count
    ours_by_rule: Counter = field(default_factory=Counter)

    @property
    def share(self) -> float:
        total = self.ours + self.autograd
        return 1.0 if total == 0 else self.ours / total

    def __str__(self) -> str:
        lines = [f"torch_bp: {self.share:.1%} of backward compute nodes are torch_bp rules "
                 f"({self.ours} of {self.ours + self.autograd}; not counted: "
                 f"{self.not_counted.get('layout', 0)} layout/view/AccumulateGrad, "
                 f"{self.not_counted.get('add', 0)} additions)"]
        if self.by_op:
            lines.append("torch_bp: left to autograd, by op: "
                         + ", ".join(f"{k} x{v}" for k, v in self.by_op.most_common()))
            mods = Counter()
            for (path, _), v in self.by_module.items():
                mods[path] += v
            lines.append("torch_bp: left to autograd, by module: "
                         + ", ".join(f"{k or '<root>'} x{v}" for k, v in mods.most_common(12))
                         + (" ..." if len(mods) > 12 else ""))
        return "\n".join(lines)


def _as_loss(output):
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    if loss is None and isinstance(output, torch.Tensor):
        loss = output
    if loss is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        loss = output[0]
    if not isinstance(loss, torch.Tensor):
        raise TypeError("backward_coverage: cannot find the loss in the model's output; pass loss_fn")
    return loss


def backward_coverage(model: torch.nn.Module, example_inputs, loss_fn=None) -> BackwardCoverage:
    """Run ``model`` once on ``example_inputs`` and classify its backward graph (see module docstring).

    ``example_inputs``: a tuple of positional arguments, a dict of keyword arguments, or one tensor.
    ``loss_fn(output)`` gives the loss; by default the output's ``.loss`` (Hugging Face models given
    labels), or the output itself / its first element. Parameters' ``.grad`` are left untouched
    (the graph is walked, not run).
    """
    path: list[str] = []
    handles = []

    def leave(module, args, output):
        path.pop()  # returns None: a forward hook's return value would replace the output

    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: path.append(n)))
        handles.append(mod.register_forward_hook(leave, always_call=True))
    args, kwargs = ((), example_inputs) if isinstance(example_inputs, dict) else (
        (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs), {})
    try:
        with torch.enable_grad(), _Tagger(path):
            output = model(*args, **kwargs)
        loss = loss_fn(output) if loss_fn is not None else _as_loss(output)
    finally:
        for h in handles:
            h.remove()
    cov = BackwardCoverage(0, 0, Counter())
    for node in _nodes([loss.grad_fn]):
        kind = classify(node)
        name = type(node).__name__
        if kind == "ours":
            cov.ours += 1
            cov.ours_by_rule[node._forward_cls.__name__] += 1
        elif kind == "autograd":
            cov.autograd += 1
            cov.by_op[name] += 1
            cov.by_module[(node.metadata.get(_KEY, "<outside the model>"), name)] += 1
        else:
            cov.not_counted[kind] += 1
    return cov
