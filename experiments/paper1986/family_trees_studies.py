"""Family trees, the questions behind the headline table of ``family_trees.py``.

Three studies, each a subcommand with a ``--quick`` mode (the CI smoke size):

- ``long``: the paper's recipe run to 30,000 sweeps, with and without the 0.2% weight decay,
  and with both transcriptions of the post-warm-up rate (eps = 0.01 and eps = 0.001), all four
  as one ensemble. It records, per seed, the first sweep at which 90% and 100% of the training
  cases are right (all-units rule), and train / held-out accuracy every 250 sweeps.
- ``select``: the variant is chosen on *tuning* seeds 1000.. (disjoint from the evaluation
  seeds 0-99 of ``family_trees.py`` and from this module's ``heldout``) by a rule fixed
  before the run: most tuning seeds with all 100 training cases right; ties by the mean
  training accuracy, then by fewer sweeps. Held-out accuracy plays no part in the choice.
- ``heldout``: the chosen recipe on evaluation seeds 0.. with many random held-out sets of 4
  per seed (the same initial weights for every set of a seed), so that generalisation is a
  distribution: the held-out score of every (seed, set), its mean with a bootstrap 95%
  interval over seeds, the share of 4/4, the failure rate of every relation, and the person
  code read unit by unit (which unit carries nationality, and how far each other unit gives an
  English person and the Italian twin the same weight).

    .venv/bin/python -m experiments.paper1986.family_trees_studies long [--quick]
        (full: one process per recipe, --recipes R --tag full_<R without "paper_">; then
        ``long --replot`` merges the four into one table and figure)
    .venv/bin/python -m experiments.paper1986.family_trees_studies select [--quick]
    .venv/bin/python -m experiments.paper1986.family_trees_studies heldout [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from torch_bp import datasets

from . import common as C
from . import family_trees as FT

RESULTS = os.path.join(os.path.dirname(__file__), "results")
_P = FT.RECIPES["paper"]
LONG = {   # the Fig. 4 caption, two readings of the rate after sweep 20, with and without the decay
    "paper_eps0.01_decay": dict(_P),
    "paper_eps0.01_nodecay": dict(_P, decay=0.0),
    "paper_eps0.001_decay": dict(_P, eps=0.001),
    "paper_eps0.001_nodecay": dict(_P, eps=0.001, decay=0.0),
}
# candidates for the variant: (init, eps after the warm-up, decay) run to the largest sweep count,
# read at each listed sweep count
CANDIDATES = {
    "paper": dict(_P),
    "paper_nodecay": dict(_P, decay=0.0),
    "paper_decay2e-4": dict(_P, decay=0.0002),
    "init1_nodecay": dict(_P, init=1.0, decay=0.0),
    "init1_eps05_decay2e-4": dict(_P, init=1.0, eps=0.05, decay=0.0002),
    "init1_eps05_nodecay": dict(_P, init=1.0, eps=0.05, decay=0.0),
    "init1_eps02_nodecay": dict(_P, init=1.0, eps=0.02, decay=0.0),
}
CANDIDATE_SWEEPS = (1500, 3000, 5000)
TUNING_SEED0 = 1000
SPLIT_SEED_BASE = 100_000   # held-out set k of seed s is drawn from Generator(SPLIT_SEED_BASE + 100 s + k)


# --- shared pieces ---
def _data():
    person, relation, target, _ = datasets.family_trees(dtype=C.DTYPE)
    return torch.cat([person, relation], 1), target, relation.argmax(1)


def _ensemble(recipes: list[dict], init_seeds: list[int], splits: list[tuple[torch.Tensor, torch.Tensor]]):
    """Stacked initial parameters and a per-seed Schedule / decay for nets i = (recipes[i], init_seeds[i])."""
    net = FT.make_net()
    per = [C.uniform_init(net, [s], r["init"]) for r, s in zip(recipes, init_seeds)]
    params = {n: torch.cat([p[n] for p in per]) for n in per[0]}

    def col(k):
        return torch.tensor([float(r[k]) for r in recipes], dtype=C.DTYPE)

    switch = recipes[0]["switch"]
    assert all(r["switch"] == switch for r in recipes)
    sched = C.Schedule(col("eps"), col("alpha"), col("eps0"), col("alpha0"), switch)
    tr = torch.stack([a for a, _ in splits])
    te = torch.stack([b for _, b in splits])
    return net, params, sched, col("decay"), tr, te


def _right(y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(S, N) True where all 24 outputs of a case are on the right side of 0.5."""
    return ((y - d).abs() < 0.5).all(-1)


