"""The distribution of single-call times, not just their median: torch eager against the compiled
backend, call after call, with the page faults each call takes.

    python -m experiments.benchmarks.stability [--calls 200] [--only layer_norm relu] [--out PATH]

Per layer (the suite's sizes, experiments/benchmarks/layers.py) and per output-allocation
setting of the compiled kernels, one fresh subprocess (so that no setting inherits another's
cached or faulted-in memory) times forward + backward of ``out.sum()`` ``calls`` times,
eager and ours interleaved, and records per call the wall time, the process's minor page faults
(``getrusage``) and the kernel's system-wide transparent-huge-page and compaction counters
(``/proc/vmstat``: a huge page that had to be compacted for, or that fell back to small pages).
It prints p10 / p50 / p90 / max per candidate and writes everything, per-call values included,
to ``experiments/results/stability_cpu.json``.

Settings (environment of the subprocess; csrc/common.h):
- ``cache``: the default: outputs of 4-64 MiB come from torch_bp's output cache, blocks advised to
  use huge pages, faulted in once and reused after the tensor using them is freed;
- ``fresh-thp``: ``TORCH_BP_OUTPUT_CACHE_MB=0``: a fresh allocation per output (torch's CPU
  allocator, i.e. a new ``mmap`` for such sizes), advised to use huge pages;
- ``fresh``: ``TORCH_BP_OUTPUT_CACHE_MB=0 TORCH_BP_HUGEPAGES=0``: a fresh allocation per output,
  faulted in 4 KiB at a time, as torch eager's own outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SETTINGS = {
    "cache": {},
    "fresh-thp": {"TORCH_BP_OUTPUT_CACHE_MB": "0"},
    "fresh": {"TORCH_BP_OUTPUT_CACHE_MB": "0", "TORCH_BP_HUGEPAGES": "0"},
}
VMSTAT = ("thp_fault_alloc", "thp_fault_fallback", "compact_stall", "compact_fail")


def _vmstat() -> dict:
    out = dict.fromkeys(VMSTAT, 0)
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                k, v = line.split()
                if k in out:
                    out[k] = int(v)
    except OSError:
        pass
    return out


def _child(layer: str, calls: int, warmup: int) -> dict:
    """Run in the subprocess: per-call times and counters of eager and cpp, interleaved."""
    import torch

    import torch_bp

    from .layers import SIZES
    from .measure import fwd_bwd
    torch.set_num_threads(os.cpu_count() or 1)
    row = torch_bp.registry.get(layer)
    torch.manual_seed(0)
    args, kwargs = SIZES[layer]("cpu")
    grads = [t for t in args if isinstance(t, torch.Tensor) and t.requires_grad]
    torch_bp.set_backend("cpp")
    cands = {"eager": fwd_bwd(lambda: row.reference(*args, **kwargs), grads),
             "cpp": fwd_bwd(lambda: row.functional(*args, **kwargs), grads)}
    for fn in cands.values():
        for _ in range(warmup):
            fn()
    rec = {k: {"ms": [], "minflt": [], **{v: [] for v in VMSTAT}} for k in cands}
    for _ in range(calls):
        for name, fn in cands.items():
            f0, v0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, _vmstat()
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            f1, v1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, _vmstat()
            r = rec[name]
            r["ms"].append(1e3 * (t1 - t0))
            r["minflt"].append(f1 - f0)
            for v in VMSTAT:
                r[v].append(v1[v] - v0[v])
    return rec


def _pct(v: list, q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(per_call: dict) -> dict:
    ms = per_call["ms"]
    return {"p10_ms": _pct(ms, 0.1), "p50_ms": statistics.median(ms), "p90_ms": _pct(ms, 0.9), "max_ms": max(ms),
            "p90_over_p10": _pct(ms, 0.9) / _pct(ms, 0.1),
            "minflt_per_call": statistics.mean(per_call["minflt"]),
            **{f"{v}_per_call": statistics.mean(per_call[v]) for v in VMSTAT}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--only", nargs="*", default=["layer_norm"], help="layer names (the suite's sizes)")
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results", "stability_cpu.json"))
    p.add_argument("--child", nargs=3, metavar=("LAYER", "CALLS", "WARMUP"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        json.dump(_child(a.child[0], int(a.child[1]), int(a.child[2])), sys.stdout)
        return 0
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().strip()
        with open("/sys/kernel/mm/transparent_hugepage/defrag") as f:
            thp += "; defrag " + f.read().strip()
    except OSError:
        thp = "unavailable"
    import torch
    machine = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, THP {thp}"
    print(f"# single-call times of forward + backward, {a.calls} calls each, eager and ours interleaved; {machine}\n")
    rows, raw = [], {}
    for layer in a.only:
        for setting in a.settings:
            env = {**os.environ, **SETTINGS[setting]}
            res = subprocess.run([sys.executable, "-m", "experiments.benchmarks.stability", "--child", layer,
                                  str(a.calls), str(a.warmup)], env=env, capture_output=True, text=True,
                                 cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
            if res.returncode != 0:
                raise RuntimeError(f"{layer} {setting}: {res.stderr[-2000:]}")
            rec = json.loads(res.stdout)
            raw[f"{layer}/{setting}"] = rec
            for name, per_call in rec.items():
                rows.append({"layer": layer, "setting": setting, "candidate": name, **summary(per_call)})
    cols = ["p10_ms", "p50_ms", "p90_ms", "max_ms", "p90_over_p10", "minflt_per_call", "thp_fault_alloc_per_call",
            "thp_fault_fallback_per_call", "compact_stall_per_call"]
    head = ["layer", "setting", "candidate"] + cols
    print(" | ".join(head))
    print("|".join("---" for _ in head))
    for r in rows:
        print(" | ".join([r["layer"], r["setting"], r["candidate"]] + [f"{r[c]:.3g}" for c in cols]))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"machine": machine, "calls": a.calls, "settings": SETTINGS, "rows": rows, "per_call": raw}, f)
    print(f"\nwrote {os.path.normpath(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
