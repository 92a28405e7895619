"""Fuzz cases derived from the registry's samples: a hypothesis strategy per layer.

A case starts from one of the layer's samples (``SAMPLES[name](Make(dtype))``, the same
inputs the harness checks) and perturbs it generically, so a new registry row is fuzzed
without writing anything here:

1. dtype: the sample is regenerated in float16, bfloat16, float32 or float64;
2. options: values from ``OPTIONS[name]`` (tests/fuzz/options.py), then ``ARG_EDITS``;
3. shape: zero-size or size-1 batch on every tensor sharing the batch size, a new leading
   batch dim, or one dim of one tensor narrowed to 0 or 1 (size-1 broadcasting);
4. values, per tensor: NaN/Inf/-Inf at drawn positions, scaled by a huge or tiny power of
   two (exact), all zeros (zero variance); and, for at most one tensor per case, a cast to an
   integer type or another float type;
5. layout, per tensor: transposed, permuted or offset storage, every other element of a
   wider tensor, channels_last, or an ``expand``-ed view of a size-1 leaf (stride 0);
6. which floating inputs require grad.

Each case keeps every tensor's leaf apart from the view passed to the layer (gradients are
compared for the views, what the layer's rule computes), the sample's unperturbed shapes,
and a description of every step, which hypothesis prints for a failing case.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st

from harness import clone_leaf
from samples import get_samples
from torch_bp.registry import get

from .options import ARG_EDITS, OPTIONS

FLOAT_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
INT_DTYPES = [torch.int64, torch.int32, torch.uint8, torch.bool]
SCALES = [2.0 ** k for k in (100, -100, 60, -60, 20, -20)]

_SAMPLE_CACHE: dict = {}


def samples_for(name, dtype):
    key = (name, dtype)
    if key not in _SAMPLE_CACHE:
        _SAMPLE_CACHE[key] = get_samples(name, dtype)
    return _SAMPLE_CACHE[key]


@dataclass
class TArg:
    """A tensor argument: the leaf gradients are taken for, and the view the layer sees."""
    leaf: torch.Tensor
    expand_to: tuple | None = None

    def materialize(self):
        leaf = clone_leaf(self.leaf)
        return leaf, (leaf.expand(self.expand_to) if self.expand_to is not None else leaf)

    def __repr__(self):
        t = self.leaf
        view = f".expand{self.expand_to}" if self.expand_to is not None else ""
        return (f"T({list(t.shape)}, {str(t.dtype)[6:]}, stride={t.stride()}, offset={t.storage_offset()}, "
                f"grad={t.requires_grad}){view}")


@dataclass
class FuzzCase:
    name: str
    dtype: torch.dtype
    desc: str
    arguments: dict          # parameter name -> value (TArg, list/tuple of TArg, or plain)
    positional: tuple = ()   # the parameters the sample passed positionally (the rest by keyword)
    cond: float = 1.0
    steps: list = field(default_factory=list)
    shapes: dict = field(default_factory=dict)  # parameter -> the sample's tensor shape(s), unperturbed

    def call_args(self):
        """(inputs, args, kwargs) for one call, from fresh leaves.

        ``inputs`` are the tensors requiring grad as the layer sees them (an expanded view,
        not its size-1 leaf, with ``retain_grad``): their gradients are what the layer's rule
        computes, compared before the view's own backward sums them (which would cancel).
        """
        leaves = []

        def mat(v):
            if isinstance(v, TArg):
                _, view = v.materialize()
                if view.requires_grad and view.grad_fn is not None:
                    view.retain_grad()
                leaves.append(view)
                return view
            if _is_seq(v) and any(isinstance(x, TArg) for x in v):
                return type(v)(mat(x) for x in v)
            return v

        values = {k: mat(v) for k, v in self.arguments.items()}
        # Passed as the sample passes them: torch's builtins take some options keyword-only.
        args = tuple(values.pop(k) for k in self.positional)
        return [x for x in leaves if x.requires_grad], args, values

    def value(self, param):
        """The argument ``param`` as the layer sees it (a fresh tensor for a tensor argument)."""
        v = self.arguments.get(param)
        return v.materialize()[1].detach() if isinstance(v, TArg) else v

    def tensors(self):
        """Every tensor argument, as the layer sees it."""
        out = []
        for v in self.arguments.values():
            for x in (v if _is_seq(v) else [v]):
                if isinstance(x, TArg):
                    out.append(x.materialize()[1].detach())
        return out

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"FuzzCase({self.name}[{self.desc}] {str(self.dtype)[6:]}: {'; '.join(self.steps)} | {args})"


# --- walking the tensor arguments ---
def _is_seq(v):
    """A plain list or tuple of arguments (a PackedSequence, a named tuple, is left whole)."""
    return type(v) in (list, tuple)


def _tensor_paths(arguments):
    paths = []
    for k, v in arguments.items():
        if isinstance(v, torch.Tensor):
            paths.append((k, None))
        elif _is_seq(v):
            paths += [(k, i) for i, x in enumerate(v) if isinstance(x, torch.Tensor)]
    return paths


def _get(arguments, path):
    k, i = path
    return arguments[k] if i is None else arguments[k][i]


def _set(arguments, path, value):
    k, i = path
    if i is None:
        arguments[k] = value
    else:
        seq = list(arguments[k])
        seq[i] = value
        arguments[k] = type(arguments[k])(seq)


def _fresh(t, values=None, dtype=None, requires_grad=None):
    """A new contiguous leaf with ``values`` (default: t's), ``dtype`` and requires_grad."""
    v = (t if values is None else values).detach()
    dtype = dtype or t.dtype
    v = v.to(dtype).clone()
    rg = t.requires_grad if requires_grad is None else requires_grad
    return v.requires_grad_(rg and v.is_floating_point())


# --- the perturbations ---
def _shape_step(draw, arguments, paths):
    # half the draws keep the shapes: a layer with many tensor arguments (attention's weights)
    # then still gets valid draws; the other half spread over the five shape edits
    kind = draw(st.one_of(st.just("keep"),
                          st.sampled_from(["zero-batch", "one-batch", "batch-prefix", "narrow-0", "narrow-1"])))
    tensors = [(p, _get(arguments, p)) for p in paths]
    tensors = [(p, t) for p, t in tensors if t.dim() > 0]
    if kind == "keep" or not tensors:
        return None
    if kind in ("zero-batch", "one-batch"):
        b = tensors[0][1].shape[0]
        k = 0 if kind == "zero-batch" else 1
        for p, t in tensors:
            if t.shape[0] == b:
                _set(arguments, p, _fresh(t, t.narrow(0, 0, min(k, b))))
        return f"{kind} (dim 0 of size {b})"
    if kind == "batch-prefix":
        p, t = tensors[0]
        _set(arguments, p, _fresh(t, torch.stack([t, t])))
        return f"{p[0]}: new leading dim of 2"
    p, t = tensors[draw(st.integers(0, len(tensors) - 1))]
    d = draw(st.integers(0, t.dim() - 1))
    k = 0 if kind == "narrow-0" else 1
    _set(arguments, p, _fresh(t, t.narrow(d, 0, min(k, t.shape[d]))))
    return f"{p[0]}: dim {d} narrowed to {k}"


def _value_step(draw, t, base_dtype, retype):
    kinds = ["keep", "nan", "inf", "-inf", "scale", "zeros"] + (["int", "dtype"] if retype else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "keep":
        return t, None
    if kind == "int":
        dtype = draw(st.sampled_from(INT_DTYPES))
        if t.dtype == dtype:
            return t, None
        v = t.detach()
        v = v.round() if v.is_floating_point() else v
        if dtype == torch.uint8:
            v = v.abs()
        return _fresh(t, v, dtype, requires_grad=False), f"cast to {dtype}"
    if not t.is_floating_point():
        return t, None
    if kind == "dtype":
        dtype = draw(st.sampled_from([d for d in FLOAT_DTYPES if d != t.dtype]))
        return _fresh(t, dtype=dtype), f"cast to {dtype}"
    if kind == "zeros":
        return _fresh(t, torch.zeros_like(t)), "all zeros"
    if kind == "scale":
        s = draw(st.sampled_from(SCALES))
        return _fresh(t, t.detach() * s), f"scaled by 2^{int(torch.tensor(s).log2())}"
    if t.numel() == 0:
        return t, None
    special = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}[kind]
    idx = sorted(set(draw(st.lists(st.integers(0, t.numel() - 1), min_size=1, max_size=3))))
    v = t.detach().clone().reshape(-1)
    v[idx] = special
    return _fresh(t, v.reshape(t.shape)), f"{kind} at flat {idx}"


def _layout_step(draw, t):
    kinds = ["keep", "t", "permute", "slice", "offset", "expand", "channels_last"]
    kind = draw(st.sampled_from(kinds))
    shape = tuple(t.shape)
    rg = t.requires_grad
    v = t.detach()
    if kind == "t" and t.dim() >= 2:
        buf = torch.empty(shape[:-2] + (shape[-1], shape[-2]), dtype=t.dtype).transpose(-1, -2)
    elif kind == "permute" and t.dim() >= 3:
        perm = draw(st.permutations(range(t.dim())))
        inv = [perm.index(i) for i in range(t.dim())]
        buf = torch.empty([shape[i] for i in perm], dtype=t.dtype).permute(inv)
        kind = f"permute{tuple(perm)}"
    elif kind == "slice" and t.dim() >= 1:
        buf = torch.empty(shape[:-1] + (2 * shape[-1],), dtype=t.dtype)[..., ::2]
    elif kind == "offset":
        buf = torch.empty(t.numel() + 3, dtype=t.dtype)[3:].view(shape)
    elif kind == "channels_last" and t.dim() in (4, 5):
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        buf = torch.empty(shape, dtype=t.dtype).contiguous(memory_format=fmt)
    elif kind == "expand" and any(s > 1 for s in shape):
        d = draw(st.sampled_from([i for i, s in enumerate(shape) if s > 1]))
        leaf = v.narrow(d, 0, 1).clone().requires_grad_(rg)
        return TArg(leaf, shape), f"expanded along dim {d}"
    else:
        return TArg(t), None
    with torch.no_grad():
        buf.copy_(v)
    return TArg(buf.requires_grad_(rg)), f"layout {kind}"


def _options_step(draw, name, arguments):
    notes = []
    for param, strat in OPTIONS.get(name, {}).items():
        if callable(strat) and not isinstance(strat, st.SearchStrategy):
            strat = strat(arguments)  # an option that depends on the sample
            if strat is None:
                continue
        value = draw(strat)
        arguments[param] = value
        notes.append(f"{param}={value!r}")
    edit = ARG_EDITS.get(name)
    if edit is not None:
        note = edit(draw, arguments)
        if note:
            notes.append(note)
    return "options " + ", ".join(notes) if notes else None


@st.composite
def fuzz_case(draw, name):
    """One perturbed sample of registry layer ``name`` (see the module docstring)."""
    row = get(name)
    # a dtype the layer has samples in (none where torch has no CPU kernel for it, e.g. avg_pool3d in bfloat16)
    dtype = draw(st.sampled_from([d for d in FLOAT_DTYPES if samples_for(name, d)]))
    samples = samples_for(name, dtype)
    s = samples[draw(st.integers(0, len(samples) - 1))]
    bound = inspect.signature(row.functional).bind(*s.args, **s.kwargs)
    arguments = dict(bound.arguments)
    positional = tuple(bound.arguments)[:len(s.args)]
    # Fresh, detached copies: the cached sample is never touched.
    shapes = {}
    for p in _tensor_paths(arguments):
        t = _get(arguments, p)
        _set(arguments, p, _fresh(t, clone_leaf(t)))
        shapes.setdefault(p[0], []).append(tuple(t.shape))
    steps = []

    def log(note):
        if note:
            steps.append(note)

    log(_options_step(draw, name, arguments))
    paths = _tensor_paths(arguments)
    log(_shape_step(draw, arguments, paths))
    # At most one tensor may change type (an integer or another float dtype): one mistyped
    # argument is enough to check that we reject what torch rejects, and a layer with many
    # tensor arguments (an RNN's weights) keeps most of its draws valid.
    retyped = draw(st.one_of(st.none(), st.sampled_from(paths))) if paths else None
    for p in paths:
        t, note = _value_step(draw, _get(arguments, p), dtype, retype=p == retyped)
        _set(arguments, p, t)
        log(note and f"{p[0]}: {note}")
    for p in paths:
        t = _get(arguments, p)
        if t.requires_grad and draw(st.booleans()):
            t = t.detach().requires_grad_(False)
            log(f"{p[0]}: no grad")
        targ, note = _layout_step(draw, t)
        _set(arguments, p, targ)
        log(note and f"{p[0]}: {note}")
    return FuzzCase(name, dtype, s.desc, arguments, positional, s.cond, steps, shapes)
