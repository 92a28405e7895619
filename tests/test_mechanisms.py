"""What runs is what you read: no rule class is changed after its body, and the mechanisms that
touch the rules (per-example gradients, torch_bp/per_sample.py; error-signal capture,
torch_bp/_signals.py; recompute recipes, torch_bp/ops/_lean.py) work through public autograd hooks.
"""
from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import torch_bp
from harness import tol
from torch_bp import _signals
from torch_bp.ops._util import backward_from_per_sample, summed_per_sample
from torch_bp.per_sample import per_sample_grads

ROOT = Path(__file__).resolve().parents[1]
TORCH_DIR = os.path.dirname(torch.__file__)
FUNCTIONS = sorted({f for row in torch_bp.registry.LAYERS for f in row.functions}, key=lambda c: c.__name__)
DT = torch.float64


class _Empty(torch.autograd.Function):
    """What Python and torch put in a Function subclass's ``__dict__`` by themselves."""


def _body(cls) -> dict:
    """Name -> statement, for the names bound by ``cls``'s class body (read from its source file)."""
    tree = ast.parse(Path(inspect.getsourcefile(cls)).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    names = {}
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[stmt.name] = stmt
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            for t in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                names.update({n.id: stmt for n in ast.walk(t) if isinstance(n, ast.Name)})
    return names


@pytest.mark.parametrize("cls", FUNCTIONS, ids=lambda c: c.__name__)
def test_import_changes_no_rule_class(cls):
    """After ``import torch_bp`` each registry Function holds what its class body defined, and
    nothing more; ``apply`` is torch's own."""
    assert "apply" not in cls.__dict__
    assert cls.apply.__func__ is torch.autograd.Function.apply.__func__
    body = _body(cls)
    extra = set(cls.__dict__) - set(body) - set(_Empty.__dict__)
    assert not extra, f"{cls.__name__} has attributes its body does not define: {extra}"
    for name in ("forward", "setup_context", "backward"):
        fn = cls.__dict__[name].__func__
        assert getattr(cls, name) is fn
        if isinstance(body[name], ast.Assign):
            # ``name = staticmethod(...)`` in the body: a function of the rule's own module (a shared
            # helper, a lambda written there), never one of another module's wrappers
            inner = fn
            while hasattr(inner, "__wrapped__"):
                inner = inner.__wrapped__
            assert inspect.getsourcefile(inner) == inspect.getsourcefile(cls), f"{cls.__name__}.{name}: {inner}"
            continue
        written = {ast.unparse(d).rsplit(".", 1)[-1] for d in body[name].decorator_list}
        while hasattr(fn, "__wrapped__"):   # decorators: torch's own, or one written in the class body
            assert inspect.getsourcefile(fn).startswith(TORCH_DIR) or fn.__code__.co_qualname.split(".")[0] in written, \
                f"{cls.__name__}.{name} wrapped by {fn}"
            fn = fn.__wrapped__
        assert fn.__code__.co_qualname == f"{cls.__qualname__}.{name}", fn.__code__.co_qualname
        assert inspect.getsourcefile(fn) == inspect.getsourcefile(cls)


_PATCHED = {"forward", "setup_context", "backward", "apply", "jvp", "vjp"}


def _patches(path: Path) -> list:
    """Assignments of a Function's methods outside a class body: ``X.backward = ...``, ``setattr(X, "backward", ...)``."""
    found, where = [], path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            if isinstance(t, ast.Attribute) and t.attr in _PATCHED:
                found.append(f"{where}:{node.lineno}: {ast.unparse(t)} =")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in _PATCHED):
            found.append(f"{where}:{node.lineno}: setattr(..., {node.args[1].value!r})")
    return found


# Assignments of these names that are not on a Function: (file, target) -> what it is instead.
NOT_A_FUNCTION = {
    ("torch_bp/lightning/dp.py", "pl_module.backward"):
        "LightningModule.backward of the module being trained (Lightning's hook for a custom backward "
        "call: DPSGD ghost clipping), set for the fit and removed after",
    ("torch_bp/convert.py", "report.backward"): "the backward-graph coverage field of a ConversionReport",
}


def test_no_module_patches_a_function_class():
    files = [p for d in ("torch_bp", "experiments", "tests") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 20
    found = [hit for p in files for hit in _patches(p)
             if (hit.split(":")[0], hit.split(": ", 1)[1][:-2]) not in NOT_A_FUNCTION]
    assert not found, found


def test_the_patch_finder_finds_patches(tmp_path):
    """The check above can fail: it sees the assignments the removed import-time wrappers made."""
    f = tmp_path / "probe.py"
    f.write_text("def instrument(cls, wrapped):\n    cls.backward = staticmethod(wrapped)\n"
                 "    setattr(cls, 'setup_context', wrapped)\n")
    assert len(_patches(f)) == 2


# --- per-example gradients: the hooks, and what they hand a rule's backward ---
class _Scale(torch.autograd.Function):
    """A test-only rule y = x * w (w: (C,), broadcast over (B, C)) that takes its weight gradient
    from the per-example ones when a per_sample_grads block has them (``grad_from_per_sample``)."""

    grad_from_per_sample = (1,)
    own_formula_runs = 0

    @staticmethod
    def forward(x, w):
        return x * w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_y):
        x, w = ctx.saved_tensors
        grad_x = grad_y * w if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = summed_per_sample(ctx, 1)
            if grad_w is None:
                _Scale.own_formula_runs += 1
                grad_w = (grad_y * x).sum(0)
        return grad_x, grad_w

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, out=None):
        x, _ = ctx.saved_tensors
        return {1: grad_y * x} if ctx.needs_input_grad[1] else {}


