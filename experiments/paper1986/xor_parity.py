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
import math
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


# --- censored statistics: every seed counts, the unsolved ones at the cap ---
def censored(at: list[int], cap: int, ks=(250, 500, 1000, 2825, 5000, 10000, 20000, 50000)) -> dict:
    """Sweeps to solve over *all* seeds, an unsolved seed censored at ``cap`` (one common cap, so the
    Kaplan-Meier estimate is the empirical share solved by k): the share solved by each k <= cap,
    the median and quartiles over all seeds (None where fewer seeds than that had solved)."""
    t = sorted(v if v >= 0 else math.inf for v in at)
    n = len(t)

    def q(f):
        v = t[min(n - 1, math.ceil(f * n) - 1)]
        return None if v == math.inf else int(v)

    return {"seeds": n, "solved": sum(v >= 0 for v in at), "cap": cap, "q1_all": q(0.25), "median_all": q(0.5),
            "q3_all": q(0.75),
            "fraction_by": {str(k): sum(0 <= v <= k for v in at) / n for k in ks if k <= cap}}


def report_censored(out: dict) -> str:
    rows = []
    for name, r in out["results"].items():
        c = censored(r["solved_side_at"], r["max_sweeps"])
        f = lambda v: "not reached" if v is None else f"{v:,}"   # noqa: E731
        rows.append([name, f"{r['paper']:,} {r['paper_unit']}", c["seeds"], f"{c['solved']}/{c['seeds']}",
                     f"{f(c['median_all'])} ({f(c['q1_all'])} - {f(c['q3_all'])})",
                     ", ".join(f"{int(k):,}: {100 * v:.0f}%" for k, v in c["fraction_by"].items())])
    return C.markdown_table(["net", "chapter", "seeds", "solved (side of 0.5)",
                             "median (quartiles) over all seeds, unsolved = beyond the cap",
                             "share solved by sweep k"], rows)


# --- the unsolved XOR seeds: where they stopped ---
def _flat_grad(net, p: dict, x, d) -> tuple[torch.Tensor, float]:
    q = {n: v.detach().clone().requires_grad_(True) for n, v in p.items()}
    y = torch.func.functional_call(net, q, (x,))
    e = C.sse(y, d)
    g = torch.autograd.grad(e, list(q.values()))
    return torch.cat([v.flatten() for v in g]), float(e.detach())


def hessian_fd(net, p: dict, x, d, h: float = 1e-5) -> torch.Tensor:
    """Hessian of E by central differences of the gradient (the gradient from torch_bp's rules), symmetrised."""
    names = list(p)
    flat = torch.cat([p[n].flatten() for n in names])
    shapes = [p[n].shape for n in names]

    def unflat(v):
        out, i = {}, 0
        for n, sh in zip(names, shapes):
            k = math.prod(sh)
            out[n] = v[i:i + k].reshape(sh)
            i += k
        return out

    cols = []
    for i in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[i] = h
        gp, _ = _flat_grad(net, unflat(flat + e), x, d)
        gm, _ = _flat_grad(net, unflat(flat - e), x, d)
        cols.append((gp - gm) / (2 * h))
    H = torch.stack(cols, 1)
    return (H + H.T) / 2


def run_failures(full_json: str, *, tasks=("xor_2-1-1_skip", "xor_2-2-1"), tag: str, checkpoints=5,
                 results_dir: str | None = None, max_sweeps: int | None = None) -> dict:
    """Rerun each seed that never solved in ``full_json`` (its seeds and cap) with the plain per-seed
    loop (``common.train_reference``, the loop the tests check the ensemble against), and store where
    it ends: error, outputs, weights, gradient norm, Hessian eigenvalues (a local minimum has a
    gradient near 0 and no negative eigenvalue), and the error at ``checkpoints`` points of the run."""
    C.setup_threads(1)
    full = json.load(open(full_json))
    out = {"experiment": "xor_failures", "tag": tag, "source": os.path.basename(full_json), "results": {}}
    for name in tasks:
        r = full["results"][name]
        cap = max_sweeps or r["max_sweeps"]
        build, data, *_ = TASKS[name]
        x, d = data()
        seeds = [i for i, v in enumerate(r["solved_0.1_at"]) if v < 0]
        rows = []
        init = float(r["init"].split(",")[1].rstrip("]"))           # "U[-0.3,0.3]"
        for s in seeds:
            net = build().to(C.DTYPE)
            p = C.seed_params(C.uniform_init(net, [s], init), 0)
            trace = []
            p_end = C.train_reference(net, p, x, d, sweeps=cap, schedule=C.Schedule(r["eta"], r["alpha"]),
                                      trace=trace, trace_every=max(1, cap // checkpoints))
            g, e = _flat_grad(net, p_end, x, d)
            H = hessian_fd(net, p_end, x, d)
            ev = torch.linalg.eigvalsh(H)
            y = torch.func.functional_call(net, p_end, (x,)).detach()
            rows.append({"seed": s, "sweeps": cap, "error": e, "outputs": y.flatten().tolist(),
                         "targets": d.flatten().tolist(), "grad_norm": float(g.norm()),
                         "hessian_eigenvalues": ev.tolist(), "error_trace": trace,
                         "weights": {n: v.tolist() for n, v in p_end.items()}})
        out["results"][name] = {"cap": cap, "failed_seeds": seeds, "failures": rows}
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, f"xor_failures_{tag}.json"), "w") as f:
            json.dump(out, f, indent=1)
    return out


