"""The benchmark suite: ``python -m experiments.benchmarks [--quick] [--device cpu|cuda]``.

``--saved-only`` measures the layers' saved bytes alone (no timing, a minute or so) and updates those
columns of the JSON, keeping the times of the last full run.

Per registry layer and per model: forward+backward time of torch_bp relative to torch
eager (interleaved medians in one process) and to ``torch.compile``, and bytes saved for
backward relative to torch eager. Prints tables and writes JSON beside them.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys

import torch

import torch_bp
from torch_bp.registry import LAYERS

from .heads import COLUMNS as HEAD_COLUMNS
from .heads import bench_heads
from .layers import SIZES, Dims
from .measure import format_table, fwd_bwd, interleaved_stats, peak_cuda_bytes, saved_bytes
from .models import MISSING, MODELS


def _tensors(args, kwargs):
    """The tensors among the arguments, looking inside lists and tuples (an RNN's params, hx)."""
    out = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += _tensors(a, {})
    return out


def _backends():
    """The torch_bp backends to measure: those that can run here."""
    info = getattr(torch_bp, "backend_info", None)
    if info is None or not hasattr(torch_bp, "set_backend"):
        return ["python"]
    names = ["python"]
    try:
        torch_bp.set_backend("cpp")
        names.append("cpp")
    except Exception:  # the compiled backend is unavailable: backend_info says why
        pass
    torch_bp.set_backend("auto")
    return names


def _cpu_model() -> str:
    """' (model name)' from /proc/cpuinfo where there is one, else ''."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f" ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return ""


def _set_backend(name):
    if hasattr(torch_bp, "set_backend"):
        torch_bp.set_backend(name)


def _spread_ms(st: dict, backend: str) -> dict:
    """The interquartile ranges (ms) beside the medians, and the thread count of the timing."""
    return {"eager_iqr_ms": 1e3 * st["eager"]["iqr"], "ours_iqr_ms": 1e3 * st[backend]["iqr"],
            "threads": st[backend]["threads"]}


def _layer_saved(row, args, kwargs, backends):
    """Saved bytes of torch's reference and of ours on each backend: {backend: (torch, ours)}."""
    excl = _tensors(args, kwargs)
    torch_saved = saved_bytes(lambda: row.reference(*args, **kwargs), excl)
    out = {}
    for b in backends:
        _set_backend(b)
        out[b] = (torch_saved, saved_bytes(lambda: row.functional(*args, **kwargs), excl))
    _set_backend("auto")
    return out


def _saved_fields(torch_saved, ours_saved):
    return {"saved_MB_torch": torch_saved / 2**20, "saved_MB_ours": ours_saved / 2**20,
            "saved_ratio": ours_saved / torch_saved if torch_saved else None}


def bench_layers(device, reps, compile_ref, only=None):
    rows = []
    backends = _backends()
    for row in LAYERS:
        if only and row.name not in only:
            continue
        if row.name not in SIZES:
            rows.append({"layer": row.name, "note": "no size"})
            continue
        torch.manual_seed(0)
        args, kwargs = SIZES[row.name](Dims(device))
        grads = [t for t in _tensors(args, kwargs) if t.requires_grad]
        cands = {"eager": fwd_bwd(lambda: row.reference(*args, **kwargs), grads)}
        if compile_ref:
            compiled = torch.compile(row.reference)
            cands["compile"] = fwd_bwd(lambda: compiled(*args, **kwargs), grads)
        for b in backends:
            def ours(b=b):
                _set_backend(b)
                return row.functional(*args, **kwargs)
            cands[b] = fwd_bwd(ours, grads)
        try:
            st = interleaved_stats(cands, reps=reps, device=device)
            t = {k: v["median"] for k, v in st.items()}
        except Exception as e:  # report, never hide
            rows.append({"layer": row.name, "note": f"error: {type(e).__name__}: {e}"[:80]})
            continue
        for b, (torch_saved, ours_saved) in _layer_saved(row, args, kwargs, backends).items():
            rows.append({
                "layer": row.name, "backend": b, "eager_ms": 1e3 * t["eager"], "ours_ms": 1e3 * t[b],
                **_spread_ms(st, b),
                "time_vs_eager": t[b] / t["eager"],
                "time_vs_compile": t[b] / t["compile"] if compile_ref else None,
                **_saved_fields(torch_saved, ours_saved),
            })
        _set_backend("auto")
    return rows


def saved_only(device, out, only=None):
    """Fill the saved-bytes columns of every layer row of the JSON ``out`` without timing anything: rows
    already timed keep their times, rows not timed yet get the saved columns alone (times shown as "-")."""
    try:
        with open(out) as f:
            d = json.load(f)
    except FileNotFoundError:
        d = {"machine": "", "threads": torch.get_num_threads(), "reps": 0, "layers": [], "heads": [], "models": []}
    old = {(r["layer"], r.get("backend")): r for r in d["layers"]}
    backends = _backends()
    rows = []
    for row in LAYERS:
        if only and row.name not in only:
            rows += [r for (name, _), r in old.items() if name == row.name]
            continue
        if row.name not in SIZES:
            rows.append({"layer": row.name, "note": "no size"})
            continue
        torch.manual_seed(0)
        args, kwargs = SIZES[row.name](Dims(device))
        for b, (torch_saved, ours_saved) in _layer_saved(row, args, kwargs, backends).items():
            rows.append({**old.get((row.name, b), {"layer": row.name, "backend": b}),
                         **_saved_fields(torch_saved, ours_saved)})
    d["layers"] = rows
    with open(out, "w") as f:
        json.dump(d, f, indent=1)
    return rows


def _check_grads(ref, ours, inputs):
    ref.eval(), ours.eval()  # dropout off: the gradients must agree exactly up to rounding
    for m in (ref, ours):
        m.zero_grad()
        m(*inputs).float().sum().backward()
    worst = 0.0
    for p, q in zip(ref.parameters(), ours.parameters()):
        worst = max(worst, ((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-12)).item())
    ref.train(), ours.train()
    return worst


def bench_models(device, reps, compile_ref, only=None):
    rows = []
    backends = _backends()
    for name, make in MODELS.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        built = make()
        if built is None:  # a dependency is missing (models.MISSING names it)
            rows.append({"model": name, "note": f"skipped: needs {MISSING.get(name, 'a missing package')}"})
            continue
        ref, inputs = built
        ref, inputs = ref.to(device), tuple(x.to(device) for x in inputs)
        # each backend twice: converted without fusion ("cpp"), and with it ("cpp+fused", convert's default)
        variants = {"": torch_bp.convert(ref, fuse=False), "+fused": torch_bp.convert(ref)}
        rep = torch_bp.conversion_report(variants[""])
        errs = {v: _check_grads(ref, m, inputs) for v, m in variants.items()}
        params = list(ref.parameters()) + [p for m in variants.values() for p in m.parameters()]
        cands = {"eager": fwd_bwd(lambda: ref(*inputs), params)}
        if compile_ref:
            compiled = torch.compile(copy.deepcopy(ref))
            cands["compile"] = fwd_bwd(lambda: compiled(*inputs), params)
        for b in backends:
            for v, model in variants.items():
                def run(b=b, model=model):
                    _set_backend(b)
                    return model(*inputs)
                cands[b + v] = fwd_bwd(run, params)
        st = interleaved_stats(cands, reps=reps, device=device)
        t = {k: v["median"] for k, v in st.items()}
        excl = list(inputs) + params + list(ref.buffers()) + [buf for m in variants.values() for buf in m.buffers()]
        torch_saved = saved_bytes(lambda: ref(*inputs), excl)
        for backend, v in [(b, v) for b in backends for v in variants]:
            b, ours, err = backend + v, variants[v], errs[v]
            _set_backend(backend)
            ours_saved = saved_bytes(lambda: ours(*inputs), excl)
            peak = {}
            if device == "cuda":
                peak = {"peak_MB_torch": peak_cuda_bytes(cands["eager"]) / 2**20,
                        "peak_MB_ours": peak_cuda_bytes(cands[b]) / 2**20}
            rows.append({
                "model": name, "backend": b, "converted": f"{rep.share:.0%}", "grad_max_rel_err": err,
                "eager_ms": 1e3 * t["eager"], "ours_ms": 1e3 * t[b], **_spread_ms(st, b),
                "time_vs_eager": t[b] / t["eager"],
                "time_vs_compile": t[b] / t["compile"] if compile_ref else None,
                "saved_MB_torch": torch_saved / 2**20, "saved_MB_ours": ours_saved / 2**20,
                "saved_ratio": ours_saved / torch_saved if torch_saved else None, **peak,
            })
        _set_backend("auto")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=11)
    p.add_argument("--quick", action="store_true", help="few repetitions, no torch.compile")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compile-models-only", action="store_true",
                   help="the torch.compile reference for the models only (compiling every layer takes long)")
    p.add_argument("--only", nargs="*", help="layer or model names")
    p.add_argument("--out", default=None, help="JSON path (default experiments/results/bench_<device>.json)")
    p.add_argument("--saved-only", action="store_true",
                   help="only the layers' saved bytes, no timing: updates those columns of the JSON in place")
    p.add_argument("--no-intercept", action="store_true", help="skip the interception overhead (intercept.py)")
    p.add_argument("--memory", action="store_true",
                   help="also the memory of a GPT-2 LM training step (memory.py: subprocesses, a few minutes)")
    a = p.parse_args(argv)
    out = a.out or os.path.join(os.path.dirname(__file__), "..", "results", f"bench_{a.device}.json")
    if a.saved_only:
        rows = saved_only(a.device, out, a.only)
        print(format_table(rows, [("layer", "layer"), ("backend", "backend"), ("saved_MB_torch", "saved MB torch"),
                                  ("saved_MB_ours", "saved MB ours"), ("saved_ratio", "saved x torch"),
                                  ("note", "note")]))
        print(f"\nwrote {os.path.normpath(out)} (saved bytes only; times kept from the last full run)")
        return 0
    torch.set_num_threads(os.cpu_count() or 1)
    reps = 3 if a.quick else a.reps
    compile_ref = not (a.quick or a.no_compile)
    machine = f"{platform.machine()} {os.cpu_count()} cores{_cpu_model()}, torch {torch.__version__}, {a.device}"
    if a.device == "cuda":
        machine += f" ({torch.cuda.get_device_name()})"
    print(f"# torch_bp benchmark suite on {machine}; float32; {torch.get_num_threads()} threads; times are medians "
          f"of {reps} interleaved reps (iqr: interquartile range)\n")
    layers = bench_layers(a.device, reps, compile_ref and not a.compile_models_only, a.only)
    print(format_table(layers, [("layer", "layer"), ("backend", "backend"), ("eager_ms", "eager ms"),
                                ("ours_ms", "ours ms"), ("ours_iqr_ms", "ours iqr ms"), ("time_vs_eager", "x eager"),
                                ("time_vs_compile", "x compile"), ("saved_MB_torch", "saved MB torch"),
                                ("saved_MB_ours", "saved MB ours"), ("saved_ratio", "saved x torch"),
                                ("note", "note")]))
    print()
    heads = []
    if not a.only or "linear_cross_entropy" in a.only:  # the head's two modes and peak bytes
        heads = bench_heads(a.device, reps)
        print(format_table(heads, HEAD_COLUMNS))
        print()
    models = bench_models(a.device, reps, compile_ref, a.only)
    cols = [("model", "model"), ("backend", "backend"), ("converted", "converted"),
            ("grad_max_rel_err", "grad rel err"), ("eager_ms", "eager ms"), ("ours_ms", "ours ms"),
            ("ours_iqr_ms", "ours iqr ms"),
            ("time_vs_eager", "x eager"), ("time_vs_compile", "x compile"),
            ("saved_MB_torch", "saved MB torch"), ("saved_MB_ours", "saved MB ours"),
            ("saved_ratio", "saved x torch")]
    if a.device == "cuda":
        cols += [("peak_MB_torch", "peak MB torch"), ("peak_MB_ours", "peak MB ours")]
    print(format_table(models, cols))
    extra = {}
    if not a.no_intercept and (not a.only or "intercept" in a.only) and a.device == "cpu":
        from .intercept import bench_intercept, report as intercept_report
        extra["intercept"] = bench_intercept(max(reps, 11))
        print("\n" + intercept_report(extra["intercept"]))
    if a.memory and a.device == "cpu":
        from .memory import bench_memory, report as memory_report
        extra["memory"] = bench_memory(reps=max(3, reps // 4))
        print("\n" + memory_report(extra["memory"]))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"machine": machine, "threads": torch.get_num_threads(), "reps": reps,
                   "spread": "eager_iqr_ms / ours_iqr_ms: interquartile range of the repetitions",
                   "layers": layers, "heads": heads, "models": models, **extra}, f, indent=1)
    print(f"\nwrote {os.path.normpath(out)}")


if __name__ == "__main__":
    sys.exit(main())
