"""Error signals captured inside torch_bp's own backward rules (for the gradient monitor).

The error signal reaching a layer is the gradient of the loss with respect to the layer's
output, the delta that the 1986 paper propagates; in a backward rule it is
``grad_outputs[0]``. Every Function in the registry is instrumented once, by
:func:`instrument` (called from the last line of ``registry.py``):

- the wrapped ``setup_context`` remembers in ``ctx`` which layer is running (a context
  variable set by forward pre-hooks, see :func:`watch`) and that this Function is, so far,
  the last one that layer has called;
- the wrapped ``backward`` adds ``grad_outputs[0]`` to that layer's record if this Function
  was the layer's last, i.e. the one that produced the layer's output; then it runs the
  rule unchanged.

Both do this only while a capture is active (:func:`capture`); otherwise the whole cost is
one read of the module-level flag ``_ACTIVE`` per call, and no module carries a hook. No
extra backward pass is run. Under ``torch.compile`` and torch.func transforms (vmap, grad)
nothing is recorded, so traced graphs never see the capture.

NOTE: a layer called several times in one step (a shared activation module, an unrolled
recurrence) accumulates the squares of all its error signals: its norm is that of the
concatenation. A torch_bp module whose output comes from a nested torch_bp module records
nothing for itself (the nested one records it).
"""
from __future__ import annotations

import contextlib
import functools
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

_ACTIVE = False                      # checked first by every wrapped rule; True only while capturing
_capture: "Capture | None" = None    # the active capture
_current: ContextVar["_Frame | None"] = ContextVar("torch_bp_layer", default=None)


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
        """End this capture (the rules go back to checking the flag only)."""
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


@dataclass
class _Frame:
    name: str
    capture: Capture
    calls: int = 0    # Functions this layer call has run so far


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


def _transformed() -> bool:
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def _tag(ctx) -> None:
    if _transformed():  # first: dynamo cannot trace ContextVar.get
        return
    frame = _current.get()
    if frame is None or frame.capture.closed:
        return
    frame.calls += 1
    ctx._bp_signal = (frame, frame.calls)


def _record(ctx, grad_outputs) -> None:
    tag = getattr(ctx, "_bp_signal", None)
    if tag is None:
        return
    frame, k = tag
    grad = grad_outputs[0] if grad_outputs else None
    if k == frame.calls and not frame.capture.closed and isinstance(grad, torch.Tensor):
        frame.capture._add(frame.name, grad)


def instrument(functions) -> None:
    """Wrap ``setup_context`` and ``backward`` of each Function class, once (idempotent)."""
    for cls in functions:
        if cls.__dict__.get("_bp_signals") or "setup_context" not in cls.__dict__:
            continue
        setup_fn = cls.__dict__["setup_context"].__func__
        backward_fn = cls.__dict__["backward"].__func__

        @functools.wraps(setup_fn)
        def setup_context(ctx, inputs, output, _setup=setup_fn):
            if _ACTIVE:
                _tag(ctx)
            return _setup(ctx, inputs, output)

        @functools.wraps(backward_fn)
        def backward(ctx, *grad_outputs, _backward=backward_fn):
            if _ACTIVE:
                _record(ctx, grad_outputs)
            return _backward(ctx, *grad_outputs)

        cls.setup_context = staticmethod(setup_context)
        cls.backward = staticmethod(backward)
        cls._bp_signals = True


def _is_layer(module: torch.nn.Module) -> bool:
    """A torch_bp layer (torch_bp.nn), not a container built of them (e.g. torch_bp.lightning.SmallCNN)."""
    return type(module).__module__.startswith("torch_bp.nn.")


class _Watch:
    """Forward hooks on the torch_bp modules of a model naming the running layer (see :func:`watch`)."""

    def __init__(self, model: torch.nn.Module, prefix: str = ""):
        self.handles = []
        for name, module in model.named_modules(prefix=prefix):
            if _is_layer(module):
                tokens: list = []
                self.handles.append(module.register_forward_pre_hook(functools.partial(self._enter, name, tokens)))
                self.handles.append(module.register_forward_hook(functools.partial(self._exit, tokens),
                                                                 always_call=True))

    @staticmethod
    def _enter(name, tokens, module, args):
        cap = _capture
        if cap is None or _transformed():
            tokens.append(None)
            return
        if name not in cap._seen:
            cap._seen.add(name)
            cap.order.append(name)
        tokens.append(_current.set(_Frame(name, cap)))

    @staticmethod
    def _exit(tokens, module, args, output):
        token = tokens.pop() if tokens else None
        if token is not None:
            _current.reset(token)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def watch(model: torch.nn.Module, prefix: str = "") -> _Watch:
    """Hook the torch_bp modules of ``model`` so captured error signals carry their names.

    Layers are named as in ``model.named_modules(prefix=prefix)``. Call ``.remove()`` on the
    result to take the hooks off again (the monitor keeps them only around captured steps).
    """
    return _Watch(model, prefix)