def report_failures(out: dict) -> str:
    rows = []
    for name, r in out["results"].items():
        for f in r["failures"]:
            ev = f["hessian_eigenvalues"]
            rows.append([name, f["seed"], f"{f['sweeps']:,}", f"{f['error']:.4f}",
                         " ".join(f"{v:.3f}" for v in f["outputs"]), f"{f['grad_norm']:.1e}",
                         f"{min(ev):.1e} / {max(ev):.1e}",
                         " → ".join(f"{e:.4f}" for _, e in f["error_trace"])])
        if not r["failures"]:
            rows.append([name, "none", "-", "-", "-", "-", "-", "-"])
    return C.markdown_table(["net", "seed", "sweeps", "final E", "outputs for 00, 01, 10, 11", "‖∂E/∂w‖",
                             "Hessian eigenvalues min / max", "E at 0, 1/5, ..., 5/5 of the run"], rows)


# --- the hidden code of the parity nets ---
def hidden_code(net, p: dict, x: torch.Tensor) -> dict:
    """Hidden units of one N-N-1 parity net on all 2^N patterns: is each unit (rounded at 0.5) a
    function of the number of on-bits, a threshold on it (on iff count >= k, or <= k), and are
    its input weights of one sign and similar size (what a counting unit needs)."""
    h = torch.sigmoid(torch.func.functional_call(net[:1], {"0.weight": p["0.weight"], "0.bias": p["0.bias"]},
                                                 (x,))).detach()          # (2^N, H)
    count = x.sum(1).long()
    on = h > 0.5
    N = x.shape[1]
    units = []
    for u in range(h.shape[1]):
        levels = [on[count == c, u] for c in range(N + 1)]
        is_fn = all(bool((v == v[0]).all()) for v in levels)
        seq = [bool(v[0]) for v in levels]
        flips = sum(a != b for a, b in zip(seq[:-1], seq[1:]))
        var_tot = float(h[:, u].var(unbiased=False))
        var_within = float(sum(h[count == c, u].var(unbiased=False) * (count == c).sum() for c in range(N + 1)) / len(h))
        w = p["0.weight"][u]
        units.append({"function_of_count": is_fn, "threshold_on_count": is_fn and flips == 1,
                      "threshold_at": next((i + 1 for i, (a, b) in enumerate(zip(seq[:-1], seq[1:])) if a != b), None)
                      if is_fn and flips == 1 else None,
                      "on_by_count": seq if is_fn else None,
                      "count_variance_share": 1 - var_within / var_tot if var_tot > 0 else 0.0,
                      "weights_one_sign": bool((w > 0).all() or (w < 0).all()),
                      "weight_cv": float(w.abs().std() / w.abs().mean())})
    ths = [u["threshold_at"] for u in units if u["threshold_on_count"]]
    return {"units": units, "all_functions_of_count": all(u["function_of_count"] for u in units),
            "all_thresholds": all(u["threshold_on_count"] for u in units),
            "distinct_thresholds": sorted(set(ths)), "thermometer": sorted(ths) == list(range(1, N + 1))}


