"""Memory of real training: one step of a GPT-2-shaped language model, torch eager against torch_bp.

``python -m experiments.benchmarks.memory [--layers 2] [--seq 512] [--batches 1 2] [--reps 3]``
(also ``python -m experiments.benchmarks --memory``); writes ``experiments/results/memory_cpu.json``.

The model: transformers' ``GPT2LMHeadModel`` from a config (GPT-2 small's shape at reduced depth:
d=768, 12 heads, MLP 3072, vocabulary 50257, sequence 512, dropouts 0.1, random init, nothing
downloaded), float32, trained by AdamW. A step is forward + backward + optimizer step, on one batch
of random tokens with labels = inputs. Candidates:

- ``eager``: ``model(input_ids, labels=labels).loss`` (transformers computes the loss inside the
  model from the (batch, T, vocabulary) logits);
- ``convert``: the same call on ``torch_bp.convert(model)``;
- ``convert+fused_loss``: ``torch_bp.nn.hf.causal_lm_loss(converted, input_ids, labels)``: the same
  loss by ``linear_cross_entropy`` from the last hidden state, the logits never materialised.

Peak bytes: each (candidate, batch size) runs in a fresh subprocess, as ``heads.py`` does (glibc
serves every allocation of 64 KiB or more by mmap, so that the resident set follows the live
tensors). The child builds the model and optimizer, runs one step (which also creates AdamW's
state; the gradients are dropped after it, ``zero_grad(set_to_none=True)``), reads its resident
set (VmRSS) as the baseline ``resident before`` (model, AdamW state, libraries), then resets the
kernel's high-water mark before the forward + backward and again before the optimizer step and
reads VmHWM after each: ``fwd+bwd peak`` (activations, saved tensors, temporaries and the
gradients, beyond the baseline) and ``optimizer peak`` (the gradients and AdamW's temporaries);
the step's peak is the larger. Measured at two batch sizes, the forward + backward peak's growth
per sample (the slope) and the rest (the intercept) give the largest batch whose step fits in a
given memory: floor((budget - resident before - intercept) / slope), provided the optimizer's
peak fits (it does not grow with the batch).

Time: the candidates train interleaved in this process (A/B/C/A/B/C, each on its own copy of the
model and optimizer), median seconds per step with quartiles, ratio to eager.

Target (issue 23): at most 0.7x eager's peak at at most 1.0x its time.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

import torch

from .measure import format_table, spread

CANDIDATES = ("eager", "convert", "convert+fused_loss")
BUDGETS_GIB = (8, 16)


def _transformers():
    try:
        import transformers
    except ImportError:
        return None
    return transformers


def build(layers, seq, seed=0):
    """GPT2LMHeadModel at GPT-2 small's width, ``layers`` deep, ``seq`` positions (float32, train mode)."""
    transformers = _transformers()
    cfg = transformers.GPT2Config(n_embd=768, n_head=12, n_layer=layers, n_positions=seq, vocab_size=50257,
                                  attn_implementation="sdpa")
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg).train()


def batch(n, seq, vocab=50257, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, seq), generator=g)
    return ids, ids.clone()


def candidate(name, model):
    """(module, loss function of (ids, labels)) for a candidate built from ``model`` (copied)."""
    import torch_bp
    from torch_bp.nn.hf import causal_lm_loss
    if name == "eager":
        m = copy.deepcopy(model)
        return m, lambda ids, labels: m(input_ids=ids, labels=labels).loss
    m = torch_bp.convert(model)
    if name == "convert":
        return m, lambda ids, labels: m(input_ids=ids, labels=labels).loss
    return m, lambda ids, labels: causal_lm_loss(m, ids, labels)


def trainer(name, model, ids, labels):
    """(forward + backward, optimizer step) closures of candidate ``name`` on its own copy of ``model``."""
    m, loss_fn = candidate(name, model)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

    def fwd_bwd():
        loss = loss_fn(ids, labels)
        loss.backward()
        return loss.detach()

    def update():
        opt.step()
        opt.zero_grad(set_to_none=True)
    return fwd_bwd, update


def _status_kib(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])


