"""Forward+backward time of our attention and recurrent rules against torch's, at one realistic size.

    .venv/bin/python experiments/quick_attn_rnn_timing.py [--reps 15] [--threads N]

Each case runs ours and torch's alternately (interleaved, after a warm-up) on the same inputs
and weights, and reports the median of the repetitions. Prints a table and writes
experiments/quick_attn_rnn_timing.json beside this file.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import torch

import torch_bp
import torch_bp.functional as F


def _fwd_bwd(fn, inputs):
    def step():
        for t in inputs:
            t.grad = None
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        out.backward(torch.ones_like(out))
    return step


def _interleaved(steps, reps):
    for s in steps.values():  # warm-up
        s()
    times = {k: [] for k in steps}
    for _ in range(reps):
        for k, s in steps.items():
            t = time.perf_counter()
            s()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _recurrent_case(mode, reps):
    B, T, H, L = 32, 64, 256, 2
    torch.manual_seed(0)
    ref = getattr(torch.nn, mode)(H, H, num_layers=L)
    ours = getattr(torch_bp.nn, mode)(H, H, num_layers=L)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, H, requires_grad=True)
    params = [x, *ref.parameters(), *ours.parameters()]
    ms = _interleaved({"ours": _fwd_bwd(lambda: ours(x), params), "torch": _fwd_bwd(lambda: ref(x), params)}, reps)
    return {"case": f"{mode} B={B} T={T} H={H} layers={L}", **ms}


def _attention_case(causal, reps):
    B, Hh, T, D = 8, 4, 256, 64
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, Hh, T, D, requires_grad=True) for _ in range(3))

    def math_path():
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    ms = _interleaved({
        "ours": _fwd_bwd(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), (q, k, v)),
        "torch": _fwd_bwd(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal),
                          (q, k, v)),
        "torch math": _fwd_bwd(math_path, (q, k, v)),
    }, reps)
    return {"case": f"sdpa B={B} heads={Hh} T={T} d={D}" + (" causal" if causal else ""), **ms}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [_recurrent_case("LSTM", args.reps), _recurrent_case("GRU", args.reps),
            _attention_case(False, args.reps), _attention_case(True, args.reps)]
    head = f"{'forward+backward, median ms':42s} {'ours':>9s} {'torch':>9s} {'ours/torch':>10s} {'torch math':>10s}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.reps} interleaved reps")
    print(head)
    print("-" * len(head))
    for r in rows:
        math = f"{r['torch math']:10.1f}" if "torch math" in r else f"{'-':>10s}"
        print(f"{r['case']:42s} {r['ours']:9.1f} {r['torch']:9.1f} {r['ours'] / r['torch']:10.2f} {math}")
    out = pathlib.Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "reps": args.reps,
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
