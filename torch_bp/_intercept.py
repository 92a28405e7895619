"""Functional calls inside a converted model's forward run torch_bp's rules.

Real models call ``torch.nn.functional`` (and a few ``torch.*`` / ``Tensor`` aliases of it)
directly inside their own modules' ``forward``: ``F.silu`` in an MLP, ``F.cross_entropy`` in
the loss, ``F.scaled_dot_product_attention`` in attention, ``hidden.softmax(-1)``. A module
swap cannot reach those calls. :class:`Intercept`, a ``torch.overrides.TorchFunctionMode``,
does: while it is on the mode stack, a call to a torch function for which
``torch_bp.functional.ours(name)`` is true runs ``torch_bp.functional.<name>`` instead.

Which calls are taken over is driven by ``torch_bp.functional`` alone (:func:`table`): every
public name it defines as its own, looked up under the same name in ``torch.nn.functional``,
plus the ``torch.*`` and ``Tensor.*`` spellings listed in ``_ALIASES`` (with an adapter where
their signature differs from the functional's). A rule added to ``torch_bp.functional`` is
intercepted without a change here.

Scope (what :func:`attach` installs on a converted model's root module):

- a forward pre-hook enters the mode and a forward hook registered with ``always_call=True``
  leaves it, so it is active exactly for the duration of that model's forward, also when the
  forward raises. torch's mode stack is thread-local: other threads, other models and the code
  after the forward (the optimizer step, a metric) never see it.
- only while gradients are recorded (``torch.is_grad_enabled()``): under ``no_grad`` /
  ``inference_mode`` there is no backward to take over, so torch's op runs. This also keeps
  the mode out of our own rules: torch runs a Function's ``forward`` with grad disabled, so
  the torch ops our rules call inside it are never re-routed.
- no recursion: torch pops the mode while its ``__torch_function__`` runs, so whatever our
  functional calls (torch ops, or torch's functional as a fallback) runs as torch's.
- torch_bp's own code runs with the mode off: every public function of ``torch_bp.functional``
  (which the converted modules call) is wrapped by :func:`outside`, which steps the mode aside
  while the function runs when it is the innermost mode (every
  Intercept at the top of the stack: nested converted models push one each). The argument checks, attribute reads
  and torch ops inside our functionals and rules then cost what they cost without the mode, and
  a functional computes the same whether a converted model or a user calls it. Under
  ``torch.compile`` the mode is left in place (the compiled graph has no per-call cost), and
  where torch lacks the private mode-stack functions (:data:`_STACK`) the mode stays on: only
  slower, never different, since the calls it would take over are ours already.
- calls with ``out=`` or on tensor subclasses other than ``torch.Tensor``/``Parameter``
  (e.g. DTensor) are left to torch.

:func:`detach` removes both hooks (``convert(model, functional=False)``, ``revert``).
"""
from __future__ import annotations

import functools
import threading

import torch
from torch.overrides import TorchFunctionMode

from . import _compat

_TLS = threading.local()
_TABLE: dict | None = None


def _softmax_alias(name):
    def call(input, dim, dtype=None):
        from . import functional as F
        return getattr(F, name)(input, dim, dtype=dtype)
    return call


def _layer_norm_alias(input, normalized_shape, weight=None, bias=None, eps=1e-05, cudnn_enable=True):
    from . import functional as F
    return F.layer_norm(input, normalized_shape, weight, bias, eps)


