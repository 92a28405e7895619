"""Probes behind the README's explanations of missed time targets (not part of the suite).

    python -m experiments.benchmarks.probes conv   # conv weight gradient: swapped conv vs compiled im2col vs torch;
                                                   # conv_transpose2d's: also its stride phases, and one matmul of its size
    python -m experiments.benchmarks.probes lstm   # the lstm layer with torch's oneDNN LSTM on and off; one step's
                                                   # recurrent matmul: addmm vs packed weights
    python -m experiments.benchmarks.probes recurrent  # the suite's lstm, gru, rnn_tanh, rnn_relu layers, one
                                                   # thread's CPU time: torch eager, the compiled loops, the
                                                   # Python per-step loop (docs/recurrent-kernels.md);
                                                   # writes experiments/results/recurrent_cpu.json
    python -m experiments.benchmarks.probes apply  # the cost of torch's Function.apply (argument binding) per
                                                   # call, against the C++ apply it wraps, on a small layer and
                                                   # on the suite's MLP step
    python -m experiments.benchmarks.probes mlp    # the suite's MLP at one thread: forward and backward apart,
                                                   # the fixed cost per step at batch 2, one layer's ops alone
    python -m experiments.benchmarks.probes per_sample  # torch.profiler self time per op of the per-sample
                                                   # benchmark's Transformer block (docs/per-sample.md)

Interleaved medians in one process, float32, CPU, gradient mode off (as in a backward).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import torch_bp
import torch_bp.functional
from torch_bp import backend
from torch_bp.ops import conv as C

from .measure import interleaved_median


def _median_ms(fns: dict, reps: int = 15) -> dict:
    return {k: round(v * 1e3, 2) for k, v in interleaved_median(fns, reps=reps).items()}


def _swapped(x, gy, k, s, p):
    before = backend.backend_info().requested
    backend.set_backend("python")  # the Python rule: the swapped convolution for stride > 1
    try:
        return C._weight_grad(x, gy, k, (s, s), (p, p), (1, 1), 1)
    finally:
        backend.set_backend(before)


def _phases(gy, x, k, s, p):
    """The weight gradient of ``y = conv_transpose2d(x, w, stride s, padding p)`` (k divisible by s)
    split into its s*s stride phases: grad_y's positions ``s t + a - p`` become channel block a of
    a stride-1 input (space to depth, one copy), whose stride-1 weight gradient against x with a
    (k/s)-tap kernel is the compiled ``conv_weight_grad``; the taps are put back in place after."""
    n, co, hy = gy.shape[:3]
    ci, m = x.shape[1], k // s
    t = x.shape[2] + m - 1
    gp = F.pad(gy, (p, s * t - p - hy, p, s * t - p - hy))
    gs = gp.view(n, co, t, s, t, s).permute(0, 1, 3, 5, 2, 4).reshape(n, co * s * s, t, t)
    ws = torch.ops.torch_bp.conv_weight_grad(gs, x, [m, m], [1, 1], [0, 0], [1, 1], 1)  # (Ci, Co*s*s, m, m)
    return ws.view(ci, co, s, s, m, m).permute(0, 1, 4, 2, 5, 3).reshape(ci, co, k, k)


def conv():
    if backend.backend_info().backend != "cpp":
        sys.exit("the compiled kernels did not build here")
    cases = [("conv k1 s2 64->128", (32, 64, 32, 32), (128, 64, 1, 1), 2, 0),
             ("conv k3 s2 64->128", (32, 64, 32, 32), (128, 64, 3, 3), 2, 1),
             ("conv k4 s2 32->64 (the benchmark's conv_transpose2d)", (32, 32, 32, 32), (64, 32, 4, 4), 2, 1)]
    for name, xs, ws, s, p in cases:
        x, w = torch.randn(xs), torch.randn(ws)
        gy, k = torch.randn_like(F.conv2d(x, w, None, s, p)), ws[2:]
        print(name, _median_ms({
            "swapped": lambda: _swapped(x, gy, k, s, p),
            "cpp": lambda: torch.ops.torch_bp.conv_weight_grad(x, gy, list(k), [s, s], [p, p], [1, 1], 1),
            "torch": lambda: torch.ops.aten.convolution_backward(gy, x, w, None, [s, s], [p, p], [1, 1], False,
                                                                 [0, 0], 1, [False, True, False]),
        }))
    # the suite's conv_transpose2d (x: (32, 64, 16, 16), w: (64, 32, 4, 4), stride 2, padding 1): its weight
    # gradient is the conv weight gradient above with grad_y as the conv's input and x as its output gradient
    x, w = torch.randn(32, 64, 16, 16), torch.randn(64, 32, 4, 4)
    gy = torch.randn_like(F.conv_transpose2d(x, w, None, 2, 1))
    want = torch.ops.aten.convolution_backward(gy, x, w, None, [2, 2], [1, 1], [1, 1], True, [0, 0], 1,
                                               [False, True, False])[1]
    a, b = torch.randn(64, 8192), torch.randn(8192, 512)  # (Ci, N*H*W) @ (N*H*W, Co*k*k): the same multiply-adds
    err = ((_phases(gy, x, 4, 2, 1) - want).abs().max() / want.abs().max()).item()
    print(f"conv_transpose2d k4 s2 64->32 weight gradient (stride phases agree to {err:.1e})", _median_ms({
        "cpp": lambda: torch.ops.torch_bp.conv_weight_grad(gy, x, [4, 4], [2, 2], [1, 1], [1, 1], 1),
        "phases+cpp": lambda: _phases(gy, x, 4, 2, 1),
        "torch (transposed)": lambda: torch.ops.aten.convolution_backward(gy, x, w, None, [2, 2], [1, 1], [1, 1],
                                                                          True, [0, 0], 1, [False, True, False]),
        "matmul alone": lambda: torch.mm(a, b),
    }))


def _lstm_layer():
    """The suite's ``lstm`` layer, forward + backward: torch with and without oneDNN's fused LSTM, and ours."""
    from .layers import SIZES, Dims
    from .measure import fwd_bwd

    args, kwargs = SIZES["lstm"](Dims("cpu"))
    leaves = [t for t in (args[0], *args[2]) if t.requires_grad]
    fns = {}
    for name, f in (("torch", torch.lstm), ("torch_bp", torch_bp.functional.lstm)):
        fns[name] = fwd_bwd(lambda f=f: f(*args, **kwargs), leaves)
    with torch.enable_grad():
        res = _median_ms(fns, reps=9)
        with torch.backends.mkldnn.flags(enabled=False):
            res["torch, oneDNN off"] = _median_ms({"t": fns["torch"]}, reps=9)["t"]
    print("lstm layer forward + backward, ms:", res)


def lstm():
    _lstm_layer()
    B, H = 32, 256  # the benchmark's lstm: batch 32, hidden 256, gates 4H
    x, w, b = torch.randn(B, H), torch.randn(4 * H, H), torch.randn(B, 4 * H)
    out, wt = torch.empty(B, 4 * H), w.t()
    fns = {"addmm": lambda: torch.addmm(b, x, wt, out=out)}
    if torch.backends.mkl.is_available():
        pw = torch.ops.mkl._mkl_reorder_linear_weight(w, B)
        fns["mkl packed"] = lambda: torch.ops.mkl._mkl_linear(x, pw, w, None, B)
    if torch.backends.mkldnn.is_available():
        wm = torch.ops.mkldnn._reorder_linear_weight(w, B)
        fns["onednn packed"] = lambda: torch.ops.mkldnn._linear_pointwise(x, wm, None, "none", [], "")
    print("one step (32 x 256) @ (256 x 1024), ms:", _median_ms(fns, reps=640))


def _thread_times(fns: dict, reps: int) -> dict:
    """Seconds of this thread's CPU time (``time.thread_time``: waiting for a core does not count) of every
    repetition of each candidate, A/B/C interleaved after one warm-up call each; meant for one thread."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.thread_time()
            fn()
            times[k].append(time.thread_time() - t0)
    return times


