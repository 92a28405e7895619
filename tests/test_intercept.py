"""Functional interception (torch_bp/_intercept.py): functional calls inside a converted model's
forward run torch_bp's rules, only there, and compose with torch.compile, torch.func and autocast."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as TF

import torch_bp
from torch_bp import _intercept
from torch_bp._coverage import backward_coverage, classify


class Net(torch.nn.Module):
    """Functional calls only (nothing a class swap reaches but the Linear layers)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)
        self.scale = torch.nn.Parameter(torch.rand(8) + 0.5)

    def forward(self, x, y=None):
        h = TF.silu(self.a(x)) * self.scale
        h = TF.layer_norm(h, (8,)) + torch.tanh(h).softmax(-1)
        out = self.b(h)
        return out if y is None else TF.cross_entropy(out, y)


def _ops(loss):
    seen, stack, out = set(), [loss.grad_fn], []
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        out.append(n)
        stack.extend(f for f, _ in n.next_functions)
    return out


def test_functional_calls_run_our_rules_and_match_torch():
    torch.manual_seed(0)
    net = Net().double()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    ours = torch_bp.convert(net)
    loss = ours(x, y)
    kinds = {classify(n) for n in _ops(loss)}
    assert "autograd" not in kinds, [type(n).__name__ for n in _ops(loss) if classify(n) == "autograd"]
    loss.backward()
    ref = net(x, y)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    for p, q in zip(ours.parameters(), net.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-10)


def test_functional_false_and_revert_turn_it_off():
    net = Net()
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    off = torch_bp.convert(net, functional=False)
    assert not _intercept.attached(off)
    assert backward_coverage(off, (x, y)).by_op  # silu, softmax, ... left to autograd
    on = torch_bp.convert(net)
    assert backward_coverage(on, (x, y)).share == 1.0
    assert not _intercept.attached(torch_bp.revert(on))
    assert not _intercept.attached(torch_bp.convert(on, functional=False))


def test_no_leak_after_forward_on_error_or_in_other_threads():
    ours = torch_bp.convert(Net())
    x = torch.randn(5, 6, requires_grad=True)
    ours(x)
    assert type(TF.silu(x).grad_fn).__name__ == "SiluBackward0"  # after the forward: torch's
    with pytest.raises(RuntimeError):
        ours(torch.randn(5, 7))  # the forward raises: the mode is left all the same
    assert type(TF.silu(x).grad_fn).__name__ == "SiluBackward0"

    seen = []
    gate, done = threading.Event(), threading.Event()

    def other():
        gate.wait()
        seen.append(type(TF.silu(x).grad_fn).__name__)
        done.set()

    class Waiting(torch.nn.Module):  # the other thread runs while our forward is inside the mode
        def forward(self, h):
            gate.set()
            done.wait(10)
            return h

    net = Net()
    net.a = torch.nn.Sequential(net.a, Waiting())
    t = threading.Thread(target=other)
    t.start()
    torch_bp.convert(net)(x)
    t.join()
    assert seen == ["SiluBackward0"]


def test_no_interception_without_grad():
    net = Net()
    ours = torch_bp.convert(net)
    x = torch.randn(5, 6)
    with torch.no_grad():
        out, ref = ours(x), net(x)
    torch.testing.assert_close(out, ref)
    assert out.grad_fn is None


def test_nested_converted_models_and_inner_models():
    inner = torch_bp.convert(Net())
    outer = torch.nn.Sequential(torch.nn.Linear(6, 6), inner)
    both = torch_bp.convert(outer)
    x = torch.randn(4, 6)
    assert backward_coverage(both, (x,), loss_fn=lambda o: torch_bp.functional.mse_loss(o, torch.zeros_like(o))) \
        .share == 1.0


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    net = Net()
    ours = torch_bp.convert(net)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    loss = compiled(x, y)
    loss.backward()
    ref = net(x, y)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for p, q in zip(ours.parameters(), net.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5)
    assert type(TF.silu(x.requires_grad_()).grad_fn).__name__ == "SiluBackward0"


def test_torch_func_grad():
    torch.manual_seed(0)
    net = Net().double()
    ours = torch_bp.convert(net)
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    params = dict(ours.named_parameters())
    g = torch.func.grad(lambda p: torch.func.functional_call(ours, p, (x, y)))(params)
    ref = torch.func.grad(lambda p: torch.func.functional_call(net, p, (x, y)))(dict(net.named_parameters()))
    for k in ref:
        torch.testing.assert_close(g[k], ref[k], rtol=1e-10, atol=1e-10)


def test_autocast_bfloat16():
    torch.manual_seed(0)
    net = Net()
    ours = torch_bp.convert(net)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, ref = ours(x, y), net(x, y)
    assert loss.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2 * 2 ** -7, atol=2 * 2 ** -7)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())


def test_table_is_driven_by_the_functional_package():
    table = _intercept.table()
    for name in torch_bp.functional.__all__:
        if name != "ours" and torch_bp.functional.ours(name) and hasattr(TF, name):
            assert getattr(TF, name) in table, name
    assert TF.hardtanh not in table or torch_bp.functional.ours("hardtanh")


def test_our_own_code_runs_with_the_mode_stepped_aside():
    """Only foreign code's calls pass through the handler: a class-swapped MLP's forward sends
    none (every call is inside torch_bp's functionals and rules), the functional-only Net sends
    its own functional calls and nothing from inside ours; a mode of the user's stays on."""
    seen = []

    class Counting(_intercept.Intercept):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", repr(func)))
            return super().__torch_function__(func, types, args, kwargs)

    mlp = torch_bp.convert(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 3)))
    x = torch.randn(5, 6, requires_grad=True)
    with Counting():  # as _enter does: for the forward (the backward runs after the mode is left)
        out = mlp(x)
    out.sum().backward()
    assert seen == []

    net, y = torch_bp.convert(Net(), fuse=False), torch.randint(0, 3, (5,))
    with Counting():
        out = net(x, y)
    assert out.grad_fn is not None and 0 < len(seen) <= 12, seen  # Net.forward's own (its add, the aliases' checks)

    class User(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append("user")
            return func(*args, **(kwargs or {}))

    seen.clear()
    with Counting(), User():  # the user's mode is innermost: ours is not stepped aside, theirs sees every call
        mlp(x)
    assert seen.count("user") > 3
