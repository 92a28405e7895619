"""Quick forward+backward timing of conv2d and batch_norm, torch_bp vs torch, at one realistic size.

    .venv/bin/python experiments/quick_conv_timing.py [--reps 15] [--device cpu]

Size: batch 32, 64 -> 64 channels, 32x32, 3x3 kernel, padding 1 (a ResNet-18 stage-1 layer on
CIFAR). Each repetition runs torch then ours (or ours then torch, alternating) on the same
inputs, so slow drifts of a shared machine hit both; the table gives the median per
implementation and the median of the per-repetition ratios. Writes a JSON file beside the
script. The systematic version is the benchmark suite (experiments/bench*).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import torch
import torch.nn.functional as TF

import torch_bp.functional as F


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _cases(device):
    g = torch.Generator(device="cpu").manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g).to(device)

    x, w, b = t(32, 64, 32, 32), t(64, 64, 3, 3) * 0.05, t(64)
    up = t(32, 64, 32, 32)
    conv = dict(args=lambda: (x.requires_grad_(), w.requires_grad_(), b.requires_grad_()),
                kwargs=dict(padding=1), up=up)
    rm, rv = torch.zeros(64, device=device), torch.ones(64, device=device)
    gamma, beta = t(64), t(64)
    bn = dict(args=lambda: (x.requires_grad_(), rm, rv, gamma.requires_grad_(), beta.requires_grad_(), True),
              kwargs={}, up=up)
    return {"conv2d": (conv, TF.conv2d, F.conv2d), "batch_norm": (bn, TF.batch_norm, F.batch_norm)}


def _step(fn, case, device):
    args = case["args"]()
    for a in args:
        if isinstance(a, torch.Tensor):
            a.grad = None
    _sync(device)
    t0 = time.perf_counter()
    out = fn(*args, **case["kwargs"])
    out.backward(case["up"])
    _sync(device)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    rows = []
    for name, (case, ref, ours) in _cases(device).items():
        for _ in range(a.warmup):
            _step(ref, case, device)
            _step(ours, case, device)
        t_ref, t_ours, ratio = [], [], []
        for i in range(a.reps):
            order = (ref, ours) if i % 2 == 0 else (ours, ref)
            times = {fn: _step(fn, case, device) for fn in order}
            t_ref.append(times[ref])
            t_ours.append(times[ours])
            ratio.append(times[ours] / times[ref])
        rows.append(dict(layer=name, torch_ms=1e3 * statistics.median(t_ref),
                         torch_bp_ms=1e3 * statistics.median(t_ours), ratio=statistics.median(ratio),
                         ratio_min=min(ratio), ratio_max=max(ratio)))
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"forward+backward, batch 32, 64->64 ch, 32x32, 3x3 pad 1 (batch_norm: training, 64 ch); "
          f"{dev}; median of {a.reps} interleaved reps; torch {torch.__version__}")
    print(f"| layer | torch (ms) | torch_bp (ms) | torch_bp / torch (median, [min, max]) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['torch_ms']:.2f} | {r['torch_bp_ms']:.2f} | "
              f"{r['ratio']:.2f} [{r['ratio_min']:.2f}, {r['ratio_max']:.2f}] |")
    out = pathlib.Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(dict(device=dev, torch=torch.__version__, reps=a.reps, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