def _frac_at_least(share: float):
    return lambda y, d: _right(y, d).double().mean(-1) >= share


def _censored(first: torch.Tensor, cap: int, ks) -> dict:
    """Sweeps-to-event over all seeds, those without the event censored at ``cap``: the fraction
    with the event by each k, and the median over all seeds (None if fewer than half had it)."""
    n = first.numel()
    t = torch.where(first >= 0, first, torch.full_like(first, cap + 1)).double().sort().values
    med = float(t[(n - 1) // 2]) if n and t[(n - 1) // 2] <= cap else None
    return {"n": n, "events": int((first >= 0).sum()), "median_all_seeds": med,
            "fraction_by": {str(k): float(((first >= 0) & (first <= k)).double().mean()) for k in ks}}


def _bootstrap_mean(per_group: torch.Tensor, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``per_group`` (one value per seed), resampling seeds."""
    g = torch.Generator().manual_seed(seed)
    n = per_group.numel()
    i = torch.randint(0, n, (n_boot, n), generator=g)
    m = per_group.double()[i].mean(1)
    lo, hi = torch.quantile(m, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(lo), float(hi)


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    c = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    m = (p + z * z / (2 * n)) / (1 + z * z / n)
    return max(0.0, min(p, m - c)), min(1.0, max(p, m + c))


# --- unit-by-unit reading of the person code ---
def unit_analysis(W: torch.Tensor) -> list[dict]:
    """W: (6, 24) person -> person-unit weights of one net. Per unit: correlation of its 24 weights
    with nationality, generation and branch; ``twin_r``, the correlation over the 12 positions
    of the weights from the English people and from their Italian twins (1: the unit treats
    both trees alike; a pure nationality unit has no within-tree variation to correlate);
    ``nat_gap``, the gap between the English and Italian mean weight over the unit's weight range."""
    out = []
    a = FT.person_code_analysis(W)
    for u in range(W.shape[0]):
        eng, ita = W[u, :12], W[u, 12:]
        twin = torch.corrcoef(torch.stack([eng, ita]))[0, 1]
        rng = float(W[u].max() - W[u].min()) or 1.0
        out.append({"nationality_r": a["nationality_corr"][u], "generation_r": a["generation_corr"][u],
                    "branch_r": a["branch_corr"][u], "twin_r": float(twin.nan_to_num(0.0)),
                    "nat_gap": float((eng.mean() - ita.mean()).abs()) / rng,
                    "norm": float(W[u].norm())})
    return out


def unit_kind(u: dict, thr: float = 0.7) -> str:
    """The feature a unit carries: the largest |r| of nationality / generation / branch if above thr, else 'mixed'."""
    k = max(("nationality", "generation", "branch"), key=lambda f: abs(u[f + "_r"]))
    return k if abs(u[k + "_r"]) >= thr else "mixed"


def twin_nearest(W: torch.Tensor, nat_thr: float = 0.7) -> float:
    """Share of the 24 people whose nearest person of the other tree in the 6-unit code is the twin,
    after dropping the units with |r(nationality)| >= nat_thr (they only say which tree)."""
    a = FT.person_code_analysis(W)
    keep = [u for u in range(W.shape[0]) if abs(a["nationality_corr"][u]) < nat_thr]
    if not keep:
        return math.nan
    code = W[keep].T                                      # (24, units) code of each person
    eng, ita = code[:12], code[12:]
    dist = torch.cdist(eng, ita)                          # (12, 12)
    hits = (dist.argmin(1) == torch.arange(12)).sum() + (dist.argmin(0) == torch.arange(12)).sum()
    return float(hits) / 24


def isomorphism_summary(Ws: list[torch.Tensor]) -> dict:
    units = [u for W in Ws for u in unit_analysis(W)]
    kinds = {}
    for u in units:
        kinds.setdefault(unit_kind(u), []).append(u)

    def med(v):
        return float(torch.tensor(v, dtype=torch.float64).median()) if v else math.nan

    def q(v):
        return C.quartiles(torch.tensor(v, dtype=torch.float64)) if v else (math.nan,) * 3

    by_kind = {k: {"units": len(v), "share_of_units": len(v) / len(units),
                   "twin_r_quartiles": q([u["twin_r"] for u in v]),
                   "nat_gap_median": med([u["nat_gap"] for u in v])} for k, v in sorted(kinds.items())}
    whole = [FT.person_code_analysis(W)["twin_corr"] for W in Ws]
    nn = [twin_nearest(W) for W in Ws]
    nets_with_nat_unit = sum(any(unit_kind(u) == "nationality" for u in unit_analysis(W)) for W in Ws)
    return {"nets": len(Ws), "units": len(units), "by_kind": by_kind,
            "twin_r_all_units_quartiles": q([u["twin_r"] for u in units]),
            "twin_r_whole_code_median": med(whole),
            "nets_with_a_nationality_unit": nets_with_nat_unit,
            "twin_nearest_share_quartiles": q([v for v in nn if not math.isnan(v)])}


# --- long runs ---
def run_long(seeds: int, sweeps: int, *, tag: str, recipes=tuple(LONG), every: int = 100, save_every: int = 1000,
             batched: bool = True, fig_dir: str | None = None, results_dir: str | None = RESULTS) -> dict:
    """The LONG recipes (a subset with ``recipes``) on seeds 0..seeds-1, one ensemble. Train and
    held-out accuracy are recorded every ``every`` sweeps (so a first sweep at which 90% / 100% of
    the training cases are right is known to ``every`` sweeps); the results so far are written
    every ``save_every`` sweeps, so a run cut short still leaves what it reached (``sweeps_reached``).
    ``batched``: train with ``family_trees.batched_forward`` (torch's batched matmul, the same
    numbers as torch_bp's vmapped rules to rounding, several times cheaper per sweep)."""
    C.setup_threads(1)
    x, target, _ = _data()
    names = list(recipes)
    recs = [LONG[n] for n in names for _ in range(seeds)]
    init_seeds = [s for _ in names for s in range(seeds)]
    splits = FT.splits(init_seeds)                         # seed s: the held-out 4 of family_trees.py
    net, params, sched, decay, tr, te = _ensemble(recs, init_seeds, splits)
    curve = []
    t0, c0 = time.perf_counter(), time.process_time()
    state = {}

    def cb(t, p, idx, y):
        with torch.no_grad():
            y_te = C.ensemble_forward(net, p, x[te[idx]], x_batched=True)
        curve.append({"sweep": t, "train_all_units": _right(y, target[tr[idx]]).double().mean(-1).tolist(),
                      "test_all_units": _right(y_te, target[te[idx]]).double().mean(-1).tolist(),
                      "train_error": C.per_seed_sse(y, target[tr[idx]]).tolist()})
        state["person"] = p["person.weight"]
        if results_dir and (t % save_every == 0 or t == sweeps):
            out = _long_out(curve, names, seeds, sweeps, tag, every, state["person"],
                            time.perf_counter() - t0, time.process_time() - c0)
            out["forward"] = "family_trees.batched_forward" if batched else "torch_bp rules under vmap"
            _save(out, results_dir, f"family_trees_long_{tag}.json")

    C.train_ensemble(net, params, x[tr], target[tr], sweeps=sweeps, schedule=sched, decay=decay,
                     criterion=None, freeze_solved=False, band=(0.2, 0.8), x_batched=True,
                     callback=cb, callback_every=every, forward=FT.batched_forward if batched else None)
    out = _long_out(curve, names, seeds, sweeps, tag, every, state["person"],
                    time.perf_counter() - t0, time.process_time() - c0)
    out["forward"] = "family_trees.batched_forward" if batched else "torch_bp rules under vmap"
    if fig_dir:
        _figure_long(out, os.path.join(fig_dir, f"family_trees_long_{tag}.png"))
    _save(out, results_dir, f"family_trees_long_{tag}.json")
    return out


def _long_out(curve, names, seeds, sweeps, tag, every, person_w, seconds, cpu) -> dict:
    reached = curve[-1]["sweep"]
    ks = [k for k in (1500, 3000, 5000, 10000, 20000, 30000) if k <= reached]
    out = {"study": "long", "tag": tag, "seeds_per_recipe": seeds, "seeds": f"0-{seeds - 1}", "sweeps": sweeps,
           "sweeps_reached": reached, "held_out": "the 4 cases of family_trees.py for the same seed", "every": every,
           "recipes": {}, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1)}
    tr_all = torch.tensor([c["train_all_units"] for c in curve])          # (T, nets)
    sw = torch.tensor([c["sweep"] for c in curve])

    def first(mask):                                                      # (T, n) -> (n,) first sweep, -1 never
        hit = mask.any(0)
        return torch.where(hit, sw[mask.double().argmax(0)], torch.full_like(hit, -1, dtype=torch.long))

    for j, name in enumerate(names):
        sl = slice(j * seeds, (j + 1) * seeds)
        last = curve[-1]
        tr_end = torch.tensor(last["train_all_units"][sl])
        te_end = torch.tensor(last["test_all_units"][sl])
        at1500 = next((c for c in curve if c["sweep"] >= 1500), last)
        f90, f100 = first(tr_all[:, sl] >= 0.9), first(tr_all[:, sl] >= 1.0)
        r = {**LONG[name], "first_sweep_train_90": f90.tolist(), "first_sweep_train_100": f100.tolist(),
             "train_90": _censored(f90, reached, ks), "train_100": _censored(f100, reached, ks),
             "train_all_units_at_1500": at1500["train_all_units"][sl], "at_1500_sweep": at1500["sweep"],
             "train_all_units_end": tr_end.tolist(), "test_all_units_end": te_end.tolist(),
             "train_error_end": last["train_error"][sl],
             "train_all_units_end_mean": float(tr_end.mean()), "test_all_units_end_mean": float(te_end.mean()),
             "test_all_units_end_sd": float(te_end.std()) if seeds > 1 else 0.0,
             "test_all_units_end_mean_learned": float(te_end[tr_end >= 0.9].mean()) if (tr_end >= 0.9).any() else None,
             "person_weight_norm_end_median": float(person_w[sl].flatten(1).norm(dim=1).median()),
             "curve": [{"sweep": c["sweep"], "train_median": float(torch.tensor(c["train_all_units"][sl]).median()),
                        "test_mean": float(torch.tensor(c["test_all_units"][sl]).mean()),
                        "train_error_median": float(torch.tensor(c["train_error"][sl]).median()),
                        "train_per_seed": c["train_all_units"][sl]} for c in curve[::5] + [curve[-1]]]}
        learned = [person_w[sl][i] for i in range(seeds) if tr_end[i] >= 0.9]
        r["isomorphism_learned_seeds"] = isomorphism_summary(learned) if learned else None
        out["recipes"][name] = r
    return out


def merge_long(outs: list[dict]) -> dict:
    """One result from runs of single recipes (the full run starts one process per recipe)."""
    m = dict(outs[0], recipes={}, tag="full", sweeps_reached=min(o["sweeps_reached"] for o in outs),
             seconds=max(o["seconds"] for o in outs), cpu_seconds=sum(o["cpu_seconds"] for o in outs))
    for o in outs:
        m["recipes"].update(o["recipes"])
    return m


def _figure_long(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(out["recipes"]), figsize=(3.6 * len(out["recipes"]), 3.4), sharey=True,
                             squeeze=False)
    for ax, (name, r) in zip(axes[0], out["recipes"].items()):
        sw = [c["sweep"] for c in r["curve"]]
        per = torch.tensor([c["train_per_seed"] for c in r["curve"]])       # (T, seeds)
        for i in range(per.shape[1]):
            ax.plot(sw, per[:, i], color="tab:blue", lw=0.6, alpha=0.5)
        ax.plot(sw, [c["test_mean"] for c in r["curve"]], color="tab:red", lw=1.5, label="held-out, mean")
        ax.plot(sw, [c["train_median"] for c in r["curve"]], color="black", lw=1.5, label="train, median")
        ax.axvline(1500, color="gray", ls="--", lw=0.8)
        ax.set_title(name.replace("_", " "), fontsize=8.5)
        ax.set_xlabel("sweep", fontsize=8)
    axes[0][0].set_ylabel("share of cases right (all 24 units)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"family trees, paper recipe to {out['sweeps']:,} sweeps ({out['seeds_per_recipe']} seeds each; "
                 "thin: training share per seed; dashed: the caption's 1,500)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt_med(c: dict) -> str:
    m = c["median_all_seeds"]
    return "not reached" if m is None else f"{m:,.0f}"


def report_long(out: dict) -> str:
    rows = []
    for name, r in out["recipes"].items():
        s = out["seeds_per_recipe"]
        t90, t100 = r["train_90"], r["train_100"]
        fr = ", ".join(f"{int(k):,}: {100 * v:.0f}%" for k, v in t90["fraction_by"].items())
        rows.append([name, f"ε {r['eps']}, decay {r['decay']}", s,
                     f"{100 * float(torch.tensor(r['train_all_units_at_1500']).mean()):.1f}%",
                     f"{t90['events']}/{s}; median {_fmt_med(t90)}; by {fr}",
                     f"{t100['events']}/{s}; median {_fmt_med(t100)}",
                     f"{100 * r['train_all_units_end_mean']:.1f}%",
                     f"{100 * r['test_all_units_end_mean']:.1f}% ± {100 * r['test_all_units_end_sd']:.1f}"])
    t = C.markdown_table(["recipe", "rate, decay", "seeds", "train at 1,500", "seeds reaching 90% train "
                          "(first sweep; censored median over all seeds)", "seeds reaching 100% train",
                          f"train at {out['sweeps_reached']:,}",
                          f"held-out 4 at {out['sweeps_reached']:,} (mean ± sd over seeds)"],
                         rows)
    return t + f"\n\n{out['sweeps_reached']:,} of {out['sweeps']:,} sweeps of " \
               f"{len(out['recipes']) * out['seeds_per_recipe']} nets in {out['seconds']} s ({out['cpu_seconds']} s CPU)"


# --- selection of the variant on tuning seeds ---
def run_select(seeds: int, sweeps=CANDIDATE_SWEEPS, *, tag: str, results_dir: str | None = RESULTS) -> dict:
    C.setup_threads(1)
    x, target, _ = _data()
    names = list(CANDIDATES)
    tuning = list(range(TUNING_SEED0, TUNING_SEED0 + seeds))
    recipes = [CANDIDATES[n] for n in names for _ in tuning]
    init_seeds = [s for _ in names for s in tuning]
    net, params, sched, decay, tr, te = _ensemble(recipes, init_seeds, FT.splits(init_seeds))
    snaps = {}

    def cb(t, p, idx, y):
        if t in sweeps:
            with torch.no_grad():
                y_te = C.ensemble_forward(net, p, x[te[idx]], x_batched=True)
            snaps[t] = (_right(y, target[tr[idx]]).double().mean(-1), _right(y_te, target[te[idx]]).double().mean(-1))

    res = C.train_ensemble(net, params, x[tr], target[tr], sweeps=max(sweeps), schedule=sched, decay=decay,
                           criterion=None, freeze_solved=False, band=(0.2, 0.8), x_batched=True,
                           callback=cb, callback_every=math.gcd(*sweeps))
    cands = []
    for j, name in enumerate(names):
        sl = slice(j * seeds, (j + 1) * seeds)
        for k in sweeps:
            tr_acc, te_acc = snaps[k][0][sl], snaps[k][1][sl]
            cands.append({"candidate": f"{name}_{k}", "recipe": name, **CANDIDATES[name], "sweeps": k,
                          "train_perfect_seeds": int((tr_acc == 1).sum()), "train_mean": float(tr_acc.mean()),
                          "test_mean": float(te_acc.mean()), "test_4of4_seeds": int((te_acc == 1).sum())})
    # the rule, fixed before the run: most perfect-training seeds, then mean training accuracy, then fewer sweeps
    best = max(cands, key=lambda c: (c["train_perfect_seeds"], round(c["train_mean"], 6), -c["sweeps"]))
    out = {"study": "select", "tag": tag, "tuning_seeds": f"{tuning[0]}-{tuning[-1]}", "seeds": seeds,
           "rule": "most tuning seeds with all 100 training cases right; ties: higher mean training accuracy, "
                   "then fewer sweeps; held-out accuracy is not used",
           "candidates": cands, "chosen": best, "sweeps_run": res.sweeps_run,
           "seconds": round(res.seconds, 1), "cpu_seconds": round(res.cpu_seconds, 1)}
    _save(out, results_dir, f"family_trees_select_{tag}.json")
    return out


def report_select(out: dict) -> str:
    rows = [[c["candidate"] + (" **(chosen)**" if c is out["chosen"] or c == out["chosen"] else ""),
             f"±{c['init']}", c["eps"], c["decay"], f"{c['sweeps']:,}", f"{c['train_perfect_seeds']}/{out['seeds']}",
             f"{100 * c['train_mean']:.1f}%", f"{100 * c['test_mean']:.1f}%"] for c in out["candidates"]]
    t = C.markdown_table(["candidate", "init", "ε", "decay", "sweeps", "seeds with 100% train", "train (mean)",
                          "held-out 4 (mean; not used to choose)"], rows)
    return (t + f"\n\ntuning seeds {out['tuning_seeds']}; rule: {out['rule']}; chosen: {out['chosen']['candidate']}"
            f"\n{out['sweeps_run']:,} sweeps of {len(CANDIDATES) * out['seeds']} "
            f"nets in {out['seconds']} s ({out['cpu_seconds']} s CPU)")


def chosen_recipe(results_dir: str = RESULTS) -> tuple[str, dict]:
    """The recipe ``select`` chose (its full run's JSON), else family_trees.py's variant."""
    path = os.path.join(results_dir, "family_trees_select_full.json")
    if os.path.exists(path):
        c = json.load(open(path))["chosen"]
        return c["candidate"], {k: c[k] for k in FT.RECIPES["variant"]}
    return "variant", dict(FT.RECIPES["variant"])


# --- many held-out sets per seed ---
def run_heldout(seeds: int, sets: int, *, tag: str, recipe: tuple[str, dict] | None = None,
                sweeps: int | None = None, batched: bool = True, fig_dir: str | None = None,
                results_dir: str | None = RESULTS) -> dict:
    C.setup_threads(1)
    x, target, rel = _data()
    name, rec = recipe or chosen_recipe()
    rec = dict(rec, sweeps=sweeps or rec["sweeps"])
    init_seeds = [s for s in range(seeds) for _ in range(sets)]
    splits = [datasets.family_trees_split(4, torch.Generator().manual_seed(SPLIT_SEED_BASE + 100 * s + k))
              for s in range(seeds) for k in range(sets)]
    net, params, sched, decay, tr, te = _ensemble([rec] * len(init_seeds), init_seeds, splits)
    res = C.train_ensemble(net, params, x[tr], target[tr], sweeps=rec["sweeps"], schedule=sched, decay=decay,
                           criterion=None, freeze_solved=False, band=(0.2, 0.8), x_batched=True,
                           forward=FT.batched_forward if batched else None)
    with torch.no_grad():
        y_te = C.ensemble_forward(net, res.params, x[te], x_batched=True)
    right = _right(y_te, target[te])                              # (N, 4)
    train = _right(res.outputs, target[tr]).double().mean(-1)     # (N,)
    score = right.double().mean(-1)                               # (N,) share of the 4 right
    per_seed = score.reshape(seeds, sets).mean(1)
    four = (score == 1).double().reshape(seeds, sets).mean(1)
    fit = train == 1
    rel_names = datasets.RELATIONS
    per_rel = {}
    for r in range(len(rel_names)):
        m = rel[te] == r
        n, k = int(m.sum()), int((~right & m).sum())
        per_rel[rel_names[r]] = {"tested": n, "failed": k, "failure_rate": k / n if n else math.nan,
                                 "ci95": _wilson(k, n)}
    per_case = {}
    for i in range(len(target)):
        m = te == i
        n = int(m.sum())
        if n:
            who = datasets.PEOPLE[int(x[i, :24].argmax())]
            per_case[f"{who} {rel_names[int(rel[i])]}"] = {"tested": n, "failed": int((~right & m).sum())}
    worst = sorted(per_case.items(), key=lambda kv: -kv[1]["failed"] / kv[1]["tested"])[:10]
    out = {"study": "heldout", "tag": tag, "recipe": name, **rec,
           "forward": "family_trees.batched_forward" if batched else "torch_bp rules under vmap", "seeds": seeds, "sets_per_seed": sets,
           "nets": seeds * sets,
           "split_seeds": f"Generator({SPLIT_SEED_BASE} + 100 seed + set), family_trees_split(4), single-answer cases",
           "train_all_units_mean": float(train.mean()), "train_perfect_nets": int(fit.sum()),
           "heldout_mean": float(score.mean()), "heldout_mean_ci95_over_seeds": _bootstrap_mean(per_seed),
           "heldout_score_counts": {f"{j}/4": int((score == j / 4).sum()) for j in range(5)},
           "heldout_4of4_share": float((score == 1).double().mean()),
           "heldout_4of4_ci95_over_seeds": _bootstrap_mean(four, seed=1),
           "heldout_mean_given_train_perfect": float(score[fit].mean()) if fit.any() else None,
           "heldout_case_share_right": float(right.double().mean()),
           "per_seed_heldout_mean": per_seed.tolist(), "per_seed_4of4_share": four.tolist(),
           "per_seed_quartiles": C.quartiles(per_seed),
           "per_relation": per_rel, "worst_cases": dict(worst),
           "isomorphism": isomorphism_summary([res.params["person.weight"][i] for i in range(len(init_seeds))
                                               if bool(fit[i])] or [res.params["person.weight"][0]]),
           "isomorphism_nets": "nets with all 100 training cases right" if fit.any() else "net 0 (none fit)",
           "seconds": round(res.seconds, 1), "cpu_seconds": round(res.cpu_seconds, 1)}
    W0 = res.params["person.weight"][int(fit.nonzero()[0]) if fit.any() else 0]
    out["example_units"] = unit_analysis(W0)
    if fig_dir:
        _figure_heldout(out, os.path.join(fig_dir, f"family_trees_heldout_{tag}.png"))
    _save(out, results_dir, f"family_trees_heldout_{tag}.json")
    return out


def _figure_heldout(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    counts = out["heldout_score_counts"]
    a.bar(list(counts), list(counts.values()), color="tab:blue")
    a.set_title(f"held-out score of {out['nets']} nets ({out['seeds']} seeds x {out['sets_per_seed']} sets)",
                fontsize=8.5)
    a.set_xlabel("held-out cases right (all 24 units)", fontsize=8)
    rels = [r for r, v in out["per_relation"].items() if v["tested"]]
    rate = [out["per_relation"][r]["failure_rate"] for r in rels]
    lo = [max(0.0, out["per_relation"][r]["failure_rate"] - out["per_relation"][r]["ci95"][0]) for r in rels]
    hi = [max(0.0, out["per_relation"][r]["ci95"][1] - out["per_relation"][r]["failure_rate"]) for r in rels]
    b.bar(rels, rate, yerr=[lo, hi], color="tab:red", capsize=2)
    b.set_ylabel("failure rate when held out (95% CI)", fontsize=8)
    b.tick_params(axis="x", labelsize=7.5, rotation=30)
    b.set_title("which relations fail when held out", fontsize=8.5)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_heldout(out: dict) -> str:
    lo, hi = out["heldout_mean_ci95_over_seeds"]
    flo, fhi = out["heldout_4of4_ci95_over_seeds"]
    q = out["per_seed_quartiles"]
    lines = [f"recipe {out['recipe']} (init ±{out['init']}, ε {out['eps']}, decay {out['decay']}, {out['sweeps']:,} "
             f"sweeps); {out['seeds']} seeds x {out['sets_per_seed']} held-out sets = {out['nets']} nets",
             f"training: {100 * out['train_all_units_mean']:.1f}% of cases right, {out['train_perfect_nets']}/"
             f"{out['nets']} nets all 100",
             f"held-out (all-units): mean {100 * out['heldout_mean']:.1f}% (95% CI over seeds {100 * lo:.1f}-"
             f"{100 * hi:.1f}%); per-seed means: quartiles {100 * q[0]:.0f} / {100 * q[1]:.0f} / {100 * q[2]:.0f}%",
             f"4/4: {100 * out['heldout_4of4_share']:.1f}% of nets (95% CI {100 * flo:.1f}-{100 * fhi:.1f}%); "
             "score counts " + ", ".join(f"{k}: {v}" for k, v in out["heldout_score_counts"].items()),
             ""]
    rows = [[r, v["tested"], v["failed"], f"{100 * v['failure_rate']:.0f}%",
             f"{100 * v['ci95'][0]:.0f}-{100 * v['ci95'][1]:.0f}%"] if v["tested"] else
            [r, 0, "-", "never held out (its cases have two answers)" if r in ("uncle", "aunt") else "-", "-"]
            for r, v in out["per_relation"].items()]
    lines.append(C.markdown_table(["relation held out", "times held out", "failed", "failure rate", "95% CI"], rows))
    lines.append("")
    lines.append("most-failed cases: " + "; ".join(f"{k} {v['failed']}/{v['tested']}"
                                                  for k, v in out["worst_cases"].items()))
    lines.append("")
    lines.append(report_isomorphism(out["isomorphism"], out["isomorphism_nets"]))
    lines.append(f"\n{out['sweeps']:,} sweeps of {out['nets']} nets in {out['seconds']} s ({out['cpu_seconds']} s CPU)")
    return "\n".join(lines)


def report_isomorphism(iso: dict, nets: str) -> str:
    rows = [[k, v["units"], f"{100 * v['share_of_units']:.0f}%",
             " / ".join(f"{a:.2f}" for a in v["twin_r_quartiles"]), f"{v['nat_gap_median']:.2f}"]
            for k, v in iso["by_kind"].items()]
    t = C.markdown_table(["unit carries (largest abs(r) ≥ 0.7)", "units", "share", "twin r: quartiles",
                          "English-Italian mean gap / weight range (median)"], rows)
    q = iso["twin_nearest_share_quartiles"]
    return (f"person code unit by unit, {iso['nets']} nets ({nets}), {iso['units']} units:\n\n" + t +
            f"\n\ntwin r of the whole code (all 6 units pooled; the number family_trees.py reports): median "
            f"{iso['twin_r_whole_code_median']:.2f}; twin r unit by unit, all units: quartiles "
            + " / ".join(f"{a:.2f}" for a in iso["twin_r_all_units_quartiles"]) +
            f"\nnets with a nationality unit: {iso['nets_with_a_nationality_unit']}/{iso['nets']}; "
            f"share of people whose nearest person of the other tree (code without nationality units) is the twin: "
            f"quartiles over nets " + " / ".join(f"{100 * a:.0f}%" for a in q))


def _save(out: dict, results_dir: str | None, name: str) -> None:
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, name), "w") as f:
            json.dump(out, f, indent=1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", choices=["long", "select", "heldout"])
    ap.add_argument("--quick", action="store_true", help="CI smoke size (well under a minute)")
    ap.add_argument("--seeds", type=int, help="seeds (long: per recipe, default 10; select: 10; heldout: 10)")
    ap.add_argument("--sweeps", type=int, help="long: default 30,000; heldout: the recipe's")
    ap.add_argument("--sets", type=int, help="heldout: held-out sets per seed (default 20)")
    ap.add_argument("--tag", help="name of this run (default quick/full)")
    ap.add_argument("--recipes", help="long: comma-separated subset of " + ", ".join(LONG))
    ap.add_argument("--recipe", choices=["chosen", "variant"], default="chosen",
                    help="heldout: the recipe select chose (default) or family_trees.py's variant")
    ap.add_argument("--replot", action="store_true", help="tables and figures from the saved JSON (long, select, "
                                                          "heldout)")
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--fig-dir", default=C.FIGURES)
    a = ap.parse_args(argv)
    tag = a.tag or ("quick" if a.quick else "full")
    t0 = time.perf_counter()
    if a.study == "long":
        if a.replot:   # tag "full": the four single-recipe runs of the full study, merged
            names = [f"family_trees_long_full_{r[len('paper_'):]}.json" for r in LONG] if tag == "full" else \
                [f"family_trees_long_{tag}.json"]
            out = merge_long([json.load(open(os.path.join(a.results_dir, n))) for n in names])
            _figure_long(out, os.path.join(a.fig_dir, f"family_trees_long_{tag}.png"))
        else:
            out = run_long(a.seeds or (2 if a.quick else 10), a.sweeps or (600 if a.quick else 30000), tag=tag,
                           recipes=a.recipes.split(",") if a.recipes else tuple(LONG), every=50 if a.quick else 100,
                           save_every=200 if a.quick else 1000, fig_dir=a.fig_dir, results_dir=a.results_dir)
        print(report_long(out))
        for name, r in out["recipes"].items():
            if r["isomorphism_learned_seeds"]:
                print(f"\n{name}: " + report_isomorphism(r["isomorphism_learned_seeds"], "seeds with ≥ 90% train"))
    elif a.study == "select":
        out = run_select(a.seeds or (2 if a.quick else 10), (100, 200, 300) if a.quick else CANDIDATE_SWEEPS,
                         tag=tag, results_dir=a.results_dir)
        print(report_select(out))
    else:
        rec = ("variant", dict(FT.RECIPES["variant"])) if a.quick or a.recipe == "variant" else None
        out = run_heldout(a.seeds or (2 if a.quick else 10), a.sets or (3 if a.quick else 20), tag=tag, recipe=rec,
                          sweeps=a.sweeps or (300 if a.quick else None), fig_dir=a.fig_dir,
                          results_dir=a.results_dir)
        print(report_heldout(out))
    print(f"total {time.perf_counter() - t0:.1f} s")
    return out


if __name__ == "__main__":
    main()
