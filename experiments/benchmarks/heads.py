"""The language-model head: linear + cross-entropy, torch eager vs torch_bp's chunked rule.

``python -m experiments.benchmarks.heads [--n 4096] [--vocab 32000] [--d 1024] [--reps 5]``
(also run by the suite, ``python -m experiments.benchmarks``).

Candidates (float32, forward + backward of the mean loss, gradients of x, W and b):
- ``eager``: ``F.cross_entropy(F.linear(x, W, b), y)``, the (N, V) logits materialised;
- ``fused``: ``torch_bp.functional.linear_cross_entropy(..., mode="fused")`` (gradients formed
  chunk by chunk in the forward, saved grad-sized);
- ``recompute``: ``mode="recompute"`` (O(N) saved, each chunk's logits recomputed in backward).

Columns: time relative to eager (interleaved medians of wall-clock time, as measure.py, and of
the process's CPU time, which a box shared with other jobs disturbs less); bytes saved for backward
(measure.saved_bytes, x, W, b and y excluded); and peak bytes of one forward + backward.

Peak bytes, CPU: each candidate runs once in a fresh subprocess (``--peak-child``), where
glibc is told to serve every allocation of 64 KiB or more by mmap (MALLOC_MMAP_THRESHOLD_,
a fixed threshold, so that freed blocks go back to the system at once and the resident set
follows the live tensors). The child builds the inputs, runs a tiny warm-up of the same call
(libraries, thread pools), reads its resident set (VmRSS) as the baseline and resets the
kernel's high-water mark (``echo 5 > /proc/self/clear_refs``); the peak is VmHWM after one
forward + backward minus the baseline, i.e. the most memory resident at once beyond the
inputs: activations, saved tensors, temporaries, and the gradients themselves (W.grad is
(V, d) for every candidate). Page-granular and including the allocator's slack, but the same
for all candidates. (Without /proc/self/clear_refs: the growth of ``ru_maxrss``, which
misses growth below an earlier high-water mark.) CUDA: ``torch.cuda.max_memory_allocated`` over the same call, minus the
memory allocated before it (measure.peak_cuda_bytes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as TF

import torch_bp.functional as F

from .measure import format_table, fwd_bwd, saved_bytes, spread

CANDIDATES = ("eager", "fused", "recompute")


def make_inputs(n, vocab, d, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, d, generator=g, device=device, dtype=dtype).requires_grad_()
    w = (torch.randn(vocab, d, generator=g, device=device, dtype=dtype) / d ** 0.5).requires_grad_()
    b = torch.zeros(vocab, device=device, dtype=dtype).requires_grad_()
    y = torch.randint(0, vocab, (n,), generator=g, device=device)
    return x, w, b, y


def call(name, x, w, b, y):
    if name == "eager":
        return TF.cross_entropy(TF.linear(x, w, b), y)
    return F.linear_cross_entropy(x, w, y, linear_bias=b, mode=name)


def _status_kib(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])


def _peak_child(name, n, vocab, d, device):
    """Run in a fresh process: print the peak bytes of one forward + backward of ``name``."""
    torch.set_num_threads(os.cpu_count() or 1)
    small = make_inputs(64, 256, 32, device)
    fwd_bwd(lambda: call(name, *small), small[:3])()  # warm-up: kernels, thread pool
    x, w, b, y = make_inputs(n, vocab, d, device)
    step = fwd_bwd(lambda: call(name, x, w, b, y))  # keeps x.grad, W.grad, b.grad: counted
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        try:
            base = _status_kib("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident set
            step()
            peak = (_status_kib("VmHWM") - base) * 1024
        except OSError:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            step()
            peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024  # KiB on Linux
    print(json.dumps({"peak_bytes": peak}))


def peak_bytes(name, n, vocab, d, device="cpu"):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-m", "experiments.benchmarks.heads", "--peak-child", name,
                          "--n", str(n), "--vocab", str(vocab), "--d", str(d), "--device", device],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def interleaved_wall_and_cpu(candidates, reps, warmup=1, device="cpu"):
    """``measure.spread`` of wall-clock and of process CPU seconds per call, candidates timed
    A/B/C/A/B/C as measure.interleaved_times. Both clocks read the same call, which one
    torch.utils.benchmark.Timer (one clock per call) cannot do, so the clocks are read here."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    wall, cpu = {k: [] for k in candidates}, {k: [] for k in candidates}
    for _ in range(reps):
        for name, fn in candidates.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: spread(v) for k, v in wall.items()}, {k: spread(v) for k, v in cpu.items()}


def bench_heads(device="cpu", reps=5, n=4096, vocab=32000, d=1024, peak=True):
    torch.manual_seed(0)
    x, w, b, y = make_inputs(n, vocab, d, device)
    params = (x, w, b)
    cands = {name: fwd_bwd(lambda name=name: call(name, x, w, b, y), params) for name in CANDIDATES}
    ts, cs = interleaved_wall_and_cpu(cands, reps, device=device)
    t, c = {k: v["median"] for k, v in ts.items()}, {k: v["median"] for k, v in cs.items()}
    saved = {name: saved_bytes(lambda name=name: call(name, x, w, b, y), (x, w, b, y)) for name in CANDIDATES}
    peaks = {name: peak_bytes(name, n, vocab, d, device) for name in CANDIDATES} if peak else {}
    rows = []
    for name in CANDIDATES:
        rows.append({
            "head": f"N={n} V={vocab} d={d}", "candidate": name, "ms": 1e3 * t[name],
            "iqr_ms": 1e3 * ts[name]["iqr"], "cpu_ms": 1e3 * c[name], "cpu_iqr_ms": 1e3 * cs[name]["iqr"],
            "threads": torch.get_num_threads(),
            "time_vs_eager": t[name] / t["eager"], "cpu_time_vs_eager": c[name] / c["eager"],
            "saved_MB": saved[name] / 2**20, "saved_vs_eager": saved[name] / saved["eager"],
            "peak_MB": peaks[name] / 2**20 if peak else None,
            "peak_vs_eager": peaks[name] / peaks["eager"] if peak else None,
        })
    return rows


COLUMNS = [("head", "head (float32)"), ("candidate", "candidate"), ("ms", "ms"), ("iqr_ms", "iqr ms"),
           ("time_vs_eager", "x eager"),
           ("cpu_time_vs_eager", "cpu time x eager"), ("saved_MB", "saved MB"), ("saved_vs_eager", "saved x eager"), ("peak_MB", "peak MB"),
           ("peak_vs_eager", "peak x eager")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096, help="tokens (rows)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--d", type=int, default=1024, help="hidden size (in_features)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--no-peak", action="store_true")
    p.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="JSON path (default experiments/results/heads_<device>.json)")
    a = p.parse_args(argv)
    if a.peak_child:
        return _peak_child(a.peak_child, a.n, a.vocab, a.d, a.device)
    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    rows = bench_heads(a.device, a.reps, a.n, a.vocab, a.d, peak=not a.no_peak)
    print(f"# linear + cross-entropy head, {a.device}, float32, {torch.get_num_threads()} threads, "
          f"medians of {a.reps} interleaved reps\n")
    print(format_table(rows, COLUMNS))
    out = a.out or os.path.join(os.path.dirname(__file__), "..", "results", f"heads_{a.device}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"reps": a.reps, "threads": torch.get_num_threads(),
                   "spread": "iqr_ms / cpu_iqr_ms: interquartile range of the repetitions", "rows": rows}, f, indent=1)
    print(f"\nwrote {os.path.normpath(out)}")


if __name__ == "__main__":
    sys.exit(main())