def recurrent(reps: int = 15):
    """The suite's recurrent layers (batch 32, 64 steps, 128 -> 256, one layer, batch first), forward +
    backward and forward alone, at one thread: torch eager, torch_bp's compiled loops (csrc/cpu/recurrent.cpp)
    and its Python per-step loop, each repetition's CPU time of this thread, interleaved. The weights are
    scaled to std H^-1/2 (as a trained layer's): N(0, 1) weights over 64 steps saturate tanh and overflow relu
    to inf, whose arithmetic is not what a real layer runs. Median and interquartile range per candidate."""
    from .layers import SIZES, Dims
    from .measure import fwd_bwd, spread

    if backend.backend_info().backend != "cpp":
        sys.exit("the compiled kernels did not build here")
    torch.set_num_threads(1)
    before = backend.backend_info().requested
    ours = {"lstm": torch_bp.functional.lstm, "lstm proj_size 128": torch_bp.functional.lstm,
            "gru": torch_bp.functional.gru, "rnn_tanh": torch_bp.functional.rnn_tanh,
            "rnn_relu": torch_bp.functional.rnn_relu}
    theirs = {"lstm": torch.lstm, "lstm proj_size 128": torch.lstm, "gru": torch.gru, "rnn_tanh": torch.rnn_tanh,
              "rnn_relu": torch.rnn_relu}

    def on(name, f):
        def run():
            backend.set_backend(name)
            return f()
        return run

    results = []
    for kind in ours:
        torch.manual_seed(0)
        args, kwargs = SIZES[kind.split()[0]](Dims("cpu"))
        if kind == "lstm proj_size 128":  # h = W_hr h~ (128 of the 256 units): W_hh (4H, 128), h0 (1, B, 128)
            x, (h0, c0), (w_ih, w_hh, b_ih, b_hh), *rest = args
            w_hh = w_hh[:, :128].detach().clone().requires_grad_()
            w_hr = torch.randn(128, w_ih.shape[0] // 4, requires_grad=True)
            args = (x, (h0[..., :128].clone(), c0), [w_ih, w_hh, b_ih, b_hh, w_hr], *rest)
        with torch.no_grad():
            for w in args[2]:
                w.mul_(w.shape[1] ** -0.5 if w.dim() == 2 else 0.1)
        leaves = [t for t in (args[0], *args[2]) if t.requires_grad]
        call = {"torch": lambda f=theirs[kind]: f(*args, **kwargs),
                "torch_bp": on("cpp", lambda f=ours[kind]: f(*args, **kwargs)),
                "torch_bp python loop": on("python", lambda f=ours[kind]: f(*args, **kwargs))}
        for what, wrap in (("forward + backward", lambda c: fwd_bwd(c, leaves)), ("forward", lambda c: c)):
            with torch.set_grad_enabled(what != "forward"):
                times = _thread_times({k: wrap(c) for k, c in call.items()}, reps)
            base = statistics.median(times["torch"])
            for name, t in times.items():
                st = spread(t)
                results.append({"layer": kind, "what": what, "candidate": name, "median_ms": st["median"] * 1e3,
                                "q1_ms": st["q1"] * 1e3, "q3_ms": st["q3"] * 1e3, "x_torch": st["median"] / base,
                                "reps": reps})
                print(f"{kind:9s} {what:18s} {name:21s} median {st['median'] * 1e3:8.2f} ms  "
                      f"IQR {st['q1'] * 1e3:8.2f}-{st['q3'] * 1e3:8.2f}  x torch {st['median'] / base:5.2f}")
    backend.set_backend(before)
    out = Path(__file__).resolve().parents[1] / "results" / "recurrent_cpu.json"
    out.write_text(json.dumps({"threads": 1, "clock": "time.thread_time", "rows": results}, indent=1) + "\n")
    print("written", out)


def apply():
    """Every rule's ``apply`` is torch's ``Function.apply``, which binds the arguments to
    ``forward``'s signature on each call before the C++ apply. This measures what that binding
    costs: a small linear layer's forward + backward, and the suite's MLP training step, with torch's
    apply against a direct call of the C++ apply it wraps (``torch._C._FunctionBase.apply``: a
    private entry point, used here only to measure)."""
    from torch_bp.ops.linear import LinearFunction
    from .models import mlp

    torch.set_grad_enabled(True)
    cpp_apply = super(torch.autograd.Function, LinearFunction).apply  # torch._C._FunctionBase.apply

    def direct(*args):
        return cpp_apply(*args)
    x, w, b = torch.randn(8, 64, requires_grad=True), torch.randn(64, 64, requires_grad=True), torch.randn(64)

    def small(fn):
        return lambda: fn(x, w, b).sum().backward()
    print("linear 8 x 64 -> 64, forward + backward, ms:",
          _median_ms({"Function.apply": small(LinearFunction.apply), "C++ apply": small(direct)}, reps=400))

    ref, (x0,) = mlp()  # the suite's MLP: its linear layers' weights, through each apply
    layers = [m for m in ref.modules() if isinstance(m, torch.nn.Linear)]
    params = [(m.weight, m.bias) for m in layers]

    def step(apply_):
        def run():
            h = x0
            for i, (w_, b_) in enumerate(params):
                h = apply_(h, w_, b_)
                if i < len(params) - 1:
                    h = torch_bp.functional.gelu(h)
            h.sum().backward()
        return run
    print("suite's MLP step (its linear layers through each apply), ms:",
          _median_ms({"Function.apply": step(LinearFunction.apply), "C++ apply": step(direct)}, reps=15))


def mlp(reps: int = 15):
    """The suite's MLP (batch 256, 512 -> 4 x 1024 GELU -> 10), eager against convert's (fused), at one
    thread: the whole step; forward and backward apart; the forward at batch 2, where the GEMMs cost
    little and what remains is each layer's fixed cost per call; and one hidden layer's ops alone."""
    from .models import mlp as build

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ref, (x,) = build()
    ours = torch_bp.convert(ref)
    models = {"eager": ref, "torch_bp": ours}
    with torch.enable_grad():
        def step(m, inp):
            def run():
                m.zero_grad(set_to_none=True)
                m(inp).sum().backward()
            return run
        print("step (forward + backward), ms:", _median_ms({k: step(m, x) for k, m in models.items()}, reps))
        for k, m in models.items():
            fwd, bwd = [], []
            for _ in range(reps):
                m.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                y = m(x)
                t1 = time.perf_counter()
                y.sum().backward()
                fwd.append(t1 - t0)
                bwd.append(time.perf_counter() - t1)
            print(f"{k}: forward {statistics.median(fwd) * 1e3:.2f} ms, backward {statistics.median(bwd) * 1e3:.2f} ms")
        x2 = x[:2].clone()
        print("batch 2, forward with grad, ms:", _median_ms({k: (lambda m=m: m(x2)) for k, m in models.items()}, 200))
    print("batch 2, forward without grad, ms:", _median_ms({k: (lambda m=m: m(x2)) for k, m in models.items()}, 200))
    h, b, w = torch.randn(256, 1024), torch.randn(1024), torch.randn(1024, 1024)
    one = {"torch addmm": lambda: torch.addmm(b, h, w.t()), "torch mm": lambda: torch.mm(h, w.t()),
           "torch gelu": lambda: F.gelu(h), "torch gelu(h + b)": lambda: F.gelu(h + b)}
    if backend.backend_info().backend == "cpp":
        one["torch_bp bias_act_fwd"] = lambda: torch.ops.torch_bp.bias_act_fwd(h, b, "gelu", "none")
    print("one hidden layer's ops alone (256 x 1024 x 1024), ms:", _median_ms(one, 50))


def per_sample(steps: int = 20):
    """torch.profiler self CPU time per op (ms per step, mean of ``steps``) at one thread of the
    per-sample benchmark's Transformer block: one torch backward, ours, per-example gradients, ghost norms."""
    import collections

    from experiments.bench_per_sample import build

    torch.set_num_threads(1)
    with torch.enable_grad():
        cands, *_ = build("transformer", "cpu")
        for k in ("torch backward", "torch_bp backward", "torch_bp grads", "torch_bp ghost norms"):
            f = cands[k]
            for _ in range(3):
                f()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    f()
            tot = collections.Counter({e.key: e.self_cpu_time_total / steps / 1e3 for e in prof.key_averages()})
            print(f"{k}: self CPU time {sum(tot.values()):.2f} ms per step; " +
                  ", ".join(f"{op} {t:.2f}" for op, t in tot.most_common(10)))

if __name__ == "__main__":
    torch.set_grad_enabled(False)
    {"conv": conv, "lstm": lstm, "recurrent": recurrent, "apply": apply, "mlp": mlp,
     "per_sample": per_sample}[sys.argv[1] if len(sys.argv) > 1 else "conv"]()
