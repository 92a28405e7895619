"""The layer harness, parametrised over the registry: a new row is tested by adding samples."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

import torch_bp
from harness import assert_close, clone_args, float_outputs, leaves, our_nodes, rebuild, run, tol
from samples import ERROR_SAMPLES, MODULE_SAMPLES, SAMPLES, Make, get_samples
from torch_bp.registry import LAYERS

NAMES = [row.name for row in LAYERS]
ROWS = {row.name: row for row in LAYERS}
COMPARE_DTYPES = [torch.float32, torch.bfloat16]


def _ids(sample):
    return sample.desc


# Rows whose gradient convention is torch's and exact only on a submanifold of the inputs, gradchecked
# through the map onto it, with the reason: finite differences in free inputs would leave it.
GRADCHECK_THROUGH = {
    # torch's CTC gradient has the term exp(log_probs), which vanishes in log_softmax's backward: it is the
    # gradient of ctc_loss(log_softmax(x)), not of ctc_loss in free log_probs (torch's own fails gradcheck there)
    "ctc_loss": lambda log_probs, *rest: (torch.log_softmax(log_probs, -1), *rest),
}


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    row = ROWS[name]
    through = GRADCHECK_THROUGH.get(name, lambda *xs: xs)
    checked = 0
    for s in get_samples(name, torch.float64):
        if not s.gradcheck:
            continue
        args, kwargs = clone_args(s)
        inputs = leaves(args, kwargs)
        if not inputs:
            continue

        def fn(*xs, args=args, kwargs=kwargs):
            it = iter(through(*xs))
            a = tuple(_substitute(v, it) for v in args)
            k = {key: _substitute(v, it) for key, v in kwargs.items()}
            torch.manual_seed(0)
            return tuple(float_outputs(row.functional(*a, **k)))

        assert torch.autograd.gradcheck(fn, tuple(inputs)), s.desc
        checked += 1
    assert checked, f"{name}: no sample with inputs requiring grad"


def _substitute(v, it):
    if isinstance(v, (list, tuple)) and any(isinstance(x, torch.Tensor) for x in v):
        return rebuild(v, [_substitute(x, it) for x in v])
    if isinstance(v, torch.Tensor) and v.requires_grad:
        return next(it)
    return v


@pytest.mark.parametrize("dtype", COMPARE_DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_matches_torch(name, dtype):
    """Forward and all input gradients equal torch's under a random upstream gradient;
    the outputs carry our backward node; grad_output is never modified in place."""
    row = ROWS[name]
    for s in get_samples(name, dtype):
        ours_a, ours_k = clone_args(s)
        ref_a, ref_k = clone_args(s)
        outs, grads, upstream = run(row.functional, ours_a, ours_k)
        ref_outs, ref_grads, _ = run(row.reference, ref_a, ref_k, upstream=upstream)
        assert len(outs) == len(ref_outs), s.desc
        for o, r in zip(outs, ref_outs):
            assert_close(o, r, dtype, s.cond, f"{name}[{s.desc}] output")
            if o.requires_grad:
                assert type(o.grad_fn).__name__ in our_nodes(row), (
                    f"{name}[{s.desc}]: output carries {type(o.grad_fn).__name__}, not our rule")
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            assert_close(g, r, dtype, s.cond, f"{name}[{s.desc}] grad of input {i}")


# Rows whose outputs cannot be modified in place before the backward, with the reason; the
# version check of autograd then raises a RuntimeError in the backward (never a wrong gradient).
IN_PLACE_REFUSED = {
    "scaled_dot_product_attention": "saves its output O for the backward (rowsum(grad_O * O), flash-style)",
    "lp_pool1d": "saves its output y for the backward (grad through y^(1-p))",
    "lp_pool2d": "saves its output y for the backward (grad through y^(1-p))",
    "lp_pool3d": "saves its output y for the backward (grad through y^(1-p))",
    "lstm_cell": "saves its output c for the backward (tanh(c) in the gate gradients)",
    "cosine_similarity": "saves its output for the backward",
}


def _doubled(fn, in_place):
    """``fn`` whose differentiable outputs are then doubled, in place (``y.mul_(2)``, as ``y += ...``
    after a layer) or out of place."""
    def wrapped(*args, **kwargs):
        outs = float_outputs(fn(*args, **kwargs))
        if in_place:
            return tuple(o.mul_(2) if o.requires_grad else o for o in outs)
        return tuple(o * 2 if o.requires_grad else o for o in outs)
    return wrapped


@pytest.mark.parametrize("name", NAMES)
def test_outputs_modifiable_in_place(name):
    """Our outputs can be modified in place where torch's can (no view of a forward intermediate
    escapes a rule), with the gradients of the same expression computed out of place; where ours
    refuse (RuntimeError), torch's refuse too."""
    row = ROWS[name]
    for s in get_samples(name, torch.float32):
        ref_a, ref_k = clone_args(s)
        ref_outs, ref_grads, upstream = run(_doubled(row.reference, False), ref_a, ref_k)
        ours_a, ours_k = clone_args(s)
        try:
            outs, grads, _ = run(_doubled(row.functional, True), ours_a, ours_k, upstream=upstream)
        except RuntimeError as e:
            if name in IN_PLACE_REFUSED:
                assert "modified by an inplace operation" in str(e), str(e)
                continue
            with pytest.raises(RuntimeError):
                run(_doubled(row.reference, True), *clone_args(s), upstream=upstream)
            continue
        for o, r in zip(outs, ref_outs):
            assert_close(o, r, torch.float32, s.cond, f"{name}[{s.desc}] output")
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            assert_close(g, r, torch.float32, s.cond, f"{name}[{s.desc}] grad of input {i}")


