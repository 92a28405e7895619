"""Cost of the functional interception (``torch_bp/_intercept.py``) on a converted model's training step.

``convert(model)`` enters a ``TorchFunctionMode`` for the duration of the model's forward; every torch
call made in it (attribute reads such as ``x.shape`` included) passes through its handler, which
either hands the call to our functional or back to torch. Its cost is measured two ways:

1. **step, mechanism only**: models whose converted forward runs the same rules with and without
   interception (every layer is converted by a class swap; the benchmark checks that both backward
   graphs hold the same nodes, else the row says so and gives no ratio). ``convert(m)`` and
   ``convert(m, functional=False)`` train (forward + backward) interleaved in one process, A/B/A/B;
   the result is the median of the per-pair ratios (each repetition's A over the B timed next to
   it) with their quartiles, and the ratio of the medians beside it.
2. **per call**: the handler's own cost per call that passes through it (a tight loop of cheap calls
   with the mode on, minus the same loop without it; minimum over repeats), times the calls that
   pass through it in one training step of each model (counted), plus the cost of stepping the mode
   aside (``_intercept.outside``: torch_bp's own functionals run without it) times the calls of our
   functionals that step it aside (counted), over that step's time. This also
   covers models where ``functional=False`` would run other rules (transformers' blocks: there the
   interception is what makes the attention, SwiGLU product and loss ours, so a whole-step ratio
   would compare different rules, not the mechanism).

Target (issue 20): at most 2% over the same model without interception.

``python -m experiments.benchmarks.intercept [--reps 31] [--out PATH]``
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import torch

import torch_bp
from torch_bp import _intercept

from .measure import format_table, fwd_bwd, interleaved_times, spread
from .models import MODELS

STEP_MODELS = ["mlp_gelu", "transformer_block", "preln_block", "cnn_stack"]
CALL_MODELS = STEP_MODELS + ["gpt2_block", "llama_block"]


def _node_names(model, inputs):
    """The multiset of backward node names reached from the output of one forward."""
    out = model(*inputs)
    seen, stack, names = set(), [out.grad_fn], collections.Counter()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names[node.name()] += 1
        stack.extend(n for n, _ in node.next_functions)
    return names


class _Counting(_intercept.Intercept):
    """The interception, counting the calls that pass through its handler."""

    calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        _Counting.calls += 1
        return super().__torch_function__(func, types, args, kwargs)


def _mode_on_top() -> bool:
    n = torch._C._len_torch_function_stack()
    return bool(n) and isinstance(torch._C._get_function_stack_at(n - 1), _intercept.Intercept)


def calls_per_step(model, inputs) -> tuple[int, int]:
    """In one forward + backward of ``model`` (converted with interception): the calls through the
    handler, and the calls of torch_bp's functionals that step the mode aside (made while it is the
    innermost mode: ``_intercept.outside``). The functionals are looked up in their module at each
    call (torch_bp.nn's modules call ``F.<name>``, and they call each other through the module's
    globals), so wrapping them there counts every call."""
    import torch_bp.functional as tbf

    before = _intercept.Intercept
    _Counting.calls = 0
    asides = [0]
    wrapped = {n: f for n, f in vars(tbf).items() if getattr(f, "__wrapped_by_intercept__", False)}

    def counting(f):
        def run(*args, **kwargs):
            asides[0] += _mode_on_top()
            return f(*args, **kwargs)
        return run

    _intercept.Intercept = _Counting  # _enter makes the mode of this class
    for n, f in wrapped.items():
        setattr(tbf, n, counting(f))
    try:
        out = model(*inputs)
        out.float().sum().backward()
    finally:
        _intercept.Intercept = before
        for n, f in wrapped.items():
            setattr(tbf, n, f)
    model.zero_grad(set_to_none=True)
    return _Counting.calls, asides[0]


def per_call_us(reps: int = 9, n: int = 20000) -> dict:
    """The handler's cost per call (us): pass-through calls (``x.dim()``, ``x.shape``, ``x.reshape``),
    a call of ours (``F.silu`` taken over) against calling ``torch_bp.functional.silu`` directly, and
    what stepping the mode aside adds to a call of our functional (``torch_bp.functional.relu`` with
    the mode on against off)."""
    x = torch.randn(4, 4, requires_grad=True)
    tf, ours = torch.nn.functional, torch_bp.functional

    def passthrough():
        for _ in range(n):
            x.dim()
            x.shape
            x.reshape(16)
        return 3 * n

    def theirs_silu():
        for _ in range(n // 10):
            tf.silu(x)
        return n // 10

    def ours_silu():
        for _ in range(n // 10):
            ours.silu(x)
        return n // 10

    def best(fn, mode):
        r = []
        for _ in range(reps):
            t = time.perf_counter()
            if mode:
                with _intercept.Intercept():
                    k = fn()
            else:
                k = fn()
            r.append((time.perf_counter() - t) / k)
        return min(r)

    def ours_relu():  # a cheap functional of ours: what stepping aside adds to it
        for _ in range(n // 10):
            ours.relu(x)
        return n // 10

    bare = best(passthrough, False)
    through = best(passthrough, True)
    direct = best(ours_silu, False)
    taken = best(theirs_silu, True)
    relu_off, relu_on = best(ours_relu, False), best(ours_relu, True)
    return {"passthrough_us": 1e6 * (through - bare), "bare_call_us": 1e6 * bare,
            "ours_dispatch_us": 1e6 * (taken - direct), "ours_direct_us": 1e6 * direct,
            "aside_us": 1e6 * (relu_on - relu_off)}


def bench_intercept(reps: int = 31, only=None) -> dict:
    per_call = per_call_us()
    rows = []
    for name in CALL_MODELS:
        if only and name not in only:
            continue
        torch.manual_seed(0)
        built = MODELS[name]()
        if built is None:
            rows.append({"model": name, "note": "transformers not installed"})
            continue
        ref, inputs = built
        on = torch_bp.convert(ref)
        off = torch_bp.convert(ref, functional=False)
        on.train(), off.train()
        calls, asides = calls_per_step(on, inputs)
        same = _node_names(on, inputs) == _node_names(off, inputs)
        params = list(on.parameters()) + list(off.parameters())
        cands = {"on": fwd_bwd(lambda: on(*inputs), params), "off": fwd_bwd(lambda: off(*inputs), params)}
        times = interleaved_times(cands, reps=reps if name in STEP_MODELS and same else 5, warmup=2)
        st = {k: spread(v) for k, v in times.items()}
        step_s = st["on"]["median"]
        cost_us = calls * per_call["passthrough_us"] + asides * per_call["aside_us"]
        row = {"model": name, "calls": calls, "asides": asides, "same_rules": same, "step_ms": 1e3 * step_s,
               "est_overhead_pct": 100 * cost_us * 1e-6 / step_s}
        if name in STEP_MODELS and same:
            pair = sorted(a / b for a, b in zip(times["on"], times["off"]))
            q = spread(pair)
            row.update({"step_off_ms": 1e3 * st["off"]["median"], "ratio_pairs": q["median"],
                        "ratio_q1": q["q1"], "ratio_q3": q["q3"],
                        "ratio_medians": st["on"]["median"] / st["off"]["median"], "reps": reps})
        elif not same:
            row["note"] = "functional=False runs other rules: per-call estimate only"
        rows.append(row)
    return {"per_call": per_call, "models": rows, "threads": torch.get_num_threads(),
            "target": "step with interception <= 1.02 x without"}


COLUMNS = [("model", "model"), ("calls", "calls/step"), ("asides", "asides/step"), ("same_rules", "same rules"), ("step_ms", "step ms"),
           ("step_off_ms", "off ms"), ("ratio_pairs", "on/off (pairs)"), ("ratio_q1", "q1"), ("ratio_q3", "q3"),
           ("ratio_medians", "on/off (medians)"), ("est_overhead_pct", "est. % of step"), ("note", "note")]


def report(res: dict) -> str:
    pc = res["per_call"]
    head = (f"handler cost per call: {pc['passthrough_us']:.2f} us passing a call through to torch "
            f"(a bare call {pc['bare_call_us']:.2f} us); {pc['ours_dispatch_us']:.2f} us taking one over "
            f"(F.silu -> torch_bp.functional.silu, itself {pc['ours_direct_us']:.1f} us); "
            f"{pc['aside_us']:.2f} us stepping the mode aside for a call of our functional\n"
            f"est. % of step = (calls x {pc['passthrough_us']:.2f} us + asides x {pc['aside_us']:.2f} us) / step")
    return head + "\n" + format_table(res["models"], COLUMNS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=31)
    p.add_argument("--only", nargs="*")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results", "intercept_cpu.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    res = bench_intercept(a.reps, a.only)
    print(report(res))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nwrote {os.path.normpath(a.out)}")


if __name__ == "__main__":
    sys.exit(main())
