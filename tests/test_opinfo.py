"""PyTorch's own samples, run through torch_bp in float64 (issue 21).

For every registry row with an OpInfo in torch's ``op_db`` (``nn.functional.<name>``, or the
torch function the row's reference is, aliases included), each sample that OpInfo generates runs
through our functional and through torch's: our outputs must carry our backward node, equal
torch's, and the gradients of a random-weighted sum of the outputs must equal torch's; a sample
torch refuses must be refused by ours with the same exception type. For every torch.nn class the
converter swaps that has a ModuleInfo in torch's ``module_db``, the module built from each
ModuleInput is converted with ``torch_bp.convert``: forward and every parameter and input
gradient equal torch's, and the converted module's output carries our node.

Tolerance: float64 from tests/harness.py's dtype table. The samples are torch's, generated on the
CPU under a fixed seed; an OpInfo's samples are capped at the first ``MAX_SAMPLES`` (the pooling
OpInfos generate hundreds of option combinations) and a ModuleInfo's at ``MAX_MODULE_SAMPLES``,
so the file runs in seconds beyond the import of op_db.

A sample that selects a path torch_bp deliberately does not take over (torch's own backward runs,
or NotImplementedError is raised on purpose) is listed in ``EXCLUDED`` with its reason, and its
claimed behaviour is checked (delegated: values and gradients equal torch's; refused: it raises
NotImplementedError); docs/differences.md lists these classes. Every other difference fails.
"""
from __future__ import annotations

import inspect
import itertools

import pytest
import torch

import torch_bp
from harness import assert_close, float_outputs, our_nodes, tol
from torch_bp.registry import CONVERTERS, LAYERS

common_methods_invocations = pytest.importorskip(
    "torch.testing._internal.common_methods_invocations", reason="torch's test utilities (needs expecttest)")
common_modules = pytest.importorskip("torch.testing._internal.common_modules")
# torch's common_utils freezes torch.backends' global flags at import (disable_global_flags, for its own
# test runner); this file only reads torch's samples, and the rest of the suite (Lightning's deterministic
# mode) sets those flags, so the freeze is undone here. torch has no public function that undoes it.
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True

DTYPE = torch.float64
MAX_SAMPLES = 8           # per OpInfo: evenly spaced among the first GENERATED it yields
GENERATED = 48
SLOW_SAMPLERS = {"max_unpool1d", "max_unpool2d", "max_unpool3d"}  # each sample runs a max pool: the first MAX_SAMPLES
MAX_MODULE_SAMPLES = 4
ALL_NODES = set().union(*(our_nodes(row) for row in LAYERS))


# --- which OpInfo belongs to which row ---
def _names(op):
    return {op.name, *(a.name for a in (getattr(op, "aliases", None) or ()))}


def _ops_of(row):
    wanted = {"nn.functional." + row.name}
    if getattr(torch, row.name, None) is row.reference:  # torch.tanh, torch.mul, ...
        wanted.add(row.name)
    seen, out = set(), []
    for op in common_methods_invocations.op_db:
        if _names(op) & wanted and id(op) not in seen:
            seen.add(id(op))
            out.append(op)
    return out


def _op_id(row, op, i):
    return f"{row.name}-{op.variant_test_name or 'default'}-{i}"


OP_CASES, OP_IDS = [], []
for _row in LAYERS:
    for _i, _op in enumerate(_ops_of(_row)):
        OP_CASES.append((_row, _op))
        OP_IDS.append(_op_id(_row, _op, _i))


# --- samples torch_bp deliberately does not take over ---
# (row name, predicate on (op, sample), "delegates" | "NotImplementedError", reason)
def _arg(row, sample, name, default=None):
    """The value of the argument ``name`` in a sample, bound to the signature of torch's functional."""
    if name in sample.kwargs:
        return sample.kwargs[name]
    try:
        bound = inspect.signature(row.reference).bind(sample.input, *sample.args, **sample.kwargs)
    except (TypeError, ValueError):
        return default
    return bound.arguments.get(name, default)


def _dropout_on(row, s):
    return _arg(row, s, "dropout_p", 0.0) > 0 and _arg(row, s, "training", True)