def _complex(a):
    """``a`` with its floating tensors as complex128 (the same requires_grad)."""
    if isinstance(a, torch.Tensor) and a.is_floating_point():
        return a.detach().to(torch.complex128).requires_grad_(a.requires_grad)
    if isinstance(a, (list, tuple)) and any(isinstance(x, torch.Tensor) for x in a):
        return rebuild(a, [_complex(x) for x in a])
    return a


def _complex_grads(fn, args, kwargs):
    outs = [o for o in _all_outputs(fn(*args, **kwargs)) if o.requires_grad]
    g = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, dtype=o.dtype, generator=g)).real.sum() for o in outs)
    return outs, torch.autograd.grad(loss, leaves(args, kwargs), allow_unused=True)


def _all_outputs(out):
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() or out.is_complex() else []
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _all_outputs(o)]
    return []


@pytest.mark.parametrize("name", NAMES)
def test_complex_inputs(name):
    """Complex inputs: torch's results (outputs and gradients in torch's convention, the conjugate
    Jacobian), torch's exception type where torch refuses them, or a RuntimeError/NotImplementedError
    naming the complex dtype where our rule is defined for real tensors only: never a wrong gradient."""
    row = ROWS[name]
    s = get_samples(name, torch.float64)[0]
    ref_args, ref_kwargs = _complex(s.args), {k: _complex(v) for k, v in s.kwargs.items()}
    try:
        ref = _complex_grads(row.reference, ref_args, ref_kwargs)
    except Exception as e:  # torch refuses: so do we, with its exception type
        with pytest.raises(type(e)):
            _complex_grads(row.functional, _complex(s.args), {k: _complex(v) for k, v in s.kwargs.items()})
        return
    try:
        ours = _complex_grads(row.functional, _complex(s.args), {k: _complex(v) for k, v in s.kwargs.items()})
    except (RuntimeError, NotImplementedError) as e:
        assert "complex" in str(e).lower(), str(e)
        return
    for a, b in zip(ours[0] + list(ours[1]), ref[0] + list(ref[1])):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **tol(torch.float64, s.cond))


