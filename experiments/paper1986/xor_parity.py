"""XOR and 4-bit parity as in the PDP companion chapter (Rumelhart, Hinton & Williams, ch. 8).

Nets (torch_bp.nn.Linear + Sigmoid, all units with biases):
- ``xor_2-1-1_skip``: 2 inputs, 1 hidden unit, and direct input -> output connections
  (the chapter's "XOR with one hidden unit": 558 sweeps at eta = 0.5);
- ``xor_2-2-1``: 2 inputs, 2 hidden, 1 output (the chapter reports local minima in "only two"
  of "hundreds" of runs, and Chauvin's ~245 presentations for H = 2);
- ``parity4_4-4-1``: 4 inputs, 4 hidden, 1 output (2,825 presentations at eta = 0.5).

Training: full batch, E = 1/2 summed squared error, eq. 9 with eta = 0.5 and alpha = 0.9
("in most of our simulations alpha was about 0.9"), every weight and bias U[-0.3, 0.3] (the
chapter's init range is not known to us; it is the Nature paper's). Sweeps to solve: the first
sweep with every output on the right side of 0.5 ("side"); also the first with every output
within 0.1 of its target ("0.1"); seeds not there by ``--max-sweeps`` are failures.

    .venv/bin/python -m experiments.paper1986.xor_parity --quick   # 30 seeds, cap 3,000 / 10,000
    .venv/bin/python -m experiments.paper1986.xor_parity           # 100 seeds, cap 50,000
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

import torch_bp
from torch_bp import datasets

from . import common as C


class SkipNet(torch.nn.Module):
    """n inputs -> h hidden, and output from [inputs, hidden] (direct connections), logistic units."""

    def __init__(self, n_in: int, n_hidden: int):
        super().__init__()
        self.hidden = torch_bp.nn.Linear(n_in, n_hidden)
        self.output = torch_bp.nn.Linear(n_in + n_hidden, 1)
        self.act = torch_bp.nn.Sigmoid()

    def forward(self, x):                                    # (N, n_in)
        h = self.act(self.hidden(x))                         # (N, n_hidden)
        return self.act(self.output(torch.cat([x, h], -1)))  # (N, 1)


def mlp(n_in: int, n_hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch_bp.nn.Linear(n_in, n_hidden), torch_bp.nn.Sigmoid(),
                               torch_bp.nn.Linear(n_hidden, 1), torch_bp.nn.Sigmoid())


# name: (net builder, data, paper's figure, what the figure counts, quick cap, full cap)
TASKS = {
    "xor_2-1-1_skip": (lambda: SkipNet(2, 1), lambda: datasets.xor(C.DTYPE), 558, "sweeps", 3000, 50000),
    "xor_2-2-1": (lambda: mlp(2, 2), lambda: datasets.xor(C.DTYPE), 245, "presentations (Chauvin, H=2)",
                  3000, 50000),
    "parity4_4-4-1": (lambda: mlp(4, 4), lambda: datasets.parity(4, C.DTYPE), 2825, "presentations",
                      10000, 50000),
}


def within(tol):
    return lambda y, d: C.all_correct(y, d, tol)


def run_task(name: str, seeds: int, max_sweeps: int, *, eta: float = 0.5, alpha: float = 0.9,
             init: float = 0.3, tag: str = "full", log: bool = True) -> dict:
    C.setup_threads(1)
    build, data, paper, unit, _, _ = TASKS[name]
    x, d = data()
    net = build().to(C.DTYPE)
    params = C.uniform_init(net, range(seeds), init)
    writer = C.writer_for("xor_parity", f"{name}_{tag}") if log else None
    res = C.train_ensemble(net, params, x, d, sweeps=max_sweeps, schedule=C.Schedule(eta, alpha),
                           criterion=within(0.1), milestones={"side": within(0.5)},
                           writer=writer, log_every=50)
    if writer is not None:
        writer.close()
    side, strict = C.summary_row(res.milestones["side"]), C.summary_row(res.solved_at)
    return {"task": name, "seeds": seeds, "max_sweeps": max_sweeps, "eta": eta, "alpha": alpha,
            "init": f"U[-{init},{init}]", "paper": paper, "paper_unit": unit,
            "side": side, "within_0.1": strict,
            "solved_side_at": res.milestones["side"].tolist(), "solved_0.1_at": res.solved_at.tolist(),
            "sweeps_run": res.sweeps_run, "seconds": round(res.seconds, 1),
            "cpu_seconds": round(res.cpu_seconds, 1)}


def run(seeds: int, *, tag: str, quick: bool, tasks=tuple(TASKS), max_sweeps: int | None = None,
        results_dir: str | None = None, fig_dir: str | None = None, log: bool = True) -> dict:
    out = {"experiment": "xor_parity", "tag": tag, "results": {}}
    for name in tasks:
        cap = max_sweeps or (TASKS[name][4] if quick else TASKS[name][5])
        out["results"][name] = run_task(name, seeds, cap, tag=tag, log=log)
    if fig_dir:
        _figure(out, os.path.join(fig_dir, f"xor_parity_sweeps_{tag}.png"))
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, f"xor_parity_{tag}.json"), "w") as f:
            json.dump(out, f, indent=1)
    return out


def _figure(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    res = out["results"]
    fig, axes = plt.subplots(1, len(res), figsize=(4.2 * len(res), 3.4), squeeze=False)
    for ax, (name, r) in zip(axes[0], res.items()):
        v = np.array(r["solved_side_at"], dtype=float)
        v = v[v >= 0]
        if v.size:
            ax.hist(v, bins=np.logspace(np.log10(max(1, v.min()) * 0.9), np.log10(r["max_sweeps"]), 30))
            ax.set_xscale("log")
        ax.axvline(r["paper"], color="tab:red", ls="--", label=f"chapter: {r['paper']:,} {r['paper_unit']}")
        ax.set_title(f"{name}: {v.size}/{r['seeds']} solved", fontsize=9)
        ax.set_xlabel("sweeps to solve (outputs on the right side of 0.5)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(out: dict) -> str:
    rows = []
    for name, r in out["results"].items():
        for crit, s in (("side of 0.5", r["side"]), ("within 0.1", r["within_0.1"])):
            rows.append([name, f"{r['paper']:,} {r['paper_unit']}", s["seeds"], crit,
                         f"{s['solved']}/{s['seeds']} ({100 * s['success_rate']:.0f}%) within {r['max_sweeps']:,}",
                         C.fmt(s["median"]), f"{C.fmt(s['q1'])} - {C.fmt(s['q3'])}",
                         f"{C.fmt(s['min'])} - {C.fmt(s['max'])}"])
    t = C.markdown_table(["net", "chapter", "seeds", "criterion", "solved", "median sweeps", "quartiles", "range"],
                         rows)
    secs = ", ".join(f"{n} {r['seconds']} s ({r['cpu_seconds']} s CPU)" for n, r in out["results"].items())
    return t + f"\n\ntraining time: {secs}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 seeds, smaller caps (about a minute)")
    ap.add_argument("--seeds", type=int, help="number of seeds (default 100, quick 30)")
    ap.add_argument("--max-sweeps", type=int, help="cap on sweeps for every task")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, from: " + ", ".join(TASKS))
    ap.add_argument("--tag", help="name of this run (default quick/full)")
    ap.add_argument("--results-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--fig-dir", default=C.FIGURES)
    ap.add_argument("--no-log", action="store_true", help="no TensorBoard log")
    a = ap.parse_args(argv)
    seeds = a.seeds or (30 if a.quick else 100)
    tag = a.tag or ("quick" if a.quick else "full")
    t0 = time.perf_counter()
    out = run(seeds, tag=tag, quick=a.quick, tasks=a.tasks.split(","), max_sweeps=a.max_sweeps,
              results_dir=a.results_dir, fig_dir=a.fig_dir, log=not a.no_log)
    print(report(out))
    print(f"total {time.perf_counter() - t0:.1f} s; TensorBoard: {C.RUNS_ROOT}/xor_parity/")
    return out


if __name__ == "__main__":
    main()
