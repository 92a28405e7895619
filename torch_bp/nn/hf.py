"""Modules found in the wild (Hugging Face ``transformers`` and code written like it), run by our rules.

Third-party models define their own small modules for what torch.nn has no class for:
RMSNorm written out (``LlamaRMSNorm``, ``MistralRMSNorm``, ``T5LayerNorm``, Gemma's with
``1 + weight``), GPT-2's ``Conv1D`` (a linear layer with a transposed weight), activation
classes (``NewGELUActivation``, ``GELUActivation``, ``SiLUActivation``, ...) and attention
modules calling a module-level ``apply_rotary_pos_emb``. The converter recognises them by
structure (the ``match_*`` functions: attributes, parameter shapes), then checks on a small
random probe that the conversion computes what the original computes (``torch_bp.convert``);
only then is the module swapped. The declarations live in ``torch_bp.registry.CONVERTERS``.

A converted module keeps the original's ``__dict__`` (parameters, buffers, hooks, attributes,
so the same ``state_dict``) and records the original class in ``_torch_bp_original``; revert
restores it.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import types

import torch

from .. import functional as F

# keys a conversion adds to the module's __dict__ (revert removes them)
_KEYS = ("_torch_bp_original", "_torch_bp_weight", "_torch_bp_eps", "_torch_bp_offset", "_torch_bp_fn",
         "_torch_bp_kwargs", "_torch_bp_float32")


def _foreign(module) -> bool:
    """A class neither torch's nor ours: torch.nn classes are handled by the registry's module pairs."""
    mod = type(module).__module__
    return not (mod.startswith("torch.") or mod.startswith("torch_bp."))


def _adopt(module, cls, **attrs):
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    new.__dict__["_torch_bp_original"] = type(module)
    for k, v in attrs.items():
        new.__dict__[f"_torch_bp_{k}"] = v
    return new


def revert(module):
    """The original module of a conversion made here (same __dict__, the original class)."""
    cls = module.__dict__.get("_torch_bp_original") or type(module)._torch_bp_original
    new = cls.__new__(cls)
    new.__dict__.update({k: v for k, v in module.__dict__.items() if k not in _KEYS})
    return new


# --- RMSNorm written out (Llama, Mistral, Qwen, Gemma, T5LayerNorm) ---
_EPS_NAMES = ("variance_epsilon", "eps", "epsilon")


def match_rms_norm(module) -> bool:
    """One 1-d parameter, an epsilon attribute, no buffers, no children, a class not torch's."""
    params = list(module._parameters.items())
    return (_foreign(module) and not module._modules and not module._buffers and len(params) == 1
            and params[0][1] is not None and params[0][1].dim() == 1
            and any(isinstance(module.__dict__.get(n), float) for n in _EPS_NAMES))


def _rms_norm(offset):
    def convert(module):
        (name, _), = module._parameters.items()
        eps = next(n for n in _EPS_NAMES if isinstance(module.__dict__.get(n), float))
        return _adopt(module, RMSNorm, weight=name, eps=eps, offset=offset)
    return convert


to_rms_norm, to_rms_norm_one_plus = _rms_norm(0.0), _rms_norm(1.0)


def to_rms_norm_float32(module):
    """As :func:`to_rms_norm`, for a module that normalizes in float32 whatever the input dtype
    (Llama's ``hidden_states.to(torch.float32)``): float64 inputs are normalized in float32, as there."""
    new = to_rms_norm(module)
    new.__dict__["_torch_bp_float32"] = True
    return new


class RMSNorm(torch.nn.Module):
    r"""An RMSNorm module of another library, run by :class:`torch_bp.ops.normalization.RMSNormFunction`.

    ``y = rms_norm(x) * w`` (Llama, Mistral, Qwen, T5LayerNorm) or ``y = rms_norm(x) * (1 + w)``
    (Gemma), whichever the original computes (the converter's probe decides). The original's
    float32 upcast of the variance is what our rule does for float16/bfloat16 inputs (its
    intermediate math is float32); the result has the input's dtype. A weight of another
    dtype than the input is cast to the input's dtype first. Where the original normalizes in
    float32 also a float64 input (Llama: ``hidden_states.to(torch.float32)``; converter
    ``rms_norm(float32)``), so do we: ``w * rms_norm(x.float()).to(float64)`` (our mul rule).
    """

    def forward(self, hidden_states):
        w = self._parameters[self._torch_bp_weight]
        if self._torch_bp_offset:
            w = w + self._torch_bp_offset
        if self.__dict__.get("_torch_bp_float32") and hidden_states.dtype == torch.float64:
            y = F.rms_norm(hidden_states.float(), (w.shape[0],), None, getattr(self, self._torch_bp_eps))
            return F.mul(w, y.to(hidden_states.dtype))
        if w.dtype != hidden_states.dtype:
            w = w.to(hidden_states.dtype)
        return F.rms_norm(hidden_states, (w.shape[0],), w, getattr(self, self._torch_bp_eps))

    def extra_repr(self):
        w = self._parameters[self._torch_bp_weight]
        return f"{tuple(w.shape)}, eps={getattr(self, self._torch_bp_eps)}, converted from " \
               f"{self._torch_bp_original.__name__}"


