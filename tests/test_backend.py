"""The compiled backend (csrc/, torch.ops.torch_bp) against its specification, the Python rules.

- every Function with a compiled path gives the Python rule's outputs and gradients on the
  registry samples (float64 to 1e-10, float32/bfloat16 to the harness's dtype table), and the
  compiled ops really ran;
- torch.library.opcheck on every registered op, with the arguments the Functions pass;
- torch.func and torch.compile see the right path; the switch and backend_info;
- loading and building: import never builds; a damaged cache never reaches dlopen and is
  rebuilt once on request; a library lacking ops is not used; a compile that hangs, or whose
  importer is killed, leaves no compiler running; stale locks, killed builds, torch version
  change, no compiler (the compile itself is stubbed or replaced by ninja running sleep).

The layer harness (tests/test_layers.py) runs once per backend besides (tests/conftest.py).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import torch_bp
from harness import assert_close, clone_args, run
from samples import get_samples
from torch_bp import _ext, backend
from torch_bp.registry import LAYERS, compiled_ops

pytestmark = pytest.mark.filterwarnings("ignore:Implicit dimension choice", "ignore:size_average and reduce args")

COMPILED_ROWS = [r for r in LAYERS if compiled_ops(r)]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def _info():
    return torch_bp.backend_info()


needs_cpp = pytest.mark.skipif(_info().backend != "cpp" and _info().requested != "python",
                               reason=f"compiled backend unavailable: {_info().reason}")


class OpLog(TorchDispatchMode):
    """Records every torch_bp op called, with its (detached) arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "torch_bp":
            self.calls.append((func, _detach(args), _detach(kwargs or {})))
        return func(*args, **(kwargs or {}))


def _detach(v):
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, (list, tuple)):
        return type(v)(_detach(x) for x in v)
    if isinstance(v, dict):
        return {k: _detach(x) for k, x in v.items()}
    return v


def _run_backend(name, row, s):
    torch_bp.set_backend(name)
    args, kwargs = clone_args(s)
    log = OpLog()
    with log:
        outs, grads, up = run(row.functional, args, kwargs)
    return outs, grads, up, log.calls


def test_compiled_backend_is_built_where_a_compiler_is():
    """CI and the README's set-up build the extension: its absence must have a real reason."""
    info = _info()
    if info.requested == "python":
        pytest.skip("TORCH_BP_BACKEND=python")
    # CI builds them (scripts/setup.sh): there the cpp rows of the harness must run, not skip.
    if info.backend != "cpp" and (_ext._compiler() is None or _ext.CSRC is None) and not os.environ.get("CI"):
        pytest.skip(f"compiled backend unavailable: {info.reason}")
    assert info.backend == "cpp", str(info)
    assert "cpp" in str(info) and Path(info.library).is_file()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", [r.name for r in COMPILED_ROWS])
def test_compiled_matches_python_rule(name, dtype, cpp):
    row = torch_bp.registry.get(name)
    want = compiled_ops(row, dtype)
    called = set()
    try:
        for s in get_samples(name, dtype):
            outs, grads, up, _ = _run_backend("python", row, s)
            c_outs, c_grads, _, calls = _run_backend("cpp", row, s)
            called |= {f._schema.name.split("::")[1] for f, _, _ in calls}
            for o, c in zip(outs, c_outs):
                assert_close(c, o, dtype, s.cond, f"{name}[{s.desc}] output")
            for i, (g, c) in enumerate(zip(grads, c_grads)):
                assert_close(c, g, dtype, s.cond, f"{name}[{s.desc}] grad of input {i}")
    finally:
        torch_bp.set_backend("cpp")
    assert want <= called, f"compiled ops never ran: {sorted(want - called)}"


def _recorded_calls():
    """One recorded call per (op, sample kind): the arguments the Functions really pass."""
    calls = {}
    for row in COMPILED_ROWS:
        for dtype in (torch.float32, torch.bfloat16):
            for s in get_samples(row.name, dtype)[:3]:
                for f, a, k in _run_backend("cpp", row, s)[3]:
                    calls.setdefault(f._schema.name, []).append((f, a, k))
    return calls


