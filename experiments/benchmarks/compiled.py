"""The compiled backend against torch eager, torch.compile (inductor) and our Python rules.

``python -m experiments.benchmarks.compiled [--reps N] [--only layer_norm,cross_entropy] [--upstream sum|grad|both]``

Per compiled op, at realistic sizes (8192 x 1024 float32 rows for norms and activations,
4096 x 32000 for cross-entropy): forward+backward time, the median of interleaved repetitions
(eager, compile, python, cpp, eager, ...; experiments/benchmarks/measure.py), as ratios
``t(other) / t(cpp)`` (> 1: the compiled backend is faster). Two upstream gradients:

- ``sum``: ``out.sum().backward()``, the suite's convention (experiments/benchmarks): grad_y is
  one value expanded, which inductor fuses into the backward and our kernels read in place;
- ``grad``: ``out.backward(g)`` with a stored random ``g``, as from a layer above.

Also the bytes saved for backward (saved_tensors_hooks, inputs excluded), which shows the
1-bit masks of relu and dropout. Writes experiments/results/bench_compiled.json beside the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as TF

import torch_bp
import torch_bp.functional as F
from torch_bp.ops.linear import BiasActivationFunction

from .measure import format_table, interleaved_median, saved_bytes

ROWS, FEAT = 8192, 1024


def _r(*shape, grad=True):
    return torch.randn(*shape).requires_grad_(grad)


def cases():
    """name -> (size, make() -> (torch reference fn, torch_bp fn, tensors needing grad))."""
    def norm(kind):
        def make():
            x, w, b = _r(ROWS, FEAT), _r(FEAT), _r(FEAT)
            if kind == "layer_norm":
                return (lambda: TF.layer_norm(x, (FEAT,), w, b)), (lambda: F.layer_norm(x, (FEAT,), w, b)), [x, w, b]
            return (lambda: TF.rms_norm(x, (FEAT,), w)), (lambda: F.rms_norm(x, (FEAT,), w)), [x, w]
        return make

    def act(name, **kw):
        def make():
            x = _r(ROWS, FEAT)
            return (lambda: getattr(TF, name)(x, **kw)), (lambda: getattr(F, name)(x, **kw)), [x]
        return make

    def bias_gelu():
        h, b = _r(ROWS, FEAT), _r(FEAT)
        return (lambda: TF.gelu(h + b)), (lambda: BiasActivationFunction.apply(h, b, "gelu", "none")[0]), [h, b]

    def linear_gelu():
        x, w, b = _r(ROWS, FEAT), _r(FEAT, FEAT) / 32, _r(FEAT)
        w = w.detach().requires_grad_()
        return ((lambda: TF.gelu(TF.linear(x, w, b))), (lambda: F.linear_activation(x, w, b, "gelu")), [x, w, b])

    def softmax(name):
        def make():
            x = _r(4096, 2048)
            return (lambda: getattr(TF, name)(x, -1)), (lambda: getattr(F, name)(x, -1)), [x]
        return make

    def dropout():
        x = _r(ROWS, FEAT)
        # the same seed before each call: every candidate draws the same mask
        def ref():
            torch.manual_seed(0)
            return TF.dropout(x, 0.1)

        def ours():
            torch.manual_seed(0)
            return F.dropout(x, 0.1)
        return ref, ours, [x]

    def cross_entropy():
        x, t = _r(4096, 32000), torch.randint(0, 32000, (4096,))
        return (lambda: TF.cross_entropy(x, t)), (lambda: F.cross_entropy(x, t)), [x]

    rows = f"{ROWS}x{FEAT}"
    return {
        "layer_norm": (rows, norm("layer_norm")),
        "rms_norm": (rows, norm("rms_norm")),
        "bias+gelu": (rows, bias_gelu),
        "linear+gelu": (f"{rows} @ {FEAT}x{FEAT}", linear_gelu),
        "gelu": (rows, act("gelu")),
        "gelu_tanh": (rows, act("gelu", approximate="tanh")),
        "silu": (rows, act("silu")),
        "relu": (rows, act("relu")),
        "softmax": ("4096x2048", softmax("softmax")),
        "log_softmax": ("4096x2048", softmax("log_softmax")),
        "dropout": (f"{rows}, p=0.1", dropout),
        "cross_entropy": ("4096x32000", cross_entropy),
    }


def _step(fn, grads, upstream, backend=None):
    def step():
        if backend:
            torch_bp.set_backend(backend)
        out = fn()
        if upstream is None:
            out.sum().backward()
        else:
            out.backward(upstream)
        for t in grads:
            t.grad = None
    return step


def bench(name, size, make, upstream_mode, reps, compile_ref=True):
    torch.manual_seed(0)
    ref, ours, grads = make()
    up = None
    if upstream_mode == "grad":
        with torch.no_grad():
            up = torch.randn_like(ref())
    cands = {"eager": _step(ref, grads, up)}
    if compile_ref:
        cands["compile"] = _step(torch.compile(ref), grads, up)
    cands["python"] = _step(ours, grads, up, "python")
    cands["cpp"] = _step(ours, grads, up, "cpp")
    slow = name in ("cross_entropy", "linear+gelu")
    t = interleaved_median(cands, reps=reps, warmup=2 if slow else 3)
    torch_bp.set_backend("cpp")
    row = {"op": name, "size": size, "upstream": upstream_mode}
    row.update({f"{k}_ms": v * 1e3 for k, v in t.items()})
    for k in t:
        if k != "cpp":
            row[f"vs_{k}"] = t[k] / t["cpp"]
    return row


def saved(name, make):
    torch.manual_seed(0)
    ref, ours, grads = make()
    out = {"op": name, "torch_bytes": saved_bytes(ref, grads)}
    for b in ("python", "cpp"):
        torch_bp.set_backend(b)
        out[f"{b}_bytes"] = saved_bytes(ours, grads)
    torch_bp.set_backend("cpp")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--only", default="", help="comma-separated op names")
    p.add_argument("--upstream", choices=("sum", "grad", "both"), default="both")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile reference")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "bench_compiled.json"))
    a = p.parse_args(argv)
    info = torch_bp.set_backend("cpp")  # raises, saying why, when the compiled backend is unavailable
    print(info)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}\n")
    only = [s for s in a.only.split(",") if s]
    todo = {k: v for k, v in cases().items() if not only or k in only}
    modes = ("sum", "grad") if a.upstream == "both" else (a.upstream,)
    rows = []
    for mode in modes:
        for name, (size, make) in todo.items():
            t0 = time.time()
            rows.append(bench(name, size, make, mode, a.reps, not a.no_compile))
            print(f"  {name} ({mode}): {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    cols = [("op", "op"), ("size", "size"), ("upstream", "grad_y"), ("eager_ms", "eager ms"),
            ("compile_ms", "compile ms"), ("python_ms", "python ms"), ("cpp_ms", "cpp ms"),
            ("vs_eager", "cpp vs eager"), ("vs_compile", "cpp vs compile"), ("vs_python", "cpp vs python")]
    print("forward+backward, ratios t(other) / t(cpp): > 1 means the compiled backend is faster")
    print(format_table(rows, cols))
    mem = [saved(name, make) for name, (size, make) in todo.items()]
    for m in mem:
        m["cpp_vs_torch"] = m["cpp_bytes"] / m["torch_bytes"] if m["torch_bytes"] else None
        m["cpp_vs_python"] = m["cpp_bytes"] / m["python_bytes"] if m["python_bytes"] else None
    print("\nbytes saved for backward (inputs excluded)")
    print(format_table(mem, [("op", "op"), ("torch_bytes", "torch eager"), ("python_bytes", "python rule"),
                             ("cpp_bytes", "cpp"), ("cpp_vs_torch", "cpp / torch"), ("cpp_vs_python", "cpp / python")]))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "times": rows, "saved": mem}, f,
                  indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