# --- GPT-2's Conv1D: y = x @ W + b with W of shape (in, out) ---
def match_conv1d(module) -> bool:
    """Parameters exactly ``weight`` (in, out) and ``bias`` (out,), no buffers or children, not torch's."""
    w, b = module._parameters.get("weight"), module._parameters.get("bias")
    return (_foreign(module) and not module._modules and not module._buffers and set(module._parameters) ==
            {"weight", "bias"} and w is not None and b is not None and w.dim() == 2 and b.shape == w.shape[1:])


def to_conv1d(module):
    return _adopt(module, Conv1D)


class Conv1D(torch.nn.Module):
    """GPT-2's ``Conv1D`` (``transformers.pytorch_utils.Conv1D``): ``linear(x, weight.t(), bias)`` by
    :class:`torch_bp.ops.linear.LinearFunction`; ``weight`` keeps its (in, out) layout and state_dict."""

    def forward(self, x):
        return F.linear(x, self.weight.t(), self.bias)

    def extra_repr(self):
        return f"nf={self.weight.shape[1]}, nx={self.weight.shape[0]}, converted from " \
               f"{self._torch_bp_original.__name__}"


# --- activation classes (NewGELUActivation, GELUActivation, SiLUActivation, FastGELUActivation, ...) ---
# (functional name, keyword arguments): what a parameter-free activation module may compute
ACTIVATIONS = (("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}), ("relu", {}), ("tanh", {}),
               ("sigmoid", {}), ("relu6", {}), ("hardswish", {}), ("hardsigmoid", {}), ("mish", {}),
               ("elu", {}), ("selu", {}), ("celu", {}), ("softplus", {}), ("logsigmoid", {}),
               ("softsign", {}), ("tanhshrink", {}))


def match_activation(module) -> bool:
    """No parameters, buffers or children; a class not torch's."""
    return _foreign(module) and not module._modules and not module._buffers and not module._parameters


def to_activation(name, kwargs):
    def convert(module):
        return _adopt(module, Activation, fn=name, kwargs=dict(kwargs))
    return convert


class Activation(torch.nn.Module):
    """A parameter-free activation module of another library, run by ``torch_bp.functional.<fn>``."""

    def forward(self, input):
        return getattr(F, self._torch_bp_fn)(input, **self._torch_bp_kwargs)

    def extra_repr(self):
        kw = "".join(f", {k}={v!r}" for k, v in self._torch_bp_kwargs.items())
        return f"{self._torch_bp_fn}{kw}, converted from {self._torch_bp_original.__name__}"


# --- attention modules calling apply_rotary_pos_emb (Llama, Mistral, Qwen, GPT-NeoX, ...) ---
ROTARY = "apply_rotary_pos_emb"


def _innermost(fn):
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def match_rotary(module) -> bool:
    """The class's ``forward`` calls a global ``apply_rotary_pos_emb`` with Hugging Face's signature."""
    if not _foreign(module) or isinstance(module, _RotaryConverted):
        return False
    fn = _innermost(type(module).forward)
    theirs = getattr(fn, "__globals__", {}).get(ROTARY)
    if not isinstance(fn, types.FunctionType) or ROTARY not in fn.__code__.co_names or theirs is None:
        return False
    if isinstance(theirs, torch.nn.Module):  # wrapped as a module by the `kernels` hub decorator
        theirs = theirs.forward
    try:
        params = list(inspect.signature(theirs).parameters)
    except (TypeError, ValueError):
        return False
    return params == ["q", "k", "cos", "sin", "unsqueeze_dim"]


def rotary_probe_ok(module, tol) -> bool:
    """Their ``apply_rotary_pos_emb`` and ours agree on a random probe (float64)."""
    theirs = _innermost(type(module).forward).__globals__[ROTARY]
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64), torch.randn(2, 2, 5, 6, generator=g,
                                                                                 dtype=torch.float64)
    cos, sin = torch.randn(2, 5, 6, generator=g, dtype=torch.float64), torch.randn(2, 5, 6, generator=g,
                                                                                  dtype=torch.float64)
    with torch.no_grad():
        a, b = theirs(q, k, cos, sin), F.apply_rotary_pos_emb(q, k, cos, sin)
    return all(torch.allclose(x, y, **tol(torch.float64)) for x, y in zip(a, b))