def _embedding_alias(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    from . import functional as F
    return F.embedding(indices, weight, None if padding_idx == -1 else padding_idx,
                       scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


TORCH = object()  # an adapter's answer: this call is not one of ours, run torch's function


def _mul_alias(input, other):
    """``a * b`` where a backward node will exist: floating tensors (or a tensor and a number), one
    of them requiring grad. Anything else (integer masks, ``out=``, complex) runs torch's ``mul``."""
    from . import functional as F
    tensors = [t for t in (input, other) if isinstance(t, torch.Tensor)]
    if (not any(t.requires_grad for t in tensors) or not all(t.is_floating_point() for t in tensors)
            or not all(isinstance(x, (torch.Tensor, float, int)) and not isinstance(x, bool) for x in (input, other))):
        return TORCH
    return F.mul(input, other)


def _where_alias(condition, input=None, other=None):
    """``torch.where(c, a, b)`` where a backward node will exist (a floating operand requires grad)."""
    from . import functional as F
    tensors = [t for t in (input, other) if isinstance(t, torch.Tensor)]
    if (input is None or other is None or not isinstance(condition, torch.Tensor) or condition.dtype != torch.bool
            or not any(t.requires_grad for t in tensors) or not all(t.is_floating_point() for t in tensors)
            or not all(isinstance(x, (torch.Tensor, float, int)) and not isinstance(x, bool) for x in (input, other))):
        return TORCH
    return F.where(condition, input, other)


def _spatial_mean_alias(input, dim=None, keepdim=False, *, dtype=None):
    """``x.mean((-2, -1))`` of a 4-d tensor is global average pooling: adaptive_avg_pool2d(x, 1)."""
    from . import functional as F
    if (dtype is not None or not isinstance(input, torch.Tensor) or input.dim() != 4 or dim is None
            or not input.is_floating_point() or not input.requires_grad
            or not isinstance(dim, (list, tuple)) or sorted(d % 4 for d in dim) != [2, 3]):
        return TORCH
    out = F.adaptive_avg_pool2d(input, 1)
    return out if keepdim else out.squeeze(-1).squeeze(-1)


def _same(name):
    def call(*args, **kwargs):
        from . import functional as F
        return getattr(F, name)(*args, **kwargs)
    return call


# torch.* / Tensor.* spellings of functionals that models use: (functional name, callable, adapter).
# Adapters take the alias's own signature and call torch_bp.functional.<name>.
_ALIASES = [
    ("relu", torch.relu, _same("relu")), ("relu", torch.Tensor.relu, _same("relu")),
    ("tanh", torch.tanh, _same("tanh")), ("tanh", torch.Tensor.tanh, _same("tanh")),
    ("sigmoid", torch.sigmoid, _same("sigmoid")), ("sigmoid", torch.Tensor.sigmoid, _same("sigmoid")),
    ("softmax", torch.softmax, _softmax_alias("softmax")),
    ("softmax", torch.Tensor.softmax, _softmax_alias("softmax")),
    ("log_softmax", torch.log_softmax, _softmax_alias("log_softmax")),
    ("log_softmax", torch.Tensor.log_softmax, _softmax_alias("log_softmax")),
    ("layer_norm", torch.layer_norm, _layer_norm_alias),
    ("rms_norm", getattr(torch, "rms_norm", None), _same("rms_norm")),
    ("embedding", torch.embedding, _embedding_alias),
    ("mul", torch.mul, _mul_alias), ("mul", torch.Tensor.mul, _mul_alias),
    ("mul", torch.Tensor.__mul__, _mul_alias), ("mul", torch.Tensor.__rmul__, lambda a, b: _mul_alias(b, a)),
    ("where", torch.where, _where_alias),
    ("where", torch.Tensor.where, lambda self, condition, other: _where_alias(condition, self, other)),
    ("adaptive_avg_pool2d", torch.mean, _spatial_mean_alias),
    ("adaptive_avg_pool2d", torch.Tensor.mean, _spatial_mean_alias),
]


def table() -> dict:
    """torch callable -> the torch_bp function that replaces it (built once, from torch_bp.functional)."""
    global _TABLE
    if _TABLE is None:
        from . import functional as F
        tf = torch.nn.functional
        t = {}
        for name in F.__all__:
            if name != "ours" and F.ours(name) and callable(getattr(tf, name, None)):
                t[getattr(tf, name)] = getattr(F, name)
        for name, fn, adapter in _ALIASES:
            if fn is not None and F.ours(name):
                t.setdefault(fn, adapter)
        _TABLE = t
    return _TABLE


_PLAIN = (torch.Tensor, torch.nn.Parameter)


class Intercept(TorchFunctionMode):
    """Runs torch_bp's functional in place of torch's for every call listed by :func:`table`."""

    def __init__(self):
        super().__init__()
        self.table = table()
        self._lookup = self.table.get

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # NOTE: every torch call and tensor attribute read of the forward passes through here
        # (``x.shape``, the ops inside our own rules); most are not ours, so they take the first
        # return with one dictionary lookup and no other work.
        ours = self._lookup(func)
        if ours is None:
            return func(*args, **kwargs) if kwargs else func(*args)
        kwargs = kwargs or {}
        if torch.is_grad_enabled() and "out" not in kwargs and all(t in _PLAIN for t in types):
            out = ours(*args, **kwargs)
            if out is not TORCH:
                return out
        return func(*args, **kwargs)


# torch's thread-local mode stack (private: torch.overrides' own helpers use these). All four or none.
_STACK = tuple(_compat._private(p) for p in ("_C._len_torch_function_stack", "_C._get_function_stack_at",
                                             "_C._pop_torch_function_stack", "_C._push_on_torch_function_stack"))
if not all(_STACK):
    _STACK = None


def outside(fn):
    """``fn`` run with the interception stepped aside when it is the innermost mode (module docstring)."""
    if _STACK is None:
        return fn
    length, at, pop, push = _STACK
    compiling = torch.compiler.is_compiling

    @functools.wraps(fn)
    def run(*args, **kwargs):
        n = length()
        if n and not compiling() and isinstance(at(n - 1), Intercept):
            aside = []  # nested converted models stack several: all of them step aside
            while n and isinstance(at(n - 1), Intercept):
                aside.append(pop())
                n -= 1
            try:
                return fn(*args, **kwargs)
            finally:
                for mode in reversed(aside):
                    push(mode)
        return fn(*args, **kwargs)

    run.__wrapped_by_intercept__ = True
    return run


def _stack() -> list:
    s = getattr(_TLS, "stack", None)
    if s is None:
        s = _TLS.stack = []
    return s


def _enter(module, args):
    mode = Intercept()
    mode.__enter__()
    _stack().append(mode)


def _exit(module, args, output):
    s = _stack()
    if s:
        s.pop().__exit__(None, None, None)


def attached(model: torch.nn.Module) -> bool:
    return any(h is _enter for h in model._forward_pre_hooks.values())


def attach(model: torch.nn.Module) -> torch.nn.Module:
    """Intercept functional calls for the duration of ``model``'s forward (idempotent)."""
    if not attached(model):
        model.register_forward_pre_hook(_enter)
        model.register_forward_hook(_exit, always_call=True)
    return model


def detach(model: torch.nn.Module) -> torch.nn.Module:
    """Remove what :func:`attach` installed."""
    # NOTE: torch has no public way to find a module's hooks without their handles (which do not
    # survive deepcopy or pickling), so the hook dicts of nn.Module are read here.
    for hooks, fn in ((model._forward_pre_hooks, _enter), (model._forward_hooks, _exit)):
        for key in [k for k, h in hooks.items() if h is fn]:
            del hooks[key]
            getattr(model, "_forward_hooks_always_called", {}).pop(key, None)
    return model