# Samples where torch's own output dtypes under CPU autocast depend on which of its kernels runs
# (oneDNN's RNN layer runs lstm and rnn in bfloat16, but not GRU, nor every packed or projected
# variant): there our recurrence keeps the row's policy.
AUTOCAST_KERNEL_DEPENDENT = {"lstm": ("packed", "proj"), "rnn_tanh": ("packed",), "rnn_relu": ("packed",)}


@pytest.mark.parametrize("name", NAMES)
def test_autocast_dtypes_match_torch(name):
    """Under CPU autocast (bfloat16) our outputs have torch's dtypes: the row's ``autocast``
    policy is the one torch applies to the op it replaces."""
    row = ROWS[name]
    compared = 0
    for s in get_samples(name, torch.float32):
        if any(s.desc.startswith(p) for p in AUTOCAST_KERNEL_DEPENDENT.get(name, ())):
            continue
        ref_a, ref_k = clone_args(s)
        ours_a, ours_k = clone_args(s)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.manual_seed(0)
            try:
                ref = float_outputs(row.reference(*ref_a, **ref_k))
            except (RuntimeError, ValueError, TypeError, NotImplementedError):
                continue  # torch refuses this sample under autocast
            torch.manual_seed(0)
            ours = float_outputs(row.functional(*ours_a, **ours_k))
        assert [o.dtype for o in ours] == [r.dtype for r in ref], f"{name}[{s.desc}]"
        compared += 1
    assert compared, f"{name}: torch refused every sample under autocast"


@pytest.mark.parametrize("name", NAMES)
def test_double_backward(name):
    row = ROWS[name]
    s = next(s for s in get_samples(name, torch.float64) if s.gradcheck and leaves(*clone_args(s)))
    args, kwargs = clone_args(s)
    inputs = leaves(args, kwargs)

    def fn(*xs):
        it = iter(xs)
        a = tuple(_substitute(v, it) for v in args)
        k = {key: _substitute(v, it) for key, v in kwargs.items()}
        torch.manual_seed(0)
        return tuple(float_outputs(row.functional(*a, **k)))

    if row.double_backward:
        assert torch.autograd.gradgradcheck(fn, tuple(inputs)), s.desc
    else:
        out = fn(*inputs)[0]
        # first_order_only: a backward with create_graph=True raises, before any number exists
        with pytest.raises(RuntimeError, match="double backward is not supported"):
            torch.autograd.grad((out * torch.randn_like(out)).sum(), inputs, create_graph=True, allow_unused=True)


@pytest.mark.parametrize("name", [n for n in NAMES if ROWS[n].modules])
def test_module_matches_torch(name):
    """Our module vs torch's: isinstance, state_dict keys both ways, outputs and gradients."""
    row = ROWS[name]
    assert name in MODULE_SAMPLES, f"{name} has modules but no module samples"
    for ours_cls, torch_cls in row.modules:
        for s in MODULE_SAMPLES[name](Make(torch.float32)):
            if s.only and ours_cls.__name__ not in s.only:
                continue
            torch.manual_seed(0)
            ref = torch_cls(*s.ctor_args, **s.ctor_kwargs)
            torch.manual_seed(0)
            ours = ours_cls(*s.ctor_args, **s.ctor_kwargs)
            assert isinstance(ours, torch_cls)
            assert repr(ours) == repr(ref)
            sd = ref.state_dict()
            assert list(ours.state_dict().keys()) == list(sd.keys())
            ours.load_state_dict(sd, strict=True)
            ref.load_state_dict(ours.state_dict(), strict=True)
            ours.train(s.train)
            ref.train(s.train)
            for mode in ("train", "eval") if s.train else ("eval",):
                ours.train(mode == "train")
                ref.train(mode == "train")
                ours.zero_grad()
                ref.zero_grad()
                ia = tuple(x.detach().clone().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor)
                           else x for x in s.inputs)
                ra = tuple(x.detach().clone().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor)
                           else x for x in s.inputs)
                outs, grads, up = run(ours, ia, s.forward_kwargs)
                rout, rgrads, _ = run(ref, ra, s.forward_kwargs, upstream=up)
                what = f"{ours_cls.__name__}[{s.desc}, {mode}]"
                for o, r in zip(outs, rout):
                    assert_close(o, r, torch.float32, what=what + " output")
                for g, r in zip(grads, rgrads):
                    assert_close(g, r, torch.float32, what=what + " input grad")
                for (pn, p), (_, rp) in zip(ours.named_parameters(), ref.named_parameters()):
                    assert_close(p.grad, rp.grad, torch.float32, what=f"{what} grad of {pn}")
                for (bn, b), (_, rb) in zip(ours.named_buffers(), ref.named_buffers()):
                    assert_close(b, rb, b.dtype if b.is_floating_point() else torch.float32, what=f"{what} {bn}") \
                        if b.is_floating_point() else torch.testing.assert_close(b, rb)