def _rebind(fn, name, value):
    """``fn`` with the global ``name`` bound to ``value``; through decorators that keep ``__wrapped__``
    and hold the wrapped function in a closure cell. None where that structure is not found."""
    inner = getattr(fn, "__wrapped__", None)
    if inner is None:
        g = dict(fn.__globals__)
        g[name] = value
        new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    else:
        new_inner = _rebind(inner, name, value)
        cells = fn.__closure__ or ()

        def holds(c):
            try:
                return c.cell_contents is inner
            except ValueError:  # an empty cell
                return False
        idx = [i for i, c in enumerate(cells) if holds(c)]
        if new_inner is None or len(idx) != 1:
            return None
        cells = tuple(types.CellType(new_inner) if i == idx[0] else c for i, c in enumerate(cells))
        new = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, cells)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__dict__.update(fn.__dict__)
    new.__qualname__, new.__module__, new.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
    if inner is not None:
        new.__wrapped__ = new_inner
    return new


class _RotaryConverted:
    """Marker base of the attention classes made by :func:`rotary_class`."""


_PREFIX = "RotaryOf__"


def _class_name(cls) -> str:
    return _PREFIX + cls.__module__.replace(".", "_dot_") + "_cls_" + cls.__qualname__.replace(".", "_dot_")


@functools.cache
def rotary_class(cls):
    """``cls`` with its ``forward`` calling ``torch_bp.functional.apply_rotary_pos_emb``: the same code
    object, run with that one global name bound to ours (no source is copied). Named so that pickle
    finds it again (this module's ``__getattr__``)."""
    fwd = _rebind(cls.forward, ROTARY, F.apply_rotary_pos_emb)
    if fwd is None:
        return None
    name = _class_name(cls)
    return type(cls.__name__, (_RotaryConverted, cls), {
        "forward": fwd, "__module__": __name__, "__qualname__": name, "_torch_bp_original": cls,
        "__doc__": f"{cls.__name__} with apply_rotary_pos_emb by torch_bp.ops.rotary.RotaryEmbeddingFunction"})


def to_rotary(module):
    cls = rotary_class(type(module))
    if cls is None:
        return None
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    return new


def __getattr__(name):
    # pickle looks converted attention classes up by name: rebuild them on demand
    if name.startswith(_PREFIX):
        mod, _, qual = name[len(_PREFIX):].partition("_cls_")
        cls = importlib.import_module(mod.replace("_dot_", "."))
        for part in qual.split("_dot_"):
            cls = getattr(cls, part)
        return rotary_class(cls)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the causal-LM loss without the (tokens, vocabulary) logits ---
def causal_lm_loss(model, input_ids, labels, ignore_index=-100, chunk_size=None, **kwargs):
    """The loss a Hugging Face ``*ForCausalLM`` model returns for ``model(input_ids, labels=labels)``,
    computed by :func:`torch_bp.functional.linear_cross_entropy` from the base model's last hidden
    state and the output embedding (``lm_head``): the logits are never materialised. Equal loss and
    gradients (tests/test_real_models.py). Computed in float32 for float16/bfloat16 models (the
    model takes its loss on ``logits.float()``), in the model's dtype otherwise (the model's own
    loss is then float32: it downcasts float64 logits).

    As the model's own ``ForCausalLMLoss``: labels are shifted left by one (the last position predicts
    nothing), ``ignore_index`` positions are skipped, the mean is over the others. Raises
    NotImplementedError for what that path does and this one does not: logit soft-capping, a bias on
    the output embedding, ``num_items_in_batch``. ``kwargs`` go to the base model.
    """
    cfg = getattr(model, "config", None)
    if getattr(cfg, "final_logit_softcapping", None) or "num_items_in_batch" in kwargs:
        raise NotImplementedError("causal_lm_loss: logit soft-capping and num_items_in_batch are not supported")
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise NotImplementedError("causal_lm_loss: needs an output embedding without bias")
    hidden = model.base_model(input_ids=input_ids, **kwargs)[0]  # (B, T, H)
    target = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:].to(hidden.device)
    weight = head.weight
    if hidden.dtype in (torch.float16, torch.bfloat16):  # the model's loss is taken on logits.float()
        hidden, weight = hidden.float(), weight.float()
    # torch's linear_cross_entropy takes (N, H) rows: the tokens of every sequence, flattened
    return F.linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, target.reshape(-1),
                                  ignore_index=ignore_index, chunk_size=chunk_size)
