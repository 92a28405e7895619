"""Per-sample gradients: torch_bp's rules against torch.func.vmap(grad), BackPACK, Opacus and a loop.

    python -m experiments.bench_per_sample [--device cpu|cuda] [--reps 15] [--models mlp cnn transformer]

For each model (written in torch.nn, converted with torch_bp.convert), every candidate runs
one training step's forward + backward producing per-example gradients of a mean
cross-entropy; all candidates run interleaved in one process (experiments/benchmarks/
measure.py) and each time is divided by the median of one ordinary torch forward + backward.

- ``torch_bp grads``: ``with per_sample_grads(model):`` each step; the previous step's
  ``grad_sample`` tensors, which nothing refers to any more, are written over;
- ``torch_bp grads (kept)``: the same while the caller holds on to every step's results,
  so that the B x P per-example numbers are allocated afresh each step, as every
  alternative here does;
- ``torch_bp ghost norms``: mode "norms" (per-example norms, no per-example gradient);
- ``vmap``: torch.func.vmap(torch.func.grad(loss)) over the examples;
- ``BackPACK``: backpack.extend + BatchGrad; ``Opacus``: GradSampleModule (hooks);
- ``loop``: one autograd.grad per example.

The write bound: writing B x P float32 numbers (P = parameters), measured as a ``fill_``
into preallocated memory ("write") and into fresh memory ("write fresh": on CPU large
allocations are new pages, so a fresh write also pays page faults); a step materialising
per-example gradients costs at least an ordinary backward plus that write ("x bound").
Memory: peak bytes allocated above the level before the step (CUDA allocator statistics;
on CPU torch's profiler allocation events).

Writes experiments/results/per_sample_<device>.json beside the printed tables. BackPACK and
Opacus are optional (``pip install backpack-for-pytorch opacus``, never project dependencies):
a candidate that cannot be imported or does not support a model is skipped with the reason.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

import torch_bp
from torch_bp.per_sample import per_sample_grads

from .benchmarks.measure import format_table, interleaved_median, spread

F = nn.functional


# --- models ---
def mlp():
    """MLP 256-512-512-10 (ReLU), batch 64."""
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    return model, torch.randn(64, 256), torch.randint(0, 10, (64,))


def cnn():
    """Small CNN on 3x32x32, batch 32: two conv(3x3)-ReLU-maxpool blocks and a linear head."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
    return model, torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))


