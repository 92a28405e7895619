"""Survey: draw many fuzz cases per layer and tally every distinct failure, not just the first.

    .venv/bin/python tests/fuzz/survey.py [NAME ...] [--draws N] [--json out.json]

pytest (tests/test_fuzz.py) stops a layer at its first failure and shrinks it; this tool
keeps going, groups failures by their message (numbers stripped) and prints one table row
per layer plus the smallest case of each failure group, to find everything in one pass.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fuzz import check, fuzz_case  # noqa: E402
from samples import SAMPLES  # noqa: E402
from torch_bp.registry import LAYERS  # noqa: E402


def _signature(msg):
    first = msg.strip().splitlines()[0] if msg.strip() else msg
    return re.sub(r"[-+]?\d[\d.e+-]*", "#", first)[:160]


def survey(name, draws, seed, dump=None):
    counts, failures = Counter(), {}

    @settings(max_examples=draws, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=["generate"])
    @given(data=st.data())
    def body(data):
        case = data.draw(fuzz_case(name))
        if os.environ.get("FUZZ_TRACE"):
            with open(os.environ["FUZZ_TRACE"], "w") as f:
                f.write(repr(case))
        try:
            counts[check(case)] += 1
        except AssertionError as e:
            counts["failed"] += 1
            sig = _signature(str(e))
            if sig not in failures or len(repr(case)) < len(failures[sig][1]):
                failures[sig] = (" | ".join(str(e).strip().splitlines()[:6])[:600], repr(case))
                if dump:
                    os.makedirs(dump, exist_ok=True)
                    torch.save(case, os.path.join(dump, f"{name}-{abs(hash(sig)) % 10**6}.pt"))

    body._hypothesis_internal_use_seed = seed
    body()
    return counts, failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--dump", help="save the smallest case of each failure group here (torch.save)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    names = a.names or [r.name for r in LAYERS if r.reference is not None and r.name in SAMPLES]
    report = {}
    print(f"{'layer':34} {'draws':>6} {'ok':>6} {'raised':>6} {'xfail':>6} {'skip':>6} {'failed':>6} {'s':>6}")
    for n in names:
        t0 = time.perf_counter()
        counts, failures = survey(n, a.draws, a.seed, a.dump)
        dt = time.perf_counter() - t0
        xfail = sum(v for k, v in counts.items() if k.startswith("xfail"))
        skip = sum(v for k, v in counts.items() if k.startswith("skipped"))
        print(f"{n:34} {counts.total():6} {counts['both succeeded']:6} {counts['both raised']:6} "
              f"{xfail:6} {skip:6} {counts['failed']:6} {dt:6.1f}", flush=True)
        for sig, (msg, case) in failures.items():
            print(f"    FAIL {msg}\n         {case[:700]}", flush=True)
        report[n] = dict(counts=dict(counts), seconds=dt,
                         failures=[dict(message=m, case=c) for m, c in failures.values()])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