# (row name, predicate on (row, sample), kind, reason). Kinds:
#   "delegates": ours returns torch's own result (torch's node); checked: values and gradients equal torch's.
#   "NotImplementedError": refused on purpose; checked: ours raises it.
#   "own-masks": random masks drawn by ours, not torch's (docs/differences.md); checked: our node, and
#       gradcheck (fast mode) of ours under a fixed seed, so the backward is the gradient of the forward.
#   "torch-rounds": torch's float64 result rounds a constant to float32; checked: ours equals the exact
#       value and torch's equals ours up to that rounding of the constant, exactly.
EXCLUDED: list[tuple[str, object, str, str]] = [
    ("batch_norm", lambda row, s: s.input.dim() < 2 and s.input.numel() == 0, "delegates",
     "an empty vector: torch returns a copy of the input before any check or kernel; ours returns the same copy"),
    ("scaled_dot_product_attention", _dropout_on, "own-masks",
     "dropout_p > 0: our attention draws its dropout masks per key block, not torch's"),
    ("multi_head_attention_forward", _dropout_on, "own-masks",
     "dropout_p > 0 in training: our attention draws its dropout masks per key block, not torch's"),
    ("hardsigmoid", lambda row, s: True, "torch-rounds",
     "torch's CPU kernel multiplies the gradient by 1/6 rounded to float32, also in float64; ours by 1/6"),
]


def _exclusion(row, sample):
    for name, pred, kind, reason in EXCLUDED:
        if name == row.name and pred(row, sample):
            return kind, reason
    return None


# --- running one sample ---
def _clone(v):
    if isinstance(v, torch.Tensor):
        c = v.detach().clone(memory_format=torch.preserve_format)
        if c.stride() != v.stride() and not _overlapping(v):  # keep a sample's strides (an expanded one: dense)
            c = torch.empty_strided(v.size(), v.stride(), dtype=v.dtype, device=v.device).copy_(v.detach())
        return c.requires_grad_(v.requires_grad)
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return type(v)(*(_clone(x) for x in v))
    if isinstance(v, (list, tuple)):
        return type(v)(_clone(x) for x in v)
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    return v


def _overlapping(t):
    return any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape))


def _leaves(v):
    if isinstance(v, torch.Tensor):
        return [v] if v.requires_grad else []
    if isinstance(v, (list, tuple)):
        return [t for x in v for t in _leaves(x)]
    if isinstance(v, dict):
        return [t for x in v.values() for t in _leaves(x)]
    return []