def run_codes(seeds: int, max_sweeps: int, *, tag: str, results_dir: str | None = None) -> dict:
    """4-bit parity, the main run's recipe and seeds (same numbers as its table), each seed frozen at
    its solving sweep (within 0.1); the hidden code of every solved net."""
    name = "parity4_4-4-1"
    C.setup_threads(1)
    build, data, *_ = TASKS[name]
    x, d = data()
    net = build().to(C.DTYPE)
    params = C.uniform_init(net, range(seeds), 0.3)
    res = C.train_ensemble(net, params, x, d, sweeps=max_sweeps, schedule=C.Schedule(0.5, 0.9),
                           criterion=within(0.1), milestones={"side": within(0.5)})
    ok = (res.solved_at >= 0).nonzero().flatten().tolist()
    codes = {i: hidden_code(net, C.seed_params(res.params, i), x) for i in ok}
    units = [u for c in codes.values() for u in c["units"]]
    out = {"experiment": "parity_codes", "tag": tag, "task": name, "seeds": seeds, "max_sweeps": max_sweeps,
           "solved_0.1_at": res.solved_at.tolist(), "solved_side_at": res.milestones["side"].tolist(),
           "censored": censored(res.milestones["side"].tolist(), max_sweeps),
           "solved": len(ok),
           "nets_all_units_functions_of_count": sum(c["all_functions_of_count"] for c in codes.values()),
           "nets_all_units_thresholds": sum(c["all_thresholds"] for c in codes.values()),
           "nets_thermometer": sum(c["thermometer"] for c in codes.values()),
           "units": len(units), "units_function_of_count": sum(u["function_of_count"] for u in units),
           "units_threshold": sum(u["threshold_on_count"] for u in units),
           "units_weights_one_sign": sum(u["weights_one_sign"] for u in units),
           "count_variance_share_median": float(torch.tensor([u["count_variance_share"] for u in units]).median())
           if units else None,
           "threshold_histogram": {str(k): sum(u["threshold_at"] == k for u in units) for k in range(1, 5)},
           "distinct_threshold_sets": _counts(tuple(c["distinct_thresholds"]) for c in codes.values()),
           "codes": {str(i): c for i, c in codes.items()},
           "final_error_unsolved": {str(i): float(res.loss[i]) for i in range(seeds) if res.solved_at[i] < 0},
           "seconds": round(res.seconds, 1), "cpu_seconds": round(res.cpu_seconds, 1)}
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, f"parity_codes_{tag}.json"), "w") as f:
            json.dump(out, f, indent=1)
    return out


def _counts(items) -> dict:
    out = {}
    for k in items:
        out[str(list(k))] = out.get(str(list(k)), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def report_codes(out: dict) -> str:
    n, u = out["solved"], out["units"]
    c = out["censored"]
    return "\n".join([
        f"4-bit parity 4-4-1, {out['seeds']} seeds, cap {out['max_sweeps']:,}: {n} solved (within 0.1); "
        f"side of 0.5: median over all seeds {c['median_all']}, share solved by k: "
        + ", ".join(f"{int(k):,}: {100 * v:.0f}%" for k, v in c["fraction_by"].items()),
        f"hidden code of the {n} solved nets ({u} units), outputs rounded at 0.5:",
        f"- every unit a function of the number of on-bits: {out['nets_all_units_functions_of_count']}/{n} nets "
        f"({out['units_function_of_count']}/{u} units)",
        f"- every unit a threshold on that number (on iff count >= k, or <= k): {out['nets_all_units_thresholds']}/{n} "
        f"nets ({out['units_threshold']}/{u} units); thresholds k = 1..4 each once (the 'thermometer'): "
        f"{out['nets_thermometer']}/{n} nets",
        f"- units whose 4 input weights share one sign: {out['units_weights_one_sign']}/{u}; share of a unit's "
        f"activation variance explained by the count: median "
        f"{C.fmt(float(out['count_variance_share_median'] if u else 'nan'), 2)}",
        f"- threshold positions over units: {out['threshold_histogram']}; sets of distinct thresholds per net: "
        f"{out['distinct_threshold_sets']}",
        f"{out['seconds']} s ({out['cpu_seconds']} s CPU)"])


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
    ap.add_argument("--study", choices=["censored", "failures", "codes"],
                    help="censored: the saved run's sweeps over all seeds (no training); failures: rerun the "
                         "XOR seeds that never solved and show where they stop; codes: the parity nets' hidden code")
    a = ap.parse_args(argv)
    seeds = a.seeds or (30 if a.quick else 100)
    tag = a.tag or ("quick" if a.quick else "full")
    if a.study == "censored":
        out = json.load(open(os.path.join(a.results_dir, f"xor_parity_{tag}.json")))
        print(report_censored(out))
        return out
    if a.study == "failures":
        out = run_failures(os.path.join(a.results_dir, f"xor_parity_{tag}.json"), tag=tag,
                           results_dir=a.results_dir, max_sweeps=a.max_sweeps)
        print(report_failures(out))
        return out
    if a.study == "codes":
        out = run_codes(a.seeds or (10 if a.quick else 100), a.max_sweeps or (3000 if a.quick else 10000), tag=tag,
                        results_dir=a.results_dir)
        print(report_codes(out))
        return out
    t0 = time.perf_counter()
    out = run(seeds, tag=tag, quick=a.quick, tasks=a.tasks.split(","), max_sweeps=a.max_sweeps,
              results_dir=a.results_dir, fig_dir=a.fig_dir, log=not a.no_log)
    print(report(out))
    print(f"total {time.perf_counter() - t0:.1f} s; TensorBoard: {C.RUNS_ROOT}/xor_parity/")
    return out


if __name__ == "__main__":
    main()