@needs_cpp
def test_opcheck_every_registered_op(cpp):
    registered = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("torch_bp::")}
    declared = {f"torch_bp::{op}" for ops in backend.compiled_rules().values() for op in ops}
    assert registered == declared, "the rules' compiled declarations and csrc/ops.cpp disagree"
    calls = _recorded_calls()
    assert set(calls) == registered, f"ops not reached by any sample: {sorted(registered - set(calls))}"
    for name, recorded in sorted(calls.items()):
        for f, a, k in recorded[:2]:
            torch.library.opcheck(f, a, k)


@needs_cpp
def test_functorch_transforms_use_the_python_rule(cpp):
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64)
    log = OpLog()
    with log:
        per = torch.func.vmap(torch.func.grad(lambda xi: torch_bp.functional.rms_norm(xi, (8,), w).pow(2).sum()))(x)
    assert not log.calls
    for i in range(3):
        xi = x[i].clone().requires_grad_()
        torch_bp.functional.rms_norm(xi, (8,), w).pow(2).sum().backward()
        assert_close(per[i], xi.grad, torch.float64, what="vmap(grad) rms_norm")


@needs_cpp
def test_double_backward_differentiates_the_python_rule(cpp):
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: torch_bp.functional.gelu(t, approximate="tanh"), (x,))
    assert torch.autograd.gradgradcheck(torch_bp.functional.relu, (x,))


@needs_cpp
def test_compile_traces_the_compiled_ops(cpp):
    model = torch_bp.convert(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.GELU(),
                                                 torch.nn.Linear(16, 16), torch.nn.RMSNorm(16), torch.nn.ReLU()))
    x = torch.randn(4, 8)
    seen = []

    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    def backend_fn(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return make_boxed_func(gm.forward)

    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=backend_fn, bw_compiler=backend_fn), fullgraph=True)
    out = compiled(x)
    out.square().sum().backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = model(x)
    ref.square().sum().backward()
    assert_close(out, ref, torch.float32, what="compiled output")
    for g, p in zip(got, model.parameters()):
        assert_close(g, p.grad, torch.float32, what="compiled grad")
    for op in ("layer_norm_fwd", "layer_norm_bwd", "rms_norm_fwd", "rms_norm_bwd", "gelu_fwd", "relu_mask", "mask_bwd"):
        assert any(f"torch_bp.{op}" in t for t in seen), f"{op} not in the compiled graphs"


def test_switch_and_info():
    before = _info().requested
    try:
        with pytest.raises(ValueError, match="one of"):
            torch_bp.set_backend("fortran")
        info = torch_bp.set_backend("python")
        assert info.backend == "python" and info.requested == "python" and "python" in str(info)
        x = torch.randn(3, 5, requires_grad=True)
        log = OpLog()
        with log:
            torch_bp.functional.layer_norm(x, (5,)).sum().backward()
        assert not log.calls
    finally:
        torch_bp.set_backend(before)