class _Block(nn.Module):
    """Pre-LN encoder block (d=128, 4 heads, MLP 512, GELU, no dropout) + a mean-pooled linear head."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(128, 4, dim_feedforward=512, dropout=0.0, activation="gelu",
                                                batch_first=True, norm_first=True)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


def transformer():
    """Transformer block, batch 16, T=32, d=128."""
    return _Block(), torch.randn(16, 32, 128), torch.randint(0, 10, (16,))


MODELS = {"mlp": mlp, "cnn": cnn, "transformer": transformer}


@contextlib.contextmanager
def _quiet():
    """Silence what the profiler's C++ side prints on the process's stdout/stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def timed(cands, reps, device, clock_name="wall"):
    """Median, minimum and interquartile range (seconds) per step of each candidate, interleaved by
    measure.interleaved_median.

    NOTE: each turn of a candidate runs it twice and times the second run, as in a training loop
    where a step follows a step of the same model: otherwise whichever candidate follows one that
    writes 100 MB starts with its model evicted from the caches. On a machine shared with other
    jobs, ``clock_name="cpu"`` (the CPU time of this process, page faults included) and the
    minimum are the steadier estimates of a candidate's cost: they leave out the time other
    jobs hold the cores.
    """
    now = time.process_time if clock_name == "cpu" else time.perf_counter
    seen = {k: [] for k in cands}

    def clock(k, fn):
        def call():
            fn()
            _sync(device)
            t0 = now()
            fn()
            _sync(device)
            seen[k].append(now() - t0)
        return call

    interleaved_median({k: clock(k, fn) for k, fn in cands.items()}, reps=reps, warmup=1, device=device)
    return ({k: statistics.median(v[1:]) for k, v in seen.items()}, {k: min(v[1:]) for k, v in seen.items()},
            {k: spread(v[1:])["iqr"] for k, v in seen.items()})


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --- memory ---
def peak_extra_bytes(fn, device) -> int:
    """Peak bytes allocated by ``fn()`` above what was allocated before it (what a step needs on top of
    the model and data): CUDA's allocator statistics, or on CPU the allocation and free events of
    torch's profiler (``profile_memory``) summed in time order."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with _quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cur = best = 0
    for _, b in sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage):
        cur += b
        best = max(best, cur)
    return best


# --- candidates ---
def _zero(params):
    for p in params:
        p.grad = None
        for a in ("grad_sample", "grad_batch"):
            if hasattr(p, a):
                setattr(p, a, None)


def build(name, device):
    """The candidates: each runs one step and returns (per-example gradients, factor to the gradients of
    the examples' own losses), or None; the timing drops what they return."""
    torch.manual_seed(0)
    model, x, y = MODELS[name]()
    model, x, y = model.to(device), x.to(device), y.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    batch = x.shape[0]
    names = [n for n, _ in model.named_parameters()]
    cands, skipped = {}, {}

    def ordinary(m=model):
        F.cross_entropy(m(x), y).backward()
        _zero(m.parameters())

    cands["torch backward"] = ordinary

    ours = torch_bp.convert(copy.deepcopy(model))   # one copy per candidate: each keeps its own grad_sample
    ours_plain, ours_kept, ours_norms_model = (copy.deepcopy(ours) for _ in range(3))
    cands["torch_bp backward"] = lambda: ordinary(ours_plain)

    def ours_grads(m=ours):
        with per_sample_grads(m):
            F.cross_entropy(m(x), y).backward()
        for p in m.parameters():
            p.grad = None
        return {n: p.grad_sample for n, p in m.named_parameters()}, batch

    kept = [None]

    def ours_grads_kept():   # the caller holds each step's result: every step allocates afresh
        kept[0] = ours_grads(ours_kept)
        return kept[0]

    def ours_norms(m=ours_norms_model):
        with per_sample_grads(m, mode="norms"):
            F.cross_entropy(m(x), y).backward()
        for p in m.parameters():
            p.grad = None

    missing = _missing(ours, x, y)
    if missing:
        skipped["torch_bp"] = f"no per-sample rule for {missing} ({torch_bp.conversion_report(ours)})"
    else:
        cands["torch_bp grads"] = ours_grads
        cands["torch_bp grads (kept)"] = ours_grads_kept
        cands["torch_bp ghost norms"] = ours_norms

    vm_model = copy.deepcopy(model)
    vparams = {n: p.detach() for n, p in vm_model.named_parameters()}

    def vm_loss(p, xb, yb):
        return F.cross_entropy(torch.func.functional_call(vm_model, p, (xb.unsqueeze(0),)), yb.unsqueeze(0))

    vm_fn = torch.func.vmap(torch.func.grad(vm_loss), in_dims=(None, 0, 0))
    cands["vmap"] = lambda: (vm_fn(vparams, x, y), 1)

    try:
        from backpack import backpack, extend
        from backpack.extensions import BatchGrad
        bp_model = extend(copy.deepcopy(model))
        bp_loss = extend(nn.CrossEntropyLoss())

        def backpack_grads():
            with backpack(BatchGrad()):
                bp_loss(bp_model(x), y).backward()
            out = {n: p.grad_batch for n, p in bp_model.named_parameters()
                   if getattr(p, "grad_batch", None) is not None}
            _zero(bp_model.parameters())
            return out, batch

        got = backpack_grads()[0]   # a model BackPACK cannot handle fails here, not in the timing
        if len(got) < len(names):
            lacking = [n for n in names if n not in got]
            raise NotImplementedError(f"no BatchGrad for {', '.join(lacking[:3])}{' ...' if len(lacking) > 3 else ''}")
        cands["BackPACK"] = backpack_grads
    except Exception as e:  # not installed, or a layer it does not support
        skipped["BackPACK"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"

    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from opacus import GradSampleModule
            from opacus.validators import ModuleValidator
            op_model = ModuleValidator.fix(copy.deepcopy(model))   # e.g. MultiheadAttention -> DPMultiheadAttention
            gsm = GradSampleModule(op_model, loss_reduction="mean")

        def opacus_grads():
            F.cross_entropy(gsm(x), y).backward()
            out = {n: p.grad_sample for n, p in op_model.named_parameters()}
            _zero(gsm.parameters())
            return out, 1

        opacus_grads()
        cands["Opacus"] = opacus_grads
    except Exception as e:
        skipped["Opacus"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"

    loop_model = copy.deepcopy(model)
    lparams = list(loop_model.parameters())

    def loop_grads():
        per = [torch.autograd.grad(F.cross_entropy(loop_model(x[b:b + 1]), y[b:b + 1]), lparams)
               for b in range(batch)]
        return {n: torch.stack([g[i] for g in per]) for i, n in enumerate(names)}, 1

    cands["loop"] = loop_grads

    buf = torch.empty(batch * n_params, device=device)
    cands["write"] = lambda: buf.fill_(1.0)
    cands["write fresh"] = lambda: torch.empty(batch * n_params, device=device).fill_(1.0)
    return cands, skipped, dict(batch=batch, params=n_params, write_numbers=batch * n_params)


def _missing(model, x, y):
    with per_sample_grads(model) as ps:
        F.cross_entropy(model(x), y).backward()
    missing = ps.missing()
    _zero(model.parameters())
    return missing


def _agreement(cands):
    """Max relative difference of each candidate's per-example gradient norms (of the examples' own
    losses; all parameters together, so that layers renamed by a library still compare) from vmap's,
    from one more call of each after the timing."""
    def norms(got):
        r, scale = got
        sq = [g.float().reshape(g.shape[0], -1).square().sum(1) for g in r.values()]
        return torch.stack(sq).sum(0).sqrt() * scale

    if "vmap" not in cands:
        return {}
    ref = norms(cands["vmap"]())
    out = {}
    for k, fn in cands.items():
        got = fn() if k != "vmap" and not k.startswith("write") else None
        if got is not None:
            out[k] = ((norms(got) - ref).abs().max() / ref.abs().max()).item()
    return out


def run(name, device, reps, stat="min", clock_name="wall"):
    cands, skipped, info = build(name, device)
    medians, minima, iqrs = timed(cands, reps, device, clock_name)
    agree = _agreement(cands)
    mem = {k: peak_extra_bytes(fn, device) for k, fn in cands.items()}
    times = minima if stat == "min" else medians
    base = times["torch backward"]
    alts = [times[k] for k in ("vmap", "BackPACK", "Opacus", "loop") if k in times]
    fastest_alt = min(alts) / base
    write = times["write"]
    bound = base + write   # the cheapest step that materialises them: a backward plus writing B x P numbers
    rows = []
    for k, t in times.items():
        rows.append({"candidate": k, "ms": t * 1e3, "median_ms": medians[k] * 1e3, "iqr_ms": iqrs[k] * 1e3,
                     "x_backward": t / base,
                     "x_ours": t / times["torch_bp backward"],
                     "x_write": t / write, "x_bound": t / bound, "peak_mb": mem[k] / 2 ** 20,
                     "max_rel_diff": agree.get(k)})
    target_grads = max(0.5 * fastest_alt, 1.3)
    summary = dict(info, model=name, stat=stat, fastest_alternative_x=fastest_alt, target_grads_x=target_grads,
                   target_bound_x=1.5, target_norms_x=1.3, skipped=skipped)
    for key in ("torch_bp grads", "torch_bp grads (kept)"):
        if key in times:
            summary[f"{key} met"] = {"vs alternatives": times[key] / base <= target_grads,
                                     "vs write bound": times[key] / bound <= 1.5}
    if "torch_bp ghost norms" in times:
        summary["ghost norms met"] = times["torch_bp ghost norms"] / base <= 1.3
    return rows, summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--stat", choices=["min", "median"], default="min",
                   help="which statistic of the interleaved repetitions the ratios use (both are in the JSON)")
    p.add_argument("--clock", choices=["cpu", "wall"], default=None,
                   help="cpu: this process's CPU time (default on CPU: steady on a shared machine); wall: elapsed")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    machine = {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(),
               "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"}
    clock_name = a.clock or ("wall" if a.device.startswith("cuda") else "cpu")
    out = {"machine": machine, "threads": torch.get_num_threads(), "reps": a.reps, "stat": a.stat,
           "clock": clock_name, "spread": "iqr_ms: interquartile range of the repetitions", "models": {}}
    for name in a.models:
        rows, summary = run(name, a.device, a.reps, a.stat, clock_name)
        out["models"][name] = {"rows": rows, "summary": summary}
    print(report(out))
    path = a.out or os.path.join(os.path.dirname(__file__), "results", f"per_sample_{a.device.split(':')[0]}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nwrote {path}")


def report(out) -> str:
    """The tables a person reads, from the JSON."""
    lines = [f"# per-sample gradients, {out['machine']}, {out['reps']} interleaved repetitions",
             f"# ms: {out.get('clock', 'wall')} time, {out['stat']} of the repetitions (median ms: the median). Ratios: x backward = / 'torch"
             " backward' (one ordinary forward + backward in torch); x torch_bp bwd = / 'torch_bp backward' (the"
             " same with our rules); x write = / 'write' (writing B x P float32 numbers); x bound = / (torch"
             " backward + write), the cheapest step that materialises per-example gradients. peak MB: memory"
             " allocated above the level before the step. max rel diff: per-example gradient norms vs vmap's."]
    cols = [("candidate", "candidate"), ("ms", "ms"), ("median_ms", "median ms"), ("x_backward", "x backward"),
            ("x_ours", "x torch_bp bwd"), ("x_write", "x write"), ("x_bound", "x bound"), ("peak_mb", "peak MB"),
            ("max_rel_diff", "max rel diff")]
    for name, m in out["models"].items():
        sm = m["summary"]
        lines += ["", f"## {name}: {MODELS[name].__doc__.strip()}  P={sm['params']:,} parameters, "
                      f"write bound B x P = {sm['write_numbers']:,} numbers", format_table(m["rows"], cols)]
        lines.append(f"  targets: grads <= max(0.5 x fastest alternative = {0.5 * sm['fastest_alternative_x']:.3g},"
                     f" 1.3) = {sm['target_grads_x']:.3g} x backward and <= 1.5 x bound; ghost norms <= 1.3 x backward")
        for k, v in sm.items():
            if "met" in k or (k == "skipped" and v):
                lines.append(f"  {k}: {v}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