def _call(fn, args, kwargs, seed=0):
    torch.manual_seed(seed)  # dropout and friends: on the CPU ours draw torch's masks from the same seed
    try:
        return fn(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001 - compared with torch's exception below
        return None, e


def _compare(what, fn, ref, args, kwargs, check_node, params=(), our_params=()):
    """Run ``fn`` and ``ref`` on copies of the arguments; compare exceptions, values, node, gradients
    (of the tensor arguments requiring grad, and of a module's parameters ``our_params``/``params``)."""
    a, k = _clone(args), _clone(kwargs)
    ra, rk = _clone(args), _clone(kwargs)
    ref_out, ref_err = _call(ref, ra, rk)
    out, err = _call(fn, a, k)
    if ref_err is not None:
        assert err is not None, f"{what}: torch raises {type(ref_err).__name__} ({ref_err}), ours does not"
        assert isinstance(err, type(ref_err)), (
            f"{what}: torch raises {type(ref_err).__name__}, ours {type(err).__name__}: {err}")
        return
    if err is not None:
        raise AssertionError(f"{what}: torch accepts the sample, ours raises {type(err).__name__}: {err}") from err
    outs, ref_outs = float_outputs(out), float_outputs(ref_out)
    assert len(outs) == len(ref_outs), f"{what}: {len(outs)} floating outputs, torch {len(ref_outs)}"
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert_close(o, r, DTYPE, what=f"{what} output {i}")
        assert o.requires_grad == r.requires_grad, f"{what} output {i}: requires_grad differs from torch's"
        if check_node and o.requires_grad:
            assert check_node(o), f"{what} output {i}: carries {type(o.grad_fn).__name__}, not our rule"
    diff = [(o, r) for o, r in zip(outs, ref_outs) if o.requires_grad]
    if not diff:
        return
    g = torch.Generator().manual_seed(1)
    upstream = [torch.randn(o.shape, generator=g, dtype=DTYPE) for o, _ in diff]
    mine, theirs = _leaves((a, k)) + list(our_params), _leaves((ra, rk)) + list(params)
    if not mine:
        return
    grads = torch.autograd.grad([o for o, _ in diff], mine, upstream, allow_unused=True)
    ref_grads = torch.autograd.grad([r for _, r in diff], theirs, upstream, allow_unused=True)
    for i, (gm, gt) in enumerate(zip(grads, ref_grads)):
        if gm is None and gt is not None:
            gm = torch.zeros_like(gt)  # an input the output does not depend on
        if gt is None and gm is not None:
            gt = torch.zeros_like(gm)
        assert_close(gm, gt, DTYPE, what=f"{what} grad of leaf {i}")


def _samples(row, op):
    torch.manual_seed(0)
    gen = op.sample_inputs("cpu", DTYPE, requires_grad=op.supports_autograd)
    got = list(itertools.islice(gen, MAX_SAMPLES if row.name in SLOW_SAMPLERS else GENERATED))
    step = -(-len(got) // MAX_SAMPLES)
    return got[::step]


# How a sample's (input, *args, **kwargs) reach a functional, where the OpInfo's op is not torch's
# functional itself: it takes the weight first (embedding), or self first (where). The OpInfos of
# random layers wrap torch's functional in a fixed seed of their own; we call torch's functional
# (the row's reference) and ours under one seed instead.
ADAPTERS = {
    "embedding": lambda f: lambda weight, idx, **kw: f(idx, weight, **kw),
    "embedding_bag": lambda f: lambda weight, idx, **kw: f(idx, weight, **kw),
    "where": lambda f: lambda self, condition, other, **kw: f(condition, self, other, **kw),
}


def _adapt(row, f):
    return ADAPTERS.get(row.name, lambda f: f)(f)


@pytest.mark.parametrize("row,op", OP_CASES, ids=OP_IDS)
def test_opinfo_samples(row, op):
    nodes = our_nodes(row)
    samples = _samples(row, op)
    ours, ref = _adapt(row, row.functional), _adapt(row, row.reference)
    assert samples, f"{op.name}: no samples"
    for j, s in enumerate(samples):
        what = f"{op.name}[{op.variant_test_name}] sample {j} ({s.name or s.summary()[:120]})"
        args, kwargs = (s.input, *s.args), dict(s.kwargs)
        excl = _exclusion(row, s)
        kind = excl[0] if excl else None
        if kind is None:
            _compare(what, ours, ref, args, kwargs, check_node=lambda o: type(o.grad_fn).__name__ in nodes)
        elif kind == "delegates":
            _compare(what, ours, ref, args, kwargs, check_node=None)
        elif kind == "NotImplementedError":
            with pytest.raises(NotImplementedError):
                ours(*_clone(args), **_clone(kwargs))
        elif kind == "own-masks":
            _check_own_masks(what, ours, args, kwargs, nodes)
        else:
            assert kind == "torch-rounds" and row.name == "hardsigmoid", kind
            _check_hardsigmoid(what, ours, ref, args, kwargs)


def _substitute(v, it):
    """``v`` with its tensors requiring grad replaced, in order, by the items of ``it``."""
    if isinstance(v, torch.Tensor):
        return next(it) if v.requires_grad else v
    if isinstance(v, (list, tuple)):
        return type(v)(_substitute(x, it) for x in v)
    if isinstance(v, dict):
        return {k: _substitute(x, it) for k, x in v.items()}
    return v


def _check_own_masks(what, ours, args, kwargs, nodes):
    a, k = _clone(args), _clone(kwargs)

    def fn(*xs):
        it = iter(xs)
        torch.manual_seed(0)  # the same masks on every call
        return tuple(float_outputs(ours(*_substitute(a, it), **_substitute(k, it))))

    leaves = _leaves((a, k))
    for o in fn(*leaves):
        if o.requires_grad:
            assert type(o.grad_fn).__name__ in nodes, f"{what}: carries {type(o.grad_fn).__name__}, not our rule"
    assert torch.autograd.gradcheck(fn, tuple(leaves), fast_mode=True), what


def _check_hardsigmoid(what, ours, ref, args, kwargs):
    (x,), _ = _clone(args), kwargs
    xr = _clone(x)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    (mine,) = torch.autograd.grad(ours(x, **kwargs), x, g)
    (theirs,) = torch.autograd.grad(ref(xr, **kwargs), xr, g)
    inside = (x.detach() > -3) & (x.detach() < 3)
    assert_close(mine, torch.where(inside, g / 6, 0), DTYPE, what=f"{what}: ours against g / 6")
    sixth32 = torch.tensor(1 / 6, dtype=torch.float32).item()  # 1/6 + 5e-9: 3e-8 relative, beyond float64's tolerance
    assert_close(theirs, torch.where(inside, g * sixth32, 0), DTYPE, what=f"{what}: torch's against g * float32(1/6)")


# --- ModuleInfo ---
def _torch_classes():
    pairs = {torch_cls: row for row in LAYERS for _, torch_cls in row.modules}
    for c in CONVERTERS:
        if c.torch_cls is not None:
            pairs.setdefault(c.torch_cls, None)
    return pairs


TORCH_CLASSES = _torch_classes()
MODULE_CASES = [m for m in common_modules.module_db if m.module_cls in TORCH_CLASSES]


def _module_inputs(info, training):
    torch.manual_seed(0)
    inputs = info.module_inputs_func(info, device="cpu", dtype=DTYPE, requires_grad=True, training=training)
    return [m for m in inputs if m.forward_input is not None][:MAX_MODULE_SAMPLES]


# torch.nn modules take unbatched input by adding and removing a batch dimension (unsqueeze/squeeze)
_VIEW_NODES = ("SqueezeBackward", "UnsqueezeBackward", "ViewBackward", "ReshapeAliasBackward",
               "TransposeBackward", "PermuteBackward", "AliasBackward")


def _below_views(node):
    """The name of the first node under ``node`` that is not a view of its single input."""
    while node is not None and type(node).__name__.startswith(_VIEW_NODES):
        node = node.next_functions[0][0]
    return type(node).__name__


def _graph_nodes(t):
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        n = todo.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        names.add(type(n).__name__)
        todo += [f for f, _ in n.next_functions]
    return names


# eval mode too where torch says it computes something else (dropout, batch statistics)
MODULE_MODES = [(m, t) for m in MODULE_CASES for t in ((True, False) if m.train_and_eval_differ else (True,))]


@pytest.mark.parametrize("info,training", MODULE_MODES,
                         ids=[f"{m.name}-{'train' if t else 'eval'}" for m, t in MODULE_MODES])
def test_moduleinfo_samples(info, training):
    row = TORCH_CLASSES[info.module_cls]
    nodes = our_nodes(row) if row is not None else ALL_NODES
    for j, mi in enumerate(_module_inputs(info, training)):
        what = f"{info.name}({mi.constructor_input.args}, {mi.constructor_input.kwargs}) sample {j} ({mi.desc})"
        torch.manual_seed(0)
        ref = info.module_cls(*mi.constructor_input.args, **mi.constructor_input.kwargs).to(DTYPE)
        ref.train(training)
        ours = torch_bp.convert(ref)
        assert type(ours) is not info.module_cls, f"{what}: not converted"
        params = [p for p in ref.parameters() if p.requires_grad]
        our_params = [p for p in ours.parameters() if p.requires_grad]
        args, kwargs = mi.forward_input.args, mi.forward_input.kwargs

        def fwd(*a, _m=ours, **k):
            return _m(*a, **k)

        def check_node(o):
            if row is None:  # a composite (transformer layers): our rules are in its graph
                return bool(_graph_nodes(o) & nodes)
            return _below_views(o.grad_fn) in nodes

        _compare(what, fwd, ref, args, kwargs, check_node, params, our_params)


def test_every_covered_module_class_with_a_moduleinfo_is_tested():
    """Guard against a silently empty parametrisation: the module pairs found in module_db are many."""
    assert len(MODULE_CASES) >= 50 and len(OP_CASES) >= 80
    assert tol(DTYPE)["rtol"] == 1e-10
