"""Measurement primitives shared by every benchmark: interleaved timing and saved bytes.

Times: the candidates run in turn (A, B, C, A, B, C, ...) in one process, after warm-up,
and each gets the median of its repetitions, with the quartiles beside it (their difference,
the interquartile range, is the run-to-run spread a result file records); ratios are then
taken between medians of the same run, so a machine that slows down during the run slows
every candidate alike. Each repetition is one call timed by ``torch.utils.benchmark.Timer``
(which synchronises CUDA around the call) at the process's current thread count.

Saved bytes: every tensor that autograd packs for backward during the forward, counted
with ``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage, with the
parameters and the inputs excluded (they are alive anyway).
"""
from __future__ import annotations

import statistics
from typing import Callable, Iterable

import torch
from torch.utils.benchmark import Timer


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_times(candidates: dict[str, Callable[[], object]], reps: int = 15, warmup: int = 3,
                      device="cpu") -> dict[str, list[float]]:
    """Seconds of every repetition of each candidate, timed A/B/A/B in one process."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    threads = torch.get_num_threads()   # Timer would otherwise time at its own default of 1 thread
    timers = {k: Timer("fn()", globals={"fn": fn}, num_threads=threads) for k, fn in candidates.items()}
    times = {k: [] for k in candidates}
    for _ in range(reps):
        for name, timer in timers.items():
            times[name].append(timer.timeit(1).times[0])
    return times


def spread(times: list[float]) -> dict[str, float]:
    """Median, quartiles, interquartile range and minimum (seconds) of one candidate's repetitions."""
    v = sorted(times)
    if len(v) == 1:
        q1 = q3 = v[0]
    else:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "iqr": q3 - q1, "min": v[0], "reps": len(v)}


def interleaved_stats(candidates: dict[str, Callable[[], object]], reps: int = 15, warmup: int = 3,
                      device="cpu") -> dict[str, dict[str, float]]:
    """``spread`` of each candidate's interleaved repetitions, plus the thread count they ran at."""
    threads = torch.get_num_threads()
    return {k: {**spread(v), "threads": threads}
            for k, v in interleaved_times(candidates, reps, warmup, device).items()}


def interleaved_median(candidates: dict[str, Callable[[], object]], reps: int = 15, warmup: int = 3,
                       device="cpu") -> dict[str, float]:
    """Median seconds per call of each candidate, timed A/B/A/B in one process."""
    return {k: statistics.median(v) for k, v in interleaved_times(candidates, reps, warmup, device).items()}


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (t.device.type, s.data_ptr(), s.nbytes())


def saved_bytes(forward: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of distinct storages autograd saves for backward while ``forward()`` runs."""
    excluded = {_storage_key(t) for t in exclude if isinstance(t, torch.Tensor)}
    seen: dict = {}

    def pack(t):
        key = _storage_key(t)
        if key not in excluded and t.untyped_storage().nbytes() > 0:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def peak_cuda_bytes(fn: Callable[[], object]) -> int | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def fwd_bwd(fn: Callable[[], object], grads_of: Iterable[torch.Tensor] = ()) -> Callable[[], None]:
    """Wrap a forward into forward + backward of the sum of its (first) output."""
    grads_of = list(grads_of)

    def step():
        out = fn()
        if isinstance(out, (tuple, list)):
            out = out[0]
        out.float().sum().backward()
        for t in grads_of:
            t.grad = None

    return step


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A plain-text table: columns are (key, header) pairs; floats get 3 significant digits."""
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    cells = [[h for _, h in columns]] + [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = [" | ".join(c[i].ljust(widths[i]) for i in range(len(columns))) for c in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