def _peak_of(fn, base):
    """Bytes resident at most while ``fn`` runs, beyond ``base`` KiB (VmHWM reset first)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    fn()
    return (_status_kib("VmHWM") - base) * 1024


def _child(name, n, layers, seq):
    """In a fresh process: print the peaks of one training step of ``name`` (see the module docstring)."""
    torch.set_num_threads(os.cpu_count() or 1)
    ids, labels = batch(n, seq)
    fwd_bwd, update = trainer(name, build(layers, seq), ids, labels)
    fwd_bwd(), update()  # warm-up: AdamW's state, thread pools, kernels
    base = _status_kib("VmRSS")
    fb = _peak_of(fwd_bwd, base)           # activations, saved tensors, temporaries, the gradients
    opt = _peak_of(update, base)           # the gradients and AdamW's temporaries
    print(json.dumps({"base_bytes": base * 1024, "fwd_bwd_peak_bytes": fb, "opt_peak_bytes": opt,
                      "step_peak_bytes": max(fb, opt)}))


def peaks(name, n, layers, seq):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-m", "experiments.benchmarks.memory", "--child", name,
                          "--batches", str(n), "--layers", str(layers), "--seq", str(seq)],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
    return json.loads(out.stdout.strip().splitlines()[-1])


def fits(p1, p2, n1, n2, budget_gib):
    """The largest batch whose step fits in ``budget_gib`` GiB: the forward + backward peak grows
    linearly in the batch (the slope and intercept of two batch sizes), the optimizer's does not;
    the process holds ``base`` (model, AdamW state, libraries) besides. None if the slope is not
    positive (no growth measured)."""
    slope = (p2["fwd_bwd_peak_bytes"] - p1["fwd_bwd_peak_bytes"]) / (n2 - n1)
    if slope <= 0:
        return None
    room = budget_gib * 2**30 - p2["base_bytes"]
    if room < p2["opt_peak_bytes"]:
        return 0
    return max(0, int((room - (p2["fwd_bwd_peak_bytes"] - slope * n2)) // slope))


def bench_memory(layers=2, seq=512, batches=(1, 2), reps=3, time_batch=None):
    if _transformers() is None:
        return {"note": "transformers is not installed: the memory benchmark needs it"}
    b1, b2 = batches
    mem = {name: {n: peaks(name, n, layers, seq) for n in (b1, b2)} for name in CANDIDATES}
    tb = time_batch or b1
    ids, labels = batch(tb, seq)
    model = build(layers, seq)
    steps = {}
    for name in CANDIDATES:
        fb, up = trainer(name, model, ids, labels)
        steps[name] = lambda fb=fb, up=up: (fb(), up())
    for fn in steps.values():
        fn()  # warm-up
    times = {name: [] for name in CANDIDATES}
    for _ in range(reps):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    st = {k: spread(v) for k, v in times.items()}
    rows = []
    e1, e2 = mem["eager"][b1], mem["eager"][b2]
    e_slope = (e2["fwd_bwd_peak_bytes"] - e1["fwd_bwd_peak_bytes"]) / (b2 - b1)
    for name in CANDIDATES:
        p1, p2 = mem[name][b1], mem[name][b2]
        slope = (p2["fwd_bwd_peak_bytes"] - p1["fwd_bwd_peak_bytes"]) / (b2 - b1)
        row = {"candidate": name, "step_s": st[name]["median"], "step_q1_s": st[name]["q1"],
               "step_q3_s": st[name]["q3"], "time_vs_eager": st[name]["median"] / st["eager"]["median"],
               "base_MB": p2["base_bytes"] / 2**20, "opt_peak_MB": p2["opt_peak_bytes"] / 2**20,
               f"fwd_bwd_peak_MB_b{b1}": p1["fwd_bwd_peak_bytes"] / 2**20,
               f"fwd_bwd_peak_MB_b{b2}": p2["fwd_bwd_peak_bytes"] / 2**20,
               "fwd_bwd_peak_vs_eager": p2["fwd_bwd_peak_bytes"] / e2["fwd_bwd_peak_bytes"],
               "step_peak_vs_eager": p2["step_peak_bytes"] / e2["step_peak_bytes"],
               "per_sample_MB": slope / 2**20, "per_sample_vs_eager": slope / e_slope if e_slope > 0 else None,
               "raw": {str(b1): p1, str(b2): p2}}
        for gib in BUDGETS_GIB:
            row[f"batch_fits_{gib}GiB"] = fits(p1, p2, b1, b2, gib)
        rows.append(row)
    return {"model": f"GPT2LMHeadModel d=768 heads=12 layers={layers} seq={seq} vocab=50257, float32, AdamW",
            "batches": [b1, b2], "time_batch": tb, "reps": reps, "threads": torch.get_num_threads(),
            "target": "peak <= 0.7 x eager at time <= 1.0 x", "rows": rows}


def columns(res):
    b1, b2 = res["batches"]
    return ([("candidate", "candidate"), ("step_s", f"step s (b{res['time_batch']})"), ("step_q1_s", "q1"),
             ("step_q3_s", "q3"), ("time_vs_eager", "time x eager"),
             (f"fwd_bwd_peak_MB_b{b1}", f"fwd+bwd peak MB b{b1}"), (f"fwd_bwd_peak_MB_b{b2}", f"b{b2}"),
             ("fwd_bwd_peak_vs_eager", f"x eager (b{b2})"), ("opt_peak_MB", "optimizer peak MB"),
             ("step_peak_vs_eager", f"step peak x eager (b{b2})"), ("base_MB", "resident before MB"),
             ("per_sample_MB", "MB per sample"), ("per_sample_vs_eager", "per sample x eager")]
            + [(f"batch_fits_{g}GiB", f"batch in {g} GiB") for g in BUDGETS_GIB])


def report(res):
    if "rows" not in res:
        return res["note"]
    return f"{res['model']}\n" + format_table(res["rows"], columns(res))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results", "memory_cpu.json"))
    a = p.parse_args(argv)
    if a.child:
        return _child(a.child, a.batches[0], a.layers, a.seq)
    torch.set_num_threads(os.cpu_count() or 1)
    res = bench_memory(a.layers, a.seq, tuple(a.batches), a.reps)
    print(report(res))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nwrote {os.path.normpath(a.out)}")


if __name__ == "__main__":
    sys.exit(main())