def test_relu_saves_one_bit_per_element(cpp):
    x = torch.randn(1000, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        torch_bp.functional.relu(x)
    assert [t.nbytes for t in saved] == [125]


# --- the compiled elementwise activations and losses: torch's conventions at special values ---
# NaN, +-inf, +-0, the kinks, softplus's threshold (b x = 5 exactly), and more than one chunk of
# 32768 elements with a partial vector at the end (the kernels' parallel and tail paths).
_SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-30, 2.5, 30.0, -30.0, 1.0, -1.0, 100.0, -100.0]
_F = torch.nn.functional
_ELEMENTWISE = {
    "leaky_relu": lambda f, x, t: f.leaky_relu(x, 0.2),
    "elu": lambda f, x, t: f.elu(x, 0.5),
    "softplus": lambda f, x, t: f.softplus(x, beta=2.0, threshold=5.0),
    "tanh": lambda f, x, t: f.tanh(x),
    "sigmoid": lambda f, x, t: f.sigmoid(x),
    "mse_loss": lambda f, x, t: f.mse_loss(x, t),
    "l1_loss-none": lambda f, x, t: f.l1_loss(x, t, reduction="none"),
    "l1_loss-sum": lambda f, x, t: f.l1_loss(x, t, reduction="sum"),
    "huber_loss-none": lambda f, x, t: f.huber_loss(x, t, reduction="none", delta=0.5),
    "smooth_l1_loss": lambda f, x, t: f.smooth_l1_loss(x, t, beta=2.0),
    "bce_with_logits": lambda f, x, t: f.binary_cross_entropy_with_logits(x, t.sigmoid()),
    "bce_with_logits-weights-none": lambda f, x, t: f.binary_cross_entropy_with_logits(
        x, t.sigmoid(), (t.abs() + 0.5).detach(), reduction="none", pos_weight=(t.abs() * 2).detach()),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(_ELEMENTWISE))
def test_compiled_elementwise_special_values(case, dtype, cpp):
    g = torch.Generator().manual_seed(0)
    special = torch.tensor(_SPECIAL, dtype=torch.float64)
    x0 = torch.cat([special, special.flip(0), torch.randn(32801, generator=g, dtype=torch.float64) * 3])
    t0 = torch.cat([special.flip(0).nan_to_num(0.0), special.nan_to_num(0.0, 7.0, -7.0),
                    torch.randn(32801, generator=g, dtype=torch.float64)])
    results = {}
    for name, f in (("python", torch_bp.functional), ("cpp", torch_bp.functional), ("torch", _F)):
        torch_bp.set_backend("python" if name == "python" else "cpp")
        x, t = x0.to(dtype).requires_grad_(), t0.to(dtype).requires_grad_()
        log = OpLog()
        with log:
            out = _ELEMENTWISE[case](f, x, t)
            out.sum().backward()  # grad_output: one value expanded (read in place), or a 0-d one
        assert bool(log.calls) == (name == "cpp"), f"{case}: compiled ops ran {len(log.calls)} times under {name}"
        results[name] = (out, x.grad, t.grad)
    for what, c, p, r in zip(("output", "grad_x", "grad_t"), results["cpp"], results["python"], results["torch"]):
        assert_close(c, p, dtype, what=f"{case} {what} (cpp vs python)")
        if dtype != torch.bfloat16:  # bfloat16: torch rounds intermediate results, the rules do not
            assert_close(c, r, dtype, what=f"{case} {what} (cpp vs torch)")