@pytest.mark.parametrize("name", sorted(ERROR_SAMPLES))
def test_bad_input(name):
    """Whatever torch rejects, we reject with the same exception type and a message."""
    row = ROWS[name]
    for s in ERROR_SAMPLES[name](Make(torch.float32)):
        with pytest.raises(Exception) as ref_exc:
            row.reference(*s.args, **s.kwargs)
        with pytest.raises(ref_exc.type) as exc:
            row.functional(*s.args, **s.kwargs)
        assert str(exc.value), f"{name}[{s.desc}]: empty error message"


def test_registry_complete():
    """Every Function in torch_bp.ops is a Rule with a registry row; every row has samples."""
    from torch_bp.ops._rule import RULES, Rule

    registered = {f for row in LAYERS for f in row.functions}
    found = set()
    for info in pkgutil.iter_modules(torch_bp.ops.__path__):
        mod = importlib.import_module(f"torch_bp.ops.{info.name}")
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, torch.autograd.Function) and obj.__module__ == mod.__name__ and obj is not Rule:
                found.add(obj)
    not_rules = {f.__name__ for f in found if not issubclass(f, Rule)}
    assert not not_rules, f"Functions in torch_bp.ops that do not declare Rule: {sorted(not_rules)}"
    missing = {f.__name__ for f in (found | set(RULES)) - registered}
    assert not missing, f"Functions without a registry row: {sorted(missing)}"
    assert not [n for n in NAMES if n not in SAMPLES], "rows without samples"
    assert len(set(NAMES)) == len(NAMES), "duplicate registry names"


def test_signatures_match_torch():
    """Same parameter names, order and defaults as torch.nn.functional where torch exposes them."""
    for row in LAYERS:
        try:
            ref = inspect.signature(row.reference)
        except (TypeError, ValueError):
            continue  # a builtin without a Python signature
        ours = inspect.signature(row.functional)
        ref_params = [(p.name, p.default) for p in ref.parameters.values()]
        our_params = [(p.name, p.default) for p in ours.parameters.values()]
        assert our_params == ref_params, f"{row.name}: {ours} != {ref}"


def test_docs_list_every_layer():
    import pathlib
    page = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "layers.md").read_text()
    assert torch_bp.registry.markdown_table() in page, "run: python scripts/update_readme.py"


def test_docs_benchmark_tables_are_the_committed_results():
    """docs/benchmarks.md's tables are generated from experiments/results/bench_cpu.json."""
    import pathlib
    import sys
    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from experiments.benchmarks.readme import tables
    page = (root / "docs" / "benchmarks.md").read_text()
    assert f"<!-- bench:start -->\n{tables()}\n<!-- bench:end -->" in page, "run: python scripts/update_readme.py"


def test_docs_real_model_tables_are_the_committed_results():
    """README.md's and docs/real-models.md's coverage tables are generated from experiments/results/real_models.json."""
    import pathlib
    import sys
    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from experiments.real_models import committed_table
    block = f"<!-- realmodels:start -->\n{committed_table()}\n<!-- realmodels:end -->"
    for page in ("README.md", "docs/real-models.md"):
        assert block in (root / page).read_text(), f"{page}: run python scripts/update_readme.py"
