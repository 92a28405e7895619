"""Symmetry detection (Rumelhart, Hinton & Williams 1986, Fig. 1), over many seeds.

Recipe (the paper's): 6-2-1 logistic net with biases (torch_bp.nn.Linear + Sigmoid), all 64
six-bit patterns, target 1 for the 8 symmetric ones, E = 1/2 sum of squared errors over the
whole set, one eq.-9 update per sweep with eps = 0.1, alpha = 0.9, every weight and bias
initialised U[-0.3, 0.3]. Stopping criterion (not stated in the paper): the first sweep at
which all 64 outputs are on the right side of 0.5; seeds not there by ``--max-sweeps`` count
as failures. For each solved seed, the learned weights are checked against the caption:
mirror weights equal and opposite, magnitudes 1:2:4, the two hidden units opposite.

    .venv/bin/python -m experiments.paper1986.symmetry --quick    # 100 seeds, cap 5,000 sweeps
    .venv/bin/python -m experiments.paper1986.symmetry            # 1,000 seeds, cap 50,000 sweeps
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

PAPER_SWEEPS = 1425


def make_net(hidden: int = 2) -> torch.nn.Module:
    """6-H-1 logistic net of torch_bp layers (parameter names 0.weight, 0.bias, 2.weight, 2.bias)."""
    return torch.nn.Sequential(torch_bp.nn.Linear(6, hidden), torch_bp.nn.Sigmoid(),
                               torch_bp.nn.Linear(hidden, 1), torch_bp.nn.Sigmoid()).to(C.DTYPE)


def analyse(p: dict[str, torch.Tensor]) -> dict:
    """How close one seed's weights are to the solution in the Fig. 1 caption."""
    W, b1 = p["0.weight"], p["0.bias"]                    # (2, 6), (2,)
    w2, b2 = p["2.weight"][0], p["2.bias"][0]             # (2,), ()
    scale = W.abs().amax(1)                               # (2,)
    antisym = ((W + W.flip(1)).abs().amax(1) / scale).max()            # 0 when w_i = -w_{5-i}
    pair = (W[:, :3].abs() + W.flip(1)[:, :3].abs()) / 2               # (2, 3): |w| of pairs (outer..inner)
    ratio = pair.sort(1).values / pair.sort(1).values[:, :1]           # (2, 3), expect (1, 2, 4)
    want = torch.tensor([1.0, 2.0, 4.0], dtype=W.dtype)
    ratio_err = ((ratio - want).abs() / want).amax()
    corr = torch.corrcoef(W)[0, 1]
    return {
        "antisymmetry_error": float(antisym),
        "pair_ratio_unit0": [round(float(v), 3) for v in ratio[0]],
        "pair_ratio_unit1": [round(float(v), 3) for v in ratio[1]],
        "ratio_error": float(ratio_err),
        "ratio_ordered_by_position": bool(((pair[:, 0] < pair[:, 1]) & (pair[:, 1] < pair[:, 2])).all()
                                          | ((pair[:, 0] > pair[:, 1]) & (pair[:, 1] > pair[:, 2])).all()),
        "hidden_corr": float(corr),
        "hidden_biases_negative": bool((b1 < 0).all()),
        "output_bias_positive": bool(b2 > 0),
        "output_weights_negative": bool((w2 < 0).all()),
    }


def paper_like(a: dict, tol_anti: float = 0.1, tol_ratio: float = 0.15) -> bool:
    """The caption's solution: antisymmetric within 10%, 1:2:4 within 15%, hidden units opposite."""
    return (a["antisymmetry_error"] < tol_anti and a["ratio_error"] < tol_ratio and a["hidden_corr"] < -0.9
            and a["hidden_biases_negative"] and a["output_bias_positive"])