# --- loading and building (no compiler run: the compile step is stubbed) ---
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_ext(tmp_path, monkeypatch):
    """_ext with nothing loaded, building into tmp_path; the 'build' copies the real library."""
    monkeypatch.setenv("TORCH_BP_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(_ext, "_loaded", None)
    monkeypatch.setattr(_ext, "_unusable", "")
    builds = []

    def fake_compile(d):
        builds.append(d)
        assert not (d / "lock").exists(), "the stale cpp_extension lock was not removed"
        real = _info().library
        if real:
            shutil.copy(real, d / f"{_ext.NAME}.so")
        else:
            (d / f"{_ext.NAME}.so").write_bytes(b"")
    monkeypatch.setattr(_ext, "_compile", fake_compile)
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    return builds


def _stamp(d: Path, lib_bytes: bytes):
    """A build directory for these sources whose stamp describes a library of ``lib_bytes``."""
    import hashlib

    d.mkdir(parents=True, exist_ok=True)
    (d / "stamp.json").write_text(json.dumps({"hash": _ext.sources_hash(), "size": len(lib_bytes),
                                              "sha256": hashlib.sha256(lib_bytes).hexdigest()}))


def _import_in_child(build_dir, code="", **env):
    """``import torch_bp`` in a fresh interpreter (TORCH_BP_BACKEND unset: "auto"); returns
    (the RuntimeWarnings it raised, backend_info() as a string, the completed process)."""
    script = ("import json, warnings\n"
              "with warnings.catch_warnings(record=True) as w:\n"
              "    warnings.simplefilter('always')\n"
              "    import torch_bp\n"
              f"{code}\n"
              "print(json.dumps([[str(x.message) for x in w if x.category is RuntimeWarning],"
              " str(torch_bp.backend_info())]))\n")
    child_env = {k: v for k, v in os.environ.items() if k != "TORCH_BP_BACKEND"}
    child_env.update(TORCH_BP_BUILD_DIR=str(build_dir), **env)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=child_env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"import torch_bp died (status {r.returncode}): {r.stderr[-2000:]}"
    warned, info = json.loads(r.stdout.strip().splitlines()[-1])
    return warned, info, r


def test_import_never_builds(tmp_path):
    """No kernels built: the import runs the Python rules, says how to build, warns nothing,
    and calls no compiler (CXX here records a call)."""
    marker = tmp_path / "compiler-called"
    cxx = tmp_path / "c++"
    cxx.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    cxx.chmod(0o755)
    warned, info, r = _import_in_child(tmp_path / "build", CXX=str(cxx))
    assert not marker.exists() and not (tmp_path / "build").exists(), "import torch_bp tried to build"
    assert warned == [] and "building" not in r.stderr
    assert "backend: python" in info and "python -m torch_bp.build" in info


@pytest.mark.parametrize("damage", ["random-bytes", "truncated"])
def test_damaged_cache_never_reaches_dlopen(tmp_path, damage):
    """A library under a valid stamp but with other bytes: import falls back with one warning
    (no OSError, no SIGBUS from mapping a truncated file) and does not build."""
    real = _info().library
    if damage == "truncated" and not real:
        pytest.skip("needs the real library to truncate")
    good = Path(real).read_bytes() if real else os.urandom(4096)
    d = tmp_path / _ext._tag()
    _stamp(d, good)
    bad = os.urandom(len(good)) if damage == "random-bytes" else good[:len(good) // 2]
    (d / f"{_ext.NAME}.so").write_bytes(bad)
    warned, info, r = _import_in_child(tmp_path)
    assert len(warned) == 1 and "damaged" in warned[0] and "torch_bp.build" in warned[0], warned
    assert "backend: python" in info and "building" not in r.stderr
    assert (d / f"{_ext.NAME}.so").read_bytes() == bad  # import leaves the cache alone


def test_damaged_cache_is_rebuilt_once_on_request(fresh_ext):
    d = _ext.build_dir()
    _stamp(d, b"the library as built")
    (d / f"{_ext.NAME}.so").write_bytes(b"the library as bu")
    res = _ext.load(build=False)
    assert res.library is None and res.broken and "damaged" in res.reason and not fresh_ext
    assert _ext.load(build=True).library is not None and len(fresh_ext) == 1
    assert _ext._check(d / f"{_ext.NAME}.so", d / "stamp.json", _ext.sources_hash())[0] == "ok"


def test_library_lacking_an_op_is_not_used(fresh_ext, monkeypatch):
    """A library that loads but lacks an op the backend calls: the Python rules, one warning,
    its stamp dropped so that the next build request rebuilds it."""
    before = _info().requested
    assert _ext.load(build=True).library is not None and len(fresh_ext) == 1
    monkeypatch.setattr(_ext, "_loaded", None)
    rules = backend.compiled_rules()
    monkeypatch.setattr(backend, "compiled_rules", lambda: {**rules, "Imaginary": ("no_such_op",)})
    monkeypatch.setattr(backend, "_warned", False)
    try:
        with pytest.warns(RuntimeWarning, match="lacks the ops \\['no_such_op'\\]"):
            info = torch_bp.set_backend("auto")
        assert info.backend == "python" and "no_such_op" in info.reason
        with pytest.raises(RuntimeError, match="no_such_op"):
            torch_bp.set_backend("cpp")
        assert not (_ext.build_dir() / "stamp.json").exists()
    finally:
        monkeypatch.undo()
        torch_bp.set_backend(before)


def _ninja_sleeping(tmp_path, seconds):
    """A ninja build whose one step sleeps (a compiler that hangs, in a process group of its
    own as ninja runs every step); returns (the command, the sleep's command line)."""
    ninja = shutil.which("ninja")
    if ninja is None:
        pytest.skip("ninja is not installed")
    (tmp_path / "build.ninja").write_text(f"rule slow\n  command = sleep {seconds}\nbuild out: slow\n")
    return [ninja, "-C", str(tmp_path)], f"sleep {seconds}"


def _running(cmdline):
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "cmdline").read_bytes().replace(b"\0", b" ").strip() == cmdline.encode():
                found.append(int(p.name))
        except OSError:
            pass
    return found


def _wait_for(cond, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_compile_timeout_stops_the_whole_build(tmp_path):
    cmd, sleeping = _ninja_sleeping(tmp_path, 311.25)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="TORCH_BP_BUILD_TIMEOUT"):
        _ext.run_killable(cmd, 2, tmp_path / "build.log")
    assert time.monotonic() - t0 < 30
    assert _wait_for(lambda: not _running(sleeping), 10), "the hung compile outlived its timeout"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_killed_importer_leaves_no_compiler_running(tmp_path):
    cmd, sleeping = _ninja_sleeping(tmp_path, 312.25)
    importer = subprocess.Popen([sys.executable, "-c",
                                 "import sys; from pathlib import Path; from torch_bp import _ext; "
                                 "_ext.run_killable(sys.argv[1:], 600, Path(%r))" % str(tmp_path / "build.log"), *cmd],
                                cwd=ROOT, env={**os.environ, "TORCH_BP_BACKEND": "python"})
    try:
        assert _wait_for(lambda: _running(sleeping), 60), "the build never started"
    finally:
        importer.kill()
        importer.wait()
    assert _wait_for(lambda: not _running(sleeping), 15), "the compile outlived its killed importer"


def test_waiting_for_another_build_gives_up_with_the_reason(fresh_ext, monkeypatch):
    """Another process holds the build lock: give up after the wait timeout, which by default is
    the compile timeout plus a minute (minutes, not half an hour)."""
    import filelock

    assert _ext.wait_timeout() == _ext.build_timeout() + 60 <= 15 * 60
    d = _ext.build_dir()
    d.mkdir(parents=True)
    monkeypatch.setattr(_ext, "wait_timeout", lambda: 1.0)
    with filelock.FileLock(str(d.parent / f"{d.name}.lock")):
        holder = subprocess.run([sys.executable, "-c", "import filelock, sys; "
                                 "sys.exit(0 if filelock.FileLock(sys.argv[1]).acquire(timeout=0) else 1)",
                                 str(d.parent / f"{d.name}.lock")], capture_output=True)
        assert holder.returncode != 0  # the lock is held across processes
        t0 = time.monotonic()
        res = _ext.load(build=True)
    assert res.library is None and "another process" in res.reason and time.monotonic() - t0 < 10
    assert not fresh_ext


def test_stale_locks_of_a_killed_build_do_not_hang(fresh_ext):
    d = _ext.build_dir()
    d.mkdir(parents=True)
    (d / "lock").write_text("")                 # cpp_extension's baton, left by a killed build
    (d / "torch_bp.o").write_bytes(b"partial")  # a half-written object
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time, filelock\n"
        "with filelock.FileLock(%r): print('locked', flush=True); time.sleep(60)") % str(d.parent / f"{d.name}.lock")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, signal.SIGKILL)           # the builder dies holding our lock
    holder.wait()
    t0 = time.monotonic()
    lib, reason, _ = _ext.load(build=True)
    assert lib is not None, reason
    assert time.monotonic() - t0 < 10 and len(fresh_ext) == 1
    assert not (d / "torch_bp.o").exists() and json.loads((d / "stamp.json").read_text())["hash"]


