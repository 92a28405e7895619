"""Error signals of a model's layers, captured by autograd hooks (for the gradient monitor).

The error signal reaching a layer is the gradient of the loss with respect to the layer's
output, the delta that the 1986 paper propagates. It is recorded with public autograd hooks,
no backward rule is wrapped or changed, and no extra backward pass is run:

- :func:`watch` puts a forward pre-hook and a forward hook on the chosen layers of a model
  (by default torch_bp's own layers, :func:`_is_layer`; any module works);
- while a capture is active (:func:`capture`, :func:`start`), the forward hook registers, on
  the autograd node that produced the layer's output (``output.grad_fn``), a pre-hook
  (``Node.register_prehook``) that adds the gradient arriving for that output to the layer's
  record when the backward reaches the node.

A layer's output is the first tensor of what its forward returns that has a ``grad_fn``
(``out`` of an LSTM's ``(out, (h, c))``). Without an active capture the hooks return at once
and no node gets a hook; a node hooked during a capture records only while that same capture
is active (not after :meth:`Capture.stop`, nor inside :func:`suspended`). Under
``torch.compile`` and torch.func transforms (vmap, grad) nothing is hooked or recorded, so
traced graphs never see the capture.

NOTE: a layer called several times in one step (a shared activation module, an unrolled
recurrence) accumulates the squares of all its error signals: its norm is that of the
concatenation. Two watched layers with the same output tensor (a container that returns its
last child's output unchanged) record the same signal.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch

from .ops._util import plain_eager

_ACTIVE = False                      # True only while capturing (the forward hooks check it first)
_capture: "Capture | None" = None    # the active capture


@dataclass
class Capture:
    """What one capture recorded: per layer, the squared norm of its error signal(s).

    ``order`` lists layers by their first forward call (depth order for a feed-forward
    net); ``tensors`` holds the error signals themselves when ``keep_tensors`` (histograms).
    """

    keep_tensors: bool = False
    order: list = field(default_factory=list)
    sq: dict = field(default_factory=dict)        # layer -> 0-d tensor, sum of grad_out**2
    tensors: dict = field(default_factory=dict)   # layer -> [grad_out, ...] (detached)
    closed: bool = False
    _seen: set = field(default_factory=set, repr=False)

    def norms(self) -> dict:
        """Layer name -> L2 norm of its error signal (float), in depth order; one device sync."""
        names = [n for n in self.order if n in self.sq]
        if not names:
            return {}
        values = torch.stack([self.sq[n].double() for n in names]).sqrt().tolist()
        return dict(zip(names, values))

    def stop(self) -> None:
        """End this capture (hooks already placed on the graph record nothing more)."""
        global _ACTIVE, _capture
        self.closed = True
        if _capture is self:
            _capture, _ACTIVE = None, False

    def _add(self, name: str, grad: torch.Tensor) -> None:
        g = grad.detach()
        sq = (g if g.dtype == torch.float64 else g.float()).square().sum()  # low precision: in fp32
        self.sq[name] = sq if name not in self.sq else self.sq[name] + sq
        if self.keep_tensors:
            self.tensors.setdefault(name, []).append(g)


def start(keep_tensors: bool = False) -> Capture:
    """Begin capturing error signals (replacing any capture still active)."""
    global _ACTIVE, _capture
    if _capture is not None:
        _capture.stop()
    _capture, _ACTIVE = Capture(keep_tensors), True
    return _capture


@contextlib.contextmanager
def capture(keep_tensors: bool = False):
    """``with capture() as c: loss.backward()`` then ``c.norms()``: layers must be :func:`watch`-ed."""
    c = start(keep_tensors)
    try:
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def suspended():
    """Record nothing inside this block (e.g. a side computation during a captured step)."""
    global _ACTIVE, _capture
    saved, _capture, _ACTIVE = _capture, None, False
    try:
        yield
    finally:
        if saved is not None and not saved.closed and _capture is None:
            _capture, _ACTIVE = saved, True


def _is_layer(module: torch.nn.Module) -> bool:
    """A torch_bp layer (torch_bp.nn), not a container built of them (e.g. torch_bp.lightning.SmallCNN, or the
    FusedSequential of convert's fusion pass)."""
    return type(module).__module__.startswith("torch_bp.nn.") and not isinstance(module, torch.nn.Sequential)


def _first_output(out) -> torch.Tensor | None:
    """The first tensor with a ``grad_fn`` in a forward's result (tensors, tuples, lists, dicts)."""
    if isinstance(out, torch.Tensor):
        return out if out.grad_fn is not None else None
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    for item in items:
        found = _first_output(item)
        if found is not None:
            return found
    return None


def _recorder(cap: Capture, name: str, index: int):
    """The node pre-hook: ``grad_outputs[index]`` is the gradient w.r.t. the layer's output."""
    def record(grad_outputs):
        grad = grad_outputs[index]
        if _capture is cap and isinstance(grad, torch.Tensor):   # this capture, still active
            cap._add(name, grad)
    return record


class _Watch:
    """Forward hooks on a model's layers that hook their outputs' nodes while capturing (see :func:`watch`)."""

    def __init__(self, model: torch.nn.Module, prefix: str = "",
                 layers: Callable[[torch.nn.Module], bool] = _is_layer):
        self.handles = []
        for name, module in model.named_modules(prefix=prefix):
            if layers(module):
                self.handles.append(module.register_forward_pre_hook(functools.partial(self._enter, name)))
                self.handles.append(module.register_forward_hook(functools.partial(self._exit, name)))

    @staticmethod
    def _enter(name, module, args):
        cap = _capture
        if cap is None or not plain_eager():
            return
        if name not in cap._seen:
            cap._seen.add(name)
            cap.order.append(name)

    @staticmethod
    def _exit(name, module, args, output):
        cap = _capture
        if cap is None or not plain_eager():
            return
        out = _first_output(output)
        if out is not None:
            out.grad_fn.register_prehook(_recorder(cap, name, out.output_nr))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def watch(model: torch.nn.Module, prefix: str = "",
          layers: Callable[[torch.nn.Module], bool] = _is_layer) -> _Watch:
    """Hook the layers of ``model`` so that captures record their error signals, by name.

    Layers are the modules for which ``layers(module)`` is true (default: torch_bp's own layers;
    ``lambda m: True`` takes every module), named as in ``model.named_modules(prefix=prefix)``.
    Call ``.remove()`` on the result to take the hooks off again (the monitor keeps them only
    around captured steps).
    """
    return _Watch(model, prefix, layers)