def draw(p: dict[str, torch.Tensor], path: str, title: str) -> None:
    """The net drawn like Fig. 1: weights on the connections, biases inside the units."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    W, b1 = p["0.weight"].tolist(), p["0.bias"].tolist()
    w2, b2 = p["2.weight"][0].tolist(), float(p["2.bias"][0])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    inp = [(i * 1.0, 0.0) for i in range(6)]
    hid = [(1.25, 1.6), (3.75, 1.6)]
    out = (2.5, 3.0)
    wmax = max(abs(v) for row in W for v in row)

    def edge(a, b, w, frac):
        ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:red" if w < 0 else "tab:blue",
                lw=0.5 + 4 * abs(w) / wmax, alpha=0.7, zorder=1)
        lx, ly = a[0] + frac * (b[0] - a[0]), a[1] + frac * (b[1] - a[1])
        ax.text(lx, ly, f"{w:+.1f}", fontsize=7.5, ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8), zorder=3)

    for h in range(2):
        for i in range(6):
            edge(inp[i], hid[h], W[h][i], 0.25 if h == 0 else 0.4)
        edge(hid[h], out, w2[h], 0.5)
    for (x, y), label in zip(inp + hid + [out], [""] * 6 + [f"{b:+.1f}" for b in b1] + [f"{b2:+.1f}"]):
        ax.add_patch(plt.Circle((x, y), 0.28, fc="white", ec="black", zorder=2))
        ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=4)
    for i, (x, y) in enumerate(inp):
        ax.text(x, y - 0.5, f"x{i + 1}", ha="center", fontsize=9)
    ax.set_xlim(-0.6, 5.6)
    ax.set_ylim(-0.9, 3.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("weights on connections (blue +, red -), biases inside units", fontsize=9)

    import numpy as np
    xs = np.arange(6)
    bx.bar(xs - 0.2, W[0], 0.4, label="hidden 1")
    bx.bar(xs + 0.2, W[1], 0.4, label="hidden 2")
    bx.axhline(0, color="black", lw=0.5)
    bx.axvline(2.5, color="gray", ls="--", lw=0.8)
    bx.set_xticks(xs, [f"x{i + 1}" for i in xs])
    bx.set_ylabel("input weight")
    bx.legend(fontsize=8)
    bx.set_title("mirror weights equal and opposite", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(seeds: int, max_sweeps: int, *, eps: float = 0.1, alpha: float = 0.9, init: float = 0.3,
        tag: str = "full", results_dir: str | None = None, fig_dir: str | None = None,
        log: bool = True) -> dict:
    C.setup_threads(1)
    x, d = datasets.symmetry(dtype=C.DTYPE)
    net = make_net()
    params = C.uniform_init(net, range(seeds), init)
    writer = C.writer_for("symmetry", tag) if log else None
    res = C.train_ensemble(net, params, x, d, sweeps=max_sweeps, schedule=C.Schedule(eps, alpha),
                           writer=writer, log_every=100)
    if writer is not None:
        writer.close()
    row = C.summary_row(res.solved_at)
    solved = (res.solved_at >= 0).nonzero().flatten().tolist()
    analyses = {i: analyse(C.seed_params(res.params, i)) for i in solved}
    n_like = sum(paper_like(a) for a in analyses.values())
    out = {
        "experiment": "symmetry", "tag": tag, "seeds": seeds, "max_sweeps": max_sweeps,
        "recipe": {"net": "6-2-1 logistic, biases", "eps": eps, "alpha": alpha, "init": f"U[-{init},{init}]",
                   "loss": "1/2 summed squared error, full batch",
                   "criterion": "all 64 outputs on the right side of 0.5"},
        "summary": row, "paper_sweeps": PAPER_SWEEPS,
        "paper_like_solutions": n_like,
        "solved_within_paper_sweeps": int(((res.solved_at >= 0) & (res.solved_at <= PAPER_SWEEPS)).sum()),
        "error_at_solve_median": float(res.loss[res.solved_at >= 0].median()) if solved else None,
        "solved_at": res.solved_at.tolist(), "sweeps_run": res.sweeps_run, "seconds": round(res.seconds, 1),
        "cpu_seconds": round(res.cpu_seconds, 1),
    }
    if solved:
        # the figure: the lowest seed whose solution is the caption's, else the lowest solved seed
        like = [i for i in solved if paper_like(analyses[i])]
        pick = like[0] if like else solved[0]
        out["figure_seed"] = pick
        out["figure_seed_sweeps"] = int(res.solved_at[pick])
        out["figure_seed_analysis"] = analyses[pick]
        out["figure_seed_weights"] = {n: v.tolist() for n, v in C.seed_params(res.params, pick).items()}
        keys = ["antisymmetry_error", "ratio_error", "hidden_corr"]
        out["analysis_median_over_solved"] = {k: float(torch.tensor([a[k] for a in analyses.values()]).median())
                                             for k in keys}
        out["checks_passed"] = {   # how many solved seeds pass each check of paper_like
            "antisymmetry_error<0.1": sum(a["antisymmetry_error"] < 0.1 for a in analyses.values()),
            "ratio_1:2:4_within_15%": sum(a["ratio_error"] < 0.15 for a in analyses.values()),
            "hidden_corr<-0.9": sum(a["hidden_corr"] < -0.9 for a in analyses.values()),
            "hidden_biases_negative": sum(a["hidden_biases_negative"] for a in analyses.values()),
            "output_bias_positive": sum(a["output_bias_positive"] for a in analyses.values()),
        }
        if fig_dir:
            draw(C.seed_params(res.params, pick), os.path.join(fig_dir, f"symmetry_weights_{tag}.png"),
                 f"symmetry 6-2-1, seed {pick}: solved after {int(res.solved_at[pick])} sweeps "
                 f"(paper: {PAPER_SWEEPS})")
        if fig_dir:
            _histogram(res.solved_at, max_sweeps, os.path.join(fig_dir, f"symmetry_sweeps_{tag}.png"))
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, f"symmetry_{tag}.json"), "w") as f:
            json.dump(out, f, indent=1)
    return out


# --- 2, 4 and 8 hidden units, and the weights after continued training ---
def unit_checks(p: dict[str, torch.Tensor]) -> dict:
    """Per hidden unit of a 6-H-1 net: antisymmetry error and 1:2:4 error (as ``analyse``), for the
    units that matter (|output weight| at least 10% of the largest)."""
    W, w2 = p["0.weight"], p["2.weight"][0]                # (H, 6), (H,)
    used = w2.abs() >= 0.1 * w2.abs().max()
    scale = W.abs().amax(1)
    anti = (W + W.flip(1)).abs().amax(1) / scale           # (H,)
    pair = (W[:, :3].abs() + W.flip(1)[:, :3].abs()) / 2
    ps = pair.sort(1).values
    ratio = ps / ps[:, :1]
    want = torch.tensor([1.0, 2.0, 4.0], dtype=W.dtype)
    rerr = ((ratio - want).abs() / want).amax(1)           # (H,)
    return {"used": used.tolist(), "antisymmetry_error": anti.tolist(), "ratio_error": rerr.tolist(),
            "all_used_antisymmetric": bool((anti[used] < 0.1).all()),
            "used_units_1_2_4": int(((rerr < 0.15) & (anti < 0.1) & used).sum()), "used_units": int(used.sum())}


def run_hidden(seeds: int, sweeps: int, hiddens=(2, 4, 8), *, tag: str, results_dir: str | None = None,
               fig_dir: str | None = None) -> dict:
    """6-H-1 nets for each H in ``hiddens``, ``seeds`` seeds each (seed s: the weights the H-net draws
    from Generator(s), so H = 2 repeats the main run's seeds), trained ``sweeps`` sweeps without
    stopping at the solve. All H run as one ensemble: each net is padded to max(H) hidden units
    whose connections are zero and held at zero (``mask``), which leaves it the H-net exactly."""
    C.setup_threads(1)
    x, d = datasets.symmetry(dtype=C.DTYPE)
    Hmax = max(hiddens)
    big = make_net(Hmax)
    parts, masks = [], []
    for H in hiddens:
        p = C.uniform_init(make_net(H), range(seeds), 0.3)
        pad = {n: torch.zeros((seeds, *q.shape), dtype=C.DTYPE) for n, q in big.named_parameters()}
        m = {n: torch.zeros_like(v) for n, v in pad.items()}
        for n, v in p.items():
            sl = (slice(None),) + tuple(slice(0, k) for k in v.shape[1:])
            pad[n][sl], m[n][sl] = v, 1.0
        parts.append(pad)
        masks.append(m)
    params = {n: torch.cat([q[n] for q in parts]) for n in parts[0]}
    mask = {n: torch.cat([q[n] for q in masks]) for n in masks[0]}
    res = C.train_ensemble(big, params, x, d, sweeps=sweeps, schedule=C.Schedule(0.1, 0.9), freeze_solved=False,
                           mask=mask)
    ks = [k for k in (500, 1000, PAPER_SWEEPS, 2000, 5000, 10000, 20000, 50000) if k <= sweeps]
    out = {"experiment": "symmetry_hidden", "tag": tag, "seeds": seeds, "sweeps": sweeps, "hiddens": list(hiddens),
           "recipe": "as the main run (eps 0.1, alpha 0.9, U[-0.3, 0.3], full batch); training goes on after "
                     "the solving sweep", "results": {},
           "seconds": round(res.seconds, 1), "cpu_seconds": round(res.cpu_seconds, 1)}
    for j, H in enumerate(hiddens):
        sl = slice(j * seeds, (j + 1) * seeds)
        at = res.solved_at[sl]
        ok = (at >= 0).nonzero().flatten().tolist()

        def unpad(store, i):
            q = {n: v[sl][i] for n, v in store.items()}
            return {"0.weight": q["0.weight"][:H], "0.bias": q["0.bias"][:H], "2.weight": q["2.weight"][:, :H],
                    "2.bias": q["2.bias"]}

        still = C.all_correct(res.outputs[sl], d.expand(seeds, *d.shape))
        r = {"hidden": H, "summary": C.summary_row(at), "solved_at": at.tolist(),
             "censored": _censored(at, sweeps, ks), "still_solved_at_end": int(still[at >= 0].sum()),
             "error_end_median_solved": float(res.loss[sl][at >= 0].median()) if ok else None}
        if H == 2 and ok:
            a0 = [analyse(unpad(res.at_solve, i)) for i in ok]
            a1 = [analyse(unpad(res.params, i)) for i in ok]
            extra = torch.tensor([sweeps - int(at[i]) for i in ok], dtype=torch.float64)
            long_ok = [k for k, i in enumerate(ok) if sweeps - int(at[i]) >= sweeps // 2]
            r["at_solve"] = _checks(a0)
            r["at_end"] = _checks(a1)
            r["at_end_solved_in_first_half"] = _checks([a1[k] for k in long_ok])
            r["at_solve_solved_in_first_half"] = _checks([a0[k] for k in long_ok])
            r["extra_sweeps_median"] = float(extra.median())
            r["ratio_error_at_solve"] = [a["ratio_error"] for a in a0]
            r["ratio_error_at_end"] = [a["ratio_error"] for a in a1]
            r["example_pair_ratios_end"] = {str(ok[k]): [a1[k]["pair_ratio_unit0"], a1[k]["pair_ratio_unit1"]]
                                            for k in range(min(5, len(ok)))}
        if ok:
            u0 = [unit_checks(unpad(res.at_solve, i)) for i in ok]
            u1 = [unit_checks(unpad(res.params, i)) for i in ok]
            for when, us in (("units_at_solve", u0), ("units_at_end", u1)):
                r[when] = {"nets": len(us), "all_used_units_antisymmetric": sum(u["all_used_antisymmetric"] for u in us),
                           "used_units": sum(u["used_units"] for u in us),
                           "used_units_antisymmetric_and_1_2_4": sum(u["used_units_1_2_4"] for u in us),
                           "used_units_per_net_median": float(torch.tensor([float(u["used_units"]) for u in us])
                                                              .median())}
        out["results"][str(H)] = r
    if fig_dir:
        _figure_hidden(out, os.path.join(fig_dir, f"symmetry_hidden_{tag}.png"))
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, f"symmetry_hidden_{tag}.json"), "w") as f:
            json.dump(out, f, indent=1)
    return out


def _checks(analyses: list[dict]) -> dict:
    n = len(analyses)
    med = (lambda k: float(torch.tensor([a[k] for a in analyses]).median())) if n else (lambda k: None)
    return {"nets": n, "antisymmetry<0.1": sum(a["antisymmetry_error"] < 0.1 for a in analyses),
            "ratio_1:2:4_within_15%": sum(a["ratio_error"] < 0.15 for a in analyses),
            "hidden_corr<-0.9": sum(a["hidden_corr"] < -0.9 for a in analyses),
            "all_checks": sum(paper_like(a) for a in analyses),
            "ratio_error_median": med("ratio_error"), "antisymmetry_error_median": med("antisymmetry_error")}


def _censored(at: torch.Tensor, cap: int, ks) -> dict:
    """All seeds, unsolved ones censored at ``cap``: share solved by each k and the median over all seeds
    (None when fewer than half solved)."""
    n = at.numel()
    t = torch.where(at >= 0, at, torch.full_like(at, cap + 1)).sort().values
    med = int(t[(n - 1) // 2]) if n and int(t[(n - 1) // 2]) <= cap else None
    return {"median_all_seeds": med, "fraction_by": {str(k): float(((at >= 0) & (at <= k)).double().mean())
                                                      for k in ks}}


def _figure_hidden(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    for H, r in out["results"].items():
        at = np.array(r["solved_at"], dtype=float)
        ks = np.unique(np.concatenate([[0], np.sort(at[at >= 0]), [out["sweeps"]]]))
        a.step(ks, [((at >= 0) & (at <= k)).mean() for k in ks], where="post", label=f"6-{H}-1")
    a.axvline(PAPER_SWEEPS, color="tab:red", ls="--", lw=0.8, label=f"paper: {PAPER_SWEEPS}")
    a.set_xscale("log")
    a.set_xlabel("sweeps")
    a.set_ylabel(f"share of {out['seeds']} seeds solved")
    a.legend(fontsize=8)
    a.set_title("fraction solved by sweep k (all seeds; unsolved censored at the cap)", fontsize=9)
    r2 = out["results"].get("2", {})
    if "ratio_error_at_solve" in r2:
        e0, e1 = np.array(r2["ratio_error_at_solve"]), np.array(r2["ratio_error_at_end"])
        bins = np.linspace(0, max(1.0, float(np.nanmax(np.concatenate([e0, e1])))), 40)
        b.hist(e0, bins=bins, alpha=0.6, label="at the solving sweep")
        b.hist(e1, bins=bins, alpha=0.6, label=f"after {out['sweeps']:,} sweeps")
        b.axvline(0.15, color="black", ls="--", lw=0.8, label="15%")
        b.set_xlabel("largest relative error of the pair magnitudes against 1:2:4")
        b.set_ylabel("solved seeds (6-2-1)")
        b.legend(fontsize=8)
        b.set_title("6-2-1: the 1:2:4 ratio at the solve and after continued training", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_hidden(out: dict) -> str:
    rows = []
    for H, r in out["results"].items():
        s, c = r["summary"], r["censored"]
        fr = ", ".join(f"{int(k):,}: {100 * v:.0f}%" for k, v in c["fraction_by"].items())
        ua = r.get("units_at_end", {})
        rows.append([f"6-{H}-1", s["seeds"], f"{s['solved']}/{s['seeds']} within {out['sweeps']:,}",
                     C.fmt(float(c["median_all_seeds"])) if c["median_all_seeds"] is not None else "not reached",
                     f"{C.fmt(s['q1'])} - {C.fmt(s['q3'])}", fr,
                     f"{ua.get('all_used_units_antisymmetric', 0)}/{ua.get('nets', 0)}",
                     f"{ua.get('used_units_antisymmetric_and_1_2_4', 0)}/{ua.get('used_units', 0)}"])
    t = C.markdown_table(["net", "seeds", "solved", "median sweeps, all seeds (censored)", "quartiles (solved)",
                          "solved by sweep k", "nets with every used unit antisymmetric (end)",
                          "used units antisymmetric and 1:2:4 within 15% (end)"], rows)
    lines = [t]
    r2 = out["results"].get("2", {})
    if "at_solve" in r2:
        a0, a1 = r2["at_solve"], r2["at_end"]
        h0, h1 = r2["at_solve_solved_in_first_half"], r2["at_end_solved_in_first_half"]
        lines += ["", C.markdown_table(
            ["6-2-1, solved seeds", "nets", "antisymmetric", "1:2:4 within 15%", "units opposite", "all checks",
             "median 1:2:4 error"],
            [["at the solving sweep", a0["nets"], a0["antisymmetry<0.1"], a0["ratio_1:2:4_within_15%"],
              a0["hidden_corr<-0.9"], a0["all_checks"], f"{a0['ratio_error_median']:.3f}"],
             [f"after {out['sweeps']:,} sweeps (median {r2['extra_sweeps_median']:,.0f} past the solve)", a1["nets"],
              a1["antisymmetry<0.1"], a1["ratio_1:2:4_within_15%"], a1["hidden_corr<-0.9"], a1["all_checks"],
              f"{a1['ratio_error_median']:.3f}"],
             ["solved in the first half: at the solve", h0["nets"], h0["antisymmetry<0.1"],
              h0["ratio_1:2:4_within_15%"], h0["hidden_corr<-0.9"], h0["all_checks"],
              f"{h0['ratio_error_median']:.3f}" if h0["nets"] else "-"],
             [f"the same seeds after {out['sweeps']:,} sweeps", h1["nets"], h1["antisymmetry<0.1"],
              h1["ratio_1:2:4_within_15%"], h1["hidden_corr<-0.9"], h1["all_checks"],
              f"{h1['ratio_error_median']:.3f}" if h1["nets"] else "-"]])]
    lines.append(f"\n{out['sweeps']:,} sweeps of {len(out['hiddens']) * out['seeds']} nets in {out['seconds']} s "
                 f"({out['cpu_seconds']} s CPU)")
    return "\n".join(lines)


def _histogram(solved_at: torch.Tensor, cap: int, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    ok = solved_at[solved_at >= 0].double().numpy()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if ok.size:
        bins = np.logspace(np.log10(max(1, ok.min()) * 0.9), np.log10(cap), 40)
        ax.hist(ok, bins=bins, color="tab:blue")
        ax.set_xscale("log")
    ax.axvline(PAPER_SWEEPS, color="tab:red", ls="--", label=f"paper: {PAPER_SWEEPS}")
    ax.set_xlabel("sweeps to solve (all outputs on the right side of 0.5)")
    ax.set_ylabel("seeds")
    ax.set_title(f"symmetry: {ok.size}/{solved_at.numel()} seeds solved within {cap:,} sweeps", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(out: dict) -> str:
    s = out["summary"]
    rows = [["paper (Nature Fig. 1)", "1 run", "-", f"{PAPER_SWEEPS:,}", "-", "-"],
            [f"ours, {out['tag']}", s["seeds"], f"{s['solved']}/{s['seeds']} ({100 * s['success_rate']:.0f}%) "
             f"within {out['max_sweeps']:,}", C.fmt(s["median"]), f"{C.fmt(s['q1'])} - {C.fmt(s['q3'])}",
             f"{C.fmt(s['min'])} - {C.fmt(s['max'])}"]]
    t = C.markdown_table(["", "seeds", "solved", "median sweeps", "quartiles", "range"], rows)
    lines = [t, "", f"solved within the paper's {PAPER_SWEEPS:,} sweeps: "
                    f"{out['solved_within_paper_sweeps']}/{s['seeds']}; median error E at the solving sweep: "
                    f"{C.fmt(out['error_at_solve_median'] or float('nan'), 2)}"]
    if "figure_seed" in out:
        a = out["figure_seed_analysis"]
        m = out["analysis_median_over_solved"]
        lines += [f"solutions like the caption's (antisymmetric within 10%, 1:2:4 within 15%, hidden units "
                  f"opposite, signs of biases as stated): {out['paper_like_solutions']}/{s['solved']} solved seeds",
                  "solved seeds passing each check: " + ", ".join(f"{k} {v}" for k, v in out["checks_passed"].items()),
                  f"median over solved seeds: antisymmetry error {m['antisymmetry_error']:.3f}, 1:2:4 error "
                  f"{m['ratio_error']:.3f}, hidden-unit correlation {m['hidden_corr']:.3f}",
                  f"figure seed {out['figure_seed']} ({out['figure_seed_sweeps']} sweeps): antisymmetry error "
                  f"{a['antisymmetry_error']:.3f}, pair ratios {a['pair_ratio_unit0']} / {a['pair_ratio_unit1']}, "
                  f"hidden correlation {a['hidden_corr']:.3f}, hidden biases negative: {a['hidden_biases_negative']}, "
                  f"output bias positive: {a['output_bias_positive']}"]
    lines.append(f"{out['sweeps_run']:,} sweeps of {s['seeds']} nets in {out['seconds']} s "
                 f"({out['cpu_seconds']} s CPU)")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 seeds, cap 5,000 sweeps (about a minute)")
    ap.add_argument("--seeds", type=int, help="number of seeds (default 1000, quick 100)")
    ap.add_argument("--max-sweeps", type=int, help="cap on sweeps (default 50000, quick 5000)")
    ap.add_argument("--tag", help="name of this run (default quick/full)")
    ap.add_argument("--results-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--fig-dir", default=C.FIGURES)
    ap.add_argument("--no-log", action="store_true", help="no TensorBoard log")
    ap.add_argument("--hidden", help="the hidden-unit study instead: comma-separated H (e.g. 2,4,8), trained "
                                     "past the solve (default 100 seeds x 10,000 sweeps; quick 10 x 1,000)")
    a = ap.parse_args(argv)
    if a.hidden:
        tag = a.tag or ("quick" if a.quick else "full")
        t0 = time.perf_counter()
        out = run_hidden(a.seeds or (10 if a.quick else 100), a.max_sweeps or (1000 if a.quick else 10000),
                         tuple(int(h) for h in a.hidden.split(",")), tag=tag, results_dir=a.results_dir,
                         fig_dir=a.fig_dir)
        print(report_hidden(out))
        print(f"total {time.perf_counter() - t0:.1f} s")
        return out
    seeds = a.seeds or (100 if a.quick else 1000)
    cap = a.max_sweeps or (5000 if a.quick else 50000)
    tag = a.tag or ("quick" if a.quick else "full")
    t0 = time.perf_counter()
    out = run(seeds, cap, tag=tag, results_dir=a.results_dir, fig_dir=a.fig_dir, log=not a.no_log)
    print(report(out))
    print(f"total {time.perf_counter() - t0:.1f} s; TensorBoard: {C.RUNS_ROOT}/symmetry/{tag}")
    return out


if __name__ == "__main__":
    main()