def test_torch_version_change_rebuilds(fresh_ext, monkeypatch):
    assert _ext.load(build=True)[0] is not None
    first = _ext.build_dir()
    monkeypatch.setattr(_ext, "_loaded", None)
    monkeypatch.setattr(torch, "__version__", "9.9.0+other")
    assert _ext.build_dir() != first
    assert _ext.load(build=True)[0] is not None and len(fresh_ext) == 2
    monkeypatch.setattr(_ext, "_loaded", None)
    assert _ext.load(build=True)[0] is not None and len(fresh_ext) == 2  # up to date: loaded, not rebuilt


def test_no_compiler_gives_a_reason_and_no_build(fresh_ext, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    lib, reason, _ = _ext.load(build=True)
    assert lib is None and "compiler" in reason and not fresh_ext


def test_failed_build_is_not_retried_until_asked(fresh_ext, monkeypatch):
    def broken(d):
        raise RuntimeError("error: expected ';' before '}' token")
    monkeypatch.setattr(_ext, "_compile", broken)
    lib, reason, _ = _ext.load(build=True)
    assert lib is None and "build failed" in reason and "expected ';'" in reason
    lib, reason, _ = _ext.load(build=True)
    assert lib is None and "failed before" in reason
    monkeypatch.setattr(_ext, "_compile", lambda d: fresh_ext.append(d) or (d / f"{_ext.NAME}.so").write_bytes(b""))
    assert _ext.load(build=True, force=True)[0] is not None


@pytest.mark.parametrize("name", [r.name for r in COMPILED_ROWS])
def test_expanded_grad_output(name, cpp):
    """grad_y = one value expanded (the backward of sum()), read without materialising it."""
    row = torch_bp.registry.get(name)
    s = get_samples(name, torch.float64)[0]
    grads = []
    for b in ("python", "cpp"):
        torch_bp.set_backend(b)
        args, kwargs = clone_args(s)
        torch.manual_seed(0)
        out = row.functional(*args, **kwargs)
        (out if isinstance(out, torch.Tensor) else out[0]).sum().backward()
        grads.append([a.grad for a in args if isinstance(a, torch.Tensor) and a.requires_grad])
    for g, c in zip(*grads):
        assert_close(c, g, torch.float64, what=f"{name} grad under sum()")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_bit_masks_any_size(dtype, cpp):
    """relu, dropout and linear_activation(relu) masks: vector and tail paths, NaN passes as in torch."""
    for n in (1, 7, 8, 9, 16, 17, 33, 1000):
        x = torch.randn(n, dtype=torch.float64)
        x[::5] = 0.0
        x[1::7] = float("nan")
        x = x.to(dtype)
        keep = torch.rand(n) > 0.3
        scale = torch.tensor(1 / 0.7, dtype=dtype)
        b = torch.randn(n % 5 + 1, dtype=dtype)
        h = torch.randn(3, n % 5 + 1, dtype=dtype)
        runs = []
        for backend_name in ("python", "cpp"):
            torch_bp.set_backend(backend_name)
            xs = [x.clone().requires_grad_() for _ in range(2)]
            hs = h.clone().requires_grad_()
            g = torch.linspace(-1, 1, n, dtype=dtype)
            y1 = torch_bp.functional.relu(xs[0])
            y2 = torch_bp.ops.dropout.DropoutFunction.apply(xs[1], keep, scale)
            y3 = torch_bp.functional.linear_activation(hs, torch.eye(h.shape[1], dtype=dtype), b, "relu")
            torch.autograd.backward([y1, y2, y3], [g, g, torch.ones_like(y3)])
            runs.append([y1, y2, y3, xs[0].grad, xs[1].grad, hs.grad])
        torch_bp.set_backend("cpp")
        for p, c in zip(*runs):
            torch.testing.assert_close(c, p, equal_nan=True, rtol=0, atol=0)


def test_wheel_carries_the_sources():
    """A non-editable install must carry csrc/ inside the package (pyproject's package-data
    ``torch_bp = ["csrc/**/*"]``): ``torch_bp/csrc`` is a link to the top-level ``csrc/``."""
    from pathlib import Path

    import torch_bp

    pkg_csrc = Path(torch_bp.__file__).resolve().parent / "csrc"
    top_csrc = Path(torch_bp.__file__).resolve().parent.parent / "csrc"
    if not top_csrc.is_dir():
        pytest.skip("not a source checkout")
    assert (pkg_csrc / "torch_bp.cpp").is_file() and pkg_csrc.resolve() == top_csrc.resolve()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_compiled_softmax_rows(name, dtype, cpp):
    """Rows of every length around a vector (tails), many rows (parallel), -inf masks, NaN, +inf."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, d, generator=g, dtype=torch.float64) * 4 for n, d in ((3, 1), (5, 7), (4, 16), (3, 17),
                                                                             (2, 33), (300, 130))]
    special = torch.randn(6, 9, generator=g, dtype=torch.float64)
    special[0, ::2] = -math.inf
    special[1] = -math.inf
    special[2, 3] = math.nan
    special[3, 4] = math.inf
    xs.append(special)
    gys = [torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype) for x in xs]
    results = {}
    for b, f in (("python", torch_bp.functional), ("cpp", torch_bp.functional), ("torch", _F)):
        torch_bp.set_backend("python" if b == "python" else "cpp")
        results[b] = []
        for x0, gy in zip(xs, gys):
            x = x0.to(dtype).requires_grad_()
            out = getattr(f, name)(x, -1)
            out.backward(gy)
            results[b].append((out, x.grad))
    for x0, gy, cs, ps, rs in zip(xs, gys, results["cpp"], results["python"], results["torch"]):
        # the gradient from y rounded once more or less (bfloat16: a last-bit difference in y
        # moves grad_x = grad_y - e^y sum(grad_y) by up to sum |grad_y| of its row times that bit)
        conds = (1.0, float(gy.double().abs().sum(-1).max()) if dtype == torch.bfloat16 else 1.0)
        for what, cond, c, p, r in zip(("output", "grad_x"), conds, cs, ps, rs):
            assert_close(c, p, dtype, cond, what=f"{name} {what} {tuple(x0.shape)} (cpp vs python)")
            if dtype != torch.bfloat16:
                assert_close(c, r, dtype, what=f"{name} {what} {tuple(x0.shape)} (cpp vs torch)")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_compiled_embedding_rows(dtype, cpp):
    """Many positions per row and rows never looked up, padding_idx, scale_grad_by_freq, int32."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 40, (64, 50), generator=g) % torch.randint(1, 60, (64, 1), generator=g)  # skewed
    w0 = torch.randn(70, 19, generator=g, dtype=torch.float64).to(dtype)
    cases = [(i, kw) for i in (idx, idx.int(), idx.t())
             for kw in ({}, {"padding_idx": 0}, {"scale_grad_by_freq": True}, {"scale_grad_by_freq": True, "padding_idx": 2})]
    gys = [torch.randn(*i.shape, 19, generator=g, dtype=torch.float64).to(dtype) for i, _ in cases]
    results = {}
    for b, f in (("python", torch_bp.functional), ("cpp", torch_bp.functional), ("torch", _F)):
        torch_bp.set_backend("python" if b == "python" else "cpp")
        results[b] = []
        for (i, kw), gy in zip(cases, gys):
            w = w0.clone().requires_grad_()
            out = f.embedding(i, w, **kw)
            out.backward(gy)
            results[b].append((out, w.grad))
    for (_, kw), cs, ps, rs in zip(cases, results["cpp"], results["python"], results["torch"]):
        for what, c, p, r in zip(("output", "grad_w"), cs, ps, rs):
            assert_close(c, p, dtype, what=f"embedding {what} {kw} (cpp vs python)")
            if dtype != torch.bfloat16:
                assert_close(c, r, dtype, what=f"embedding {what} {kw} (cpp vs torch)")