class _Fused(torch.autograd.Function):
    """A test-only rule y = x * w whose per-example and ordinary gradients come out of one pass
    (``backward_per_sample``), which the backward does not repeat."""

    passes = 0

    @staticmethod
    def forward(x, w):
        return x * w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_y):
        grads = backward_from_per_sample(ctx)
        return grads if grads is not None else _Fused._pass(ctx, grad_y)[0]

    @staticmethod
    def backward_per_sample(ctx, batch_dim, grad_y, out=None):
        return _Fused._pass(ctx, grad_y)

    @staticmethod
    def _pass(ctx, grad_y):
        _Fused.passes += 1
        x, w = ctx.saved_tensors
        per = grad_y * x
        return (grad_y * w if ctx.needs_input_grad[0] else None, per.sum(0)), {1: per}


class _Layer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.w = fn, nn.Parameter(torch.linspace(0.5, 2.0, 3, dtype=DT))

    def forward(self, x):
        return self.fn.apply(x, self.w)


def _xu(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, generator=g, dtype=DT, requires_grad=True), torch.randn(4, 3, generator=g, dtype=DT)


def test_rule_takes_its_gradient_from_the_per_sample_results():
    layer, (x, u) = _Layer(_Scale), _xu()
    _Scale.own_formula_runs = 0
    with per_sample_grads(layer):
        y = layer(x)
        (y * u).sum().backward()
    expected = (u * x).detach()
    torch.testing.assert_close(layer.w.grad_sample, expected, **tol(DT))
    torch.testing.assert_close(layer.w.grad, expected.sum(0), **tol(DT))
    assert _Scale.own_formula_runs == 0
    assert not hasattr(y.grad_fn, "per_sample_results")          # removed when the block closed
    layer.w.grad = None
    (layer(x) * u).sum().backward()                               # no block: the rule's own formula
    assert _Scale.own_formula_runs == 1
    torch.testing.assert_close(layer.w.grad, expected.sum(0), **tol(DT))
    with per_sample_grads(layer):                                 # create_graph: the differentiable formula
        (gw,) = torch.autograd.grad((layer(x) * u).sum(), [layer.w], create_graph=True)
    assert _Scale.own_formula_runs == 2 and gw.requires_grad


def test_fused_rule_runs_one_pass():
    layer, (x, u) = _Layer(_Fused), _xu()
    _Fused.passes = 0
    with per_sample_grads(layer):
        (layer(x) * u).sum().backward()
    assert _Fused.passes == 1
    torch.testing.assert_close(layer.w.grad_sample, (u * x).detach(), **tol(DT))
    torch.testing.assert_close(x.grad, (u * layer.w).detach(), **tol(DT))


class _Outer(nn.Module):
    """A module that uses a parameter through a rule itself, then calls a child module: its own
    walk must go on from where the child's stopped (the child's input is the rule's output)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4, dtype=DT))
        self.child = nn.Sequential(torch_bp.nn.Linear(5, 3).to(DT), torch_bp.nn.Tanh())

    def forward(self, x):
        return self.child(torch_bp.functional.linear(x, self.w))


def test_parent_walk_continues_below_its_children():
    torch.manual_seed(0)
    model, x = _Outer(), torch.randn(6, 4, dtype=DT)
    with per_sample_grads(model) as ps:
        model(x).square().sum().backward()
    assert ps.missing() == []
    for p in model.parameters():
        torch.testing.assert_close(p.grad_sample.sum(0), p.grad, **tol(DT))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())   # taken off


def test_parameters_without_a_module_and_a_backward_after_the_block():
    torch.manual_seed(0)
    model, x = _Outer(), torch.randn(6, 4, dtype=DT)
    with per_sample_grads(model):
        model(x).square().sum().backward()
    expected = {n: p.grad_sample for n, p in model.named_parameters()}
    with per_sample_grads(list(model.parameters())):   # a global module hook, for the block only
        out = model(x)
        out.square().sum().backward(retain_graph=True)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, expected[n], **tol(DT))
    kept = model.w.grad_sample
    out.square().sum().backward()                       # the block has closed: its hooks do nothing
    assert model.w.grad_sample is kept


def test_nothing_recorded_under_compile():
    model = torch_bp.convert(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    compiled = torch.compile(model, backend="aot_eager")
    with per_sample_grads(model):
        compiled(torch.randn(5, 3)).sum().backward()
    assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())
    assert all(p.grad is not None for p in model.parameters())


# --- error signals: any module ---
def test_error_signals_of_any_module():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).to(DT)   # plain torch
    x = torch.randn(5, 4, dtype=DT)
    outs = []

    def keep(module, args, out):
        out.retain_grad()
        outs.append(out)

    handles = [m.register_forward_hook(keep) for m in model]
    model(x).pow(3).sum().backward()
    for h in handles:
        h.remove()
    watch = _signals.watch(model, layers=lambda m: isinstance(m, (nn.Linear, nn.ReLU)))
    with _signals.capture() as cap:
        model(x).pow(3).sum().backward()
    watch.remove()
    assert cap.order == ["0", "1", "2"]
    for name, o in zip(cap.order, outs):
        assert cap.norms()[name] == pytest.approx(o.grad.norm().item(), rel=1e-12)
    assert _signals.watch(model).handles == []   # the default: torch_bp layers only, none here


def test_node_class_lookup():
    """The one private attribute the hooks use (a node class's ``_forward_cls``), and its fallback by name."""
    from torch_bp.ops.linear import LinearFunction
    from torch_bp.per_sample import _function_class, _registry_by_node_name
    w = torch.randn(2, 3, requires_grad=True)
    y = torch_bp.functional.linear(torch.randn(4, 3), w)
    assert _function_class(y.grad_fn) is LinearFunction
    assert _registry_by_node_name()[type(y.grad_fn).__name__] is LinearFunction
    assert _function_class((y * 2).grad_fn) is None
