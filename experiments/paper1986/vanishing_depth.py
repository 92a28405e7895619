"""Vanishing gradients by depth (after Glorot & Bengio 2010): depth 2, 5, 10, 20, several seeds.

Nets: ``depth`` hidden layers of ``width`` units (torch_bp.functional.linear), an activation after
each, a linear 4-way output; biases 0; weights "standard" U[-1/sqrt(n_in), 1/sqrt(n_in)] or
"normalized" U[-sqrt(6/(n_in+n_out)), +sqrt(6/(n_in+n_out))] (Glorot & Bengio's two), or "he"
N(0, 2/n_in) for ReLU. Activations: sigmoid, tanh, ReLU (torch_bp's rules) and softsign
x / (1 + |x|) (torch_bp has no softsign rule, so its derivative comes from torch's autograd).
Task: the synthetic teacher of ``vanishing.py`` (x ~ N(0, I_32), 4 classes; 4096 training and
1024 test cases). Training as Glorot & Bengio: plain SGD, no momentum, cross-entropy (torch_bp's rule), a fixed
learning rate; but minibatch 32 (theirs: 10) and far fewer updates than their 5 million.
The seeds of one configuration share one minibatch order; each update loops over the seeds (at
these sizes a loop costs less CPU than the same step under torch.func.vmap); the statistics run
all seeds at once under vmap.

Recorded, on 300 fixed test cases, at log-spaced steps: per layer the mean, standard deviation
and 98th percentile of the activations and the share saturated (sigmoid < 0.02 or > 0.98,
|tanh| > 0.98, |softsign| > 0.9, ReLU exactly 0); at the start and the end, per layer the norm of
the back-propagated gradient dC/ds with respect to the layer's *pre-activation* s, of the weight
gradient dC/dW, and the mean singular value of the layer-to-layer Jacobian ds_{l+1}/ds_l =
W_{l+1} diag(f'(s_l)) (also on pre-activations); activation histograms at the end; test error.

    .venv/bin/python -m experiments.paper1986.vanishing_depth --quick
    .venv/bin/python -m experiments.paper1986.vanishing_depth
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

import torch_bp.functional as BF

from . import common as C
from .vanishing import N_IN, N_OUT, teacher_data

DEPTHS = (2, 5, 10, 20)
ALL_CONFIGS = [("sigmoid", "standard"), ("sigmoid", "normalized"), ("tanh", "standard"), ("tanh", "normalized"),
               ("softsign", "standard"), ("softsign", "normalized"), ("relu", "standard"), ("relu", "normalized"),
               ("relu", "he")]
# the default: Glorot & Bengio's Table 1 rows (sigmoid; tanh and softsign, standard and normalized) and ReLU with He's
CONFIGS = [("sigmoid", "standard"), ("tanh", "standard"), ("tanh", "normalized"), ("softsign", "standard"),
           ("softsign", "normalized"), ("relu", "he")]
ACT = {"sigmoid": BF.sigmoid, "tanh": BF.tanh, "relu": BF.relu, "softsign": torch.nn.functional.softsign}
DACT = {"sigmoid": lambda s: torch.sigmoid(s) * (1 - torch.sigmoid(s)), "tanh": lambda s: 1 - torch.tanh(s) ** 2,
        "relu": lambda s: (s > 0).to(s.dtype), "softsign": lambda s: 1 / (1 + s.abs()) ** 2}
HIST_RANGE = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0), "relu": (0.0, 4.0)}
# Glorot & Bengio (2010), Table 1: test error (%) of 5-hidden-layer nets of 1000 units ("N": normalized init)
GB_TABLE1 = {"Shapeset-3x2": {"softsign": 16.27, "softsign N": 16.06, "tanh": 27.15, "tanh N": 15.60,
                              "sigmoid": 82.61},
             "MNIST": {"softsign": 1.64, "softsign N": 1.72, "tanh": 1.76, "tanh N": 1.64, "sigmoid": 2.21}}


def saturated(act: str, a: torch.Tensor) -> torch.Tensor:
    if act == "sigmoid":
        return (a < 0.02) | (a > 0.98)
    if act == "tanh":
        return a.abs() > 0.98
    if act == "softsign":
        return a.abs() > 0.9
    return a == 0


def init_params(depth: int, width: int, init: str, seeds) -> dict[str, torch.Tensor]:
    sizes = [N_IN] + [width] * depth + [N_OUT]
    per = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        p = {}
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if init == "standard":
                w = (torch.rand(n_out, n_in, generator=g) * 2 - 1) / math.sqrt(n_in)
            elif init == "normalized":
                w = (torch.rand(n_out, n_in, generator=g) * 2 - 1) * math.sqrt(6 / (n_in + n_out))
            elif init == "he":
                w = torch.randn(n_out, n_in, generator=g) * math.sqrt(2 / n_in)
            else:
                raise ValueError(f"unknown init {init!r}")
            p[f"w{k}"], p[f"b{k}"] = w, torch.zeros(n_out)
        per.append(p)
    return {n: torch.stack([q[n] for q in per]) for n in per[0]}


def forward(p: dict, x: torch.Tensor, act: str, depth: int):
    """One net: logits, the pre-activations s_1..s_depth and the activations."""
    pre, acts = [], []
    h = x
    for k in range(depth):
        s = BF.linear(h, p[f"w{k}"], p[f"b{k}"])
        h = ACT[act](s)
        pre.append(s)
        acts.append(h)
    return BF.linear(h, p[f"w{depth}"], p[f"b{depth}"]), pre, acts


def _vforward(params, x, act, depth, x_batched=False):
    return torch.func.vmap(lambda p, xx: forward(p, xx, act, depth), in_dims=(0, 0 if x_batched else None))(params, x)


def _loss(logits, y):
    """Sum over seeds of each seed's mean cross-entropy (torch_bp's rule)."""
    return BF.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]), reduction="sum") / logits.shape[1]


def gradient_stats(params, x, y, act, depth) -> dict:
    """Per layer, median over seeds: ||dC/ds|| (s: pre-activation), ||dC/dW||, and the mean singular
    value of ds_{l+1}/ds_l = W_{l+1} diag(f'(s_l)); per seed: the ratio layer 1 / layer ``depth``."""
    q = {n: v.detach().requires_grad_(True) for n, v in params.items()}
    logits, pre, _ = _vforward(q, x, act, depth)
    names = [f"w{k}" for k in range(depth + 1)]
    g = torch.autograd.grad(_loss(logits, y), pre + [q[n] for n in names])
    gs, gw = g[:depth], g[depth:]
    sig = torch.stack([v.flatten(1).norm(dim=1) for v in gs], 1)        # (S, depth)
    wn = torch.stack([v.flatten(1).norm(dim=1) for v in gw], 1)         # (S, depth + 1)
    with torch.no_grad():
        sv = []
        for k in range(depth - 1):
            J = q[f"w{k + 1}"].detach().unsqueeze(1) * DACT[act](pre[k].detach()[:, :16]).unsqueeze(2)  # (S, 16, w, w)
            v = torch.linalg.svdvals(J).mean((1, 2)) if bool(J.isfinite().all()) else torch.full((J.shape[0],), math.nan)
            sv.append(v)
    sv = torch.stack(sv, 1) if sv else torch.zeros(sig.shape[0], 0)
    return {"error_signal": sig.median(0).values.tolist(), "weight_grad": wn.median(0).values.tolist(),
            "jacobian_sv": sv.median(0).values.tolist() if sv.numel() else [],
            "jacobian_sv_mean": float(sv.nanmean()) if sv.numel() else math.nan,
            "signal_ratio_per_seed": (sig[:, 0] / sig[:, -1]).tolist(),
            "weight_grad_ratio_per_seed": (wn[:, 0] / wn[:, depth - 1]).tolist()}


def activation_stats(params, x, act, depth, hist_bins: int = 0) -> dict:
    with torch.no_grad():
        _, _, acts = _vforward(params, x, act, depth)
    out = {"mean": [], "std": [], "p98": [], "saturated": []}
    hist = []
    for a in acts:                                                     # (S, N, width)
        f = a.flatten()
        out["mean"].append(float(f.mean()))
        out["std"].append(float(f.std()))
        out["p98"].append(float(torch.quantile(f.abs()[:: max(1, f.numel() // 200_000)].double(), 0.98)))
        out["saturated"].append(float(saturated(act, a).double().mean()))
        if hist_bins:
            lo, hi = HIST_RANGE[act]
            hist.append(torch.histc(f.clamp(lo, hi), hist_bins, lo, hi).tolist())
    if hist_bins:
        out["histogram"] = hist
        out["histogram_range"] = HIST_RANGE[act]
    return out


def run_config(act: str, init: str, depth: int, *, seeds: int, width: int, steps: int, lr: float, batch: int,
               data) -> dict:
    x_tr, y_tr, x_te, y_te = data
    params = init_params(depth, width, init, range(seeds))
    probe = x_te[:300]
    log_at = sorted({0, steps} | {int(round(steps ** (i / 6))) for i in range(1, 6)})
    g = torch.Generator().manual_seed(0)
    order = torch.cat([torch.randperm(len(x_tr), generator=g) for _ in range(steps * batch // len(x_tr) + 1)])
    g0 = gradient_stats(params, x_te[:256], y_te[:256], act, depth)
    over_training = []
    t0 = time.process_time()
    diverged = False
    for step in range(steps + 1):
        if step in log_at:
            st = activation_stats(params, probe, act, depth, hist_bins=40 if step == steps else 0)
            st["step"] = step
            over_training.append(st)
        if step == steps:
            break
        idx = order[step * batch:(step + 1) * batch]
        new = {n: [] for n in params}
        for s in range(seeds):     # a loop over seeds: at these sizes it costs less CPU than the vmapped step
            q = {n: v[s].detach().requires_grad_(True) for n, v in params.items()}
            logits, _, _ = forward(q, x_tr[idx], act, depth)
            grads = torch.autograd.grad(BF.cross_entropy(logits, y_tr[idx]), list(q.values()))
            for (n, v), gr in zip(q.items(), grads):
                new[n].append(v.detach() - lr * gr)
        params = {n: torch.stack(v) for n, v in new.items()}
        if not all(bool(v.isfinite().all()) for v in params.values()):
            diverged = True
    g1 = gradient_stats(params, x_te[:256], y_te[:256], act, depth)
    with torch.no_grad():
        logits, _, _ = _vforward(params, x_te, act, depth)
    err = (logits.argmax(-1) != y_te).double().mean(1)                  # (S,)
    err = torch.where(torch.isfinite(logits).all(-1).all(-1), err, torch.ones_like(err))
    return {"activation": act, "init": init, "depth": depth, "width": width, "seeds": seeds, "steps": steps,
            "lr": lr, "batch": batch, "test_error": err.tolist(), "test_error_mean": float(err.mean()),
            "test_error_sd": float(err.std()) if seeds > 1 else 0.0, "diverged": diverged,
            "grad_init": g0, "grad_end": g1, "activations": over_training,
            "cpu_seconds": round(time.process_time() - t0, 1)}


def run(*, depths=DEPTHS, configs=CONFIGS, seeds: int = 5, width: int = 128, steps: int = 300, lr: float = 0.05,
        batch: int = 32, tag: str, results_dir: str | None = None, fig_dir: str | None = None) -> dict:
    C.setup_threads(1)
    x_tr, y_tr = teacher_data(4096, seed=1)
    x_te, y_te = teacher_data(1024, seed=2)
    data = (x_tr, y_tr, x_te, y_te)
    results = []
    t0 = time.perf_counter()
    for depth in depths:
        for act, init in configs:
            results.append(run_config(act, init, depth, seeds=seeds, width=width, steps=steps, lr=lr, batch=batch,
                                      data=data))
    out = {"experiment": "vanishing_depth", "tag": tag, "depths": list(depths), "width": width, "seeds": seeds,
           "steps": steps, "lr": lr, "batch": batch, "task": "synthetic teacher of vanishing.py, 4 classes",
           "glorot_bengio_table1": GB_TABLE1, "results": results, "seconds": round(time.perf_counter() - t0, 1)}
    if fig_dir:
        figures(out, fig_dir)
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, f"vanishing_depth_{tag}.json"), "w") as f:
            json.dump(out, f, indent=1)
    return out


def _gmean(v):
    v = [a for a in v if a > 0 and math.isfinite(a)]
    return math.exp(sum(math.log(a) for a in v) / len(v)) if v else math.nan


def figures(out: dict, fig_dir: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(fig_dir, exist_ok=True)
    tag = out["tag"]
    colors = {"sigmoid": "tab:blue", "tanh": "tab:orange", "softsign": "tab:purple", "relu": "tab:green"}
    styles = {"standard": "-", "normalized": "--", "he": ":"}
    res = out["results"]
    # 1. test error and gradient ratio against depth
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for act, init in {(r["activation"], r["init"]) for r in res}:
        rs = sorted([r for r in res if r["activation"] == act and r["init"] == init], key=lambda r: r["depth"])
        d = [r["depth"] for r in rs]
        kw = dict(color=colors[act], ls=styles[init], marker="o", ms=3, label=f"{act}, {init}")
        axes[0].errorbar(d, [100 * r["test_error_mean"] for r in rs], yerr=[100 * r["test_error_sd"] for r in rs],
                         capsize=2, **kw)
        axes[1].plot(d, [_gmean(r["grad_init"]["signal_ratio_per_seed"]) for r in rs], **kw)
        axes[2].plot(d, [_gmean(r["grad_end"]["signal_ratio_per_seed"]) for r in rs], **kw)
    axes[0].set_ylabel(f"test error % (mean ± sd, {out['seeds']} seeds)")
    axes[1].set_title("||dC/ds|| layer 1 / last hidden layer, at init", fontsize=9)
    axes[2].set_title(f"the same after {out['steps']:,} updates", fontsize=9)
    for ax in axes[1:]:
        ax.set_yscale("log")
        ax.axhline(1, color="black", lw=0.5)
    for ax in axes:
        ax.set_xlabel("hidden layers")
        ax.set_xscale("log")
        ax.set_xticks(out["depths"], [str(d) for d in out["depths"]])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6.5)
    fig.suptitle(f"depth sweep, width {out['width']}, SGD minibatch {out['batch']}, lr {out['lr']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(fig_dir, f"vanishing_depth_{tag}.png"), dpi=110)
    plt.close(fig)
    # 2. saturation over training (their Figs. 2-3), depth 5 (or the deepest <= 5), standard init
    d5 = max([d for d in out["depths"] if d <= 5] or out["depths"][:1])
    acts = [a for a in ("sigmoid", "tanh", "softsign", "relu") if any(r["activation"] == a for r in res)]
    fig, axes = plt.subplots(2, len(acts), figsize=(3.8 * len(acts), 6.2), squeeze=False)
    for j, act in enumerate(acts):
        r = next((r for r in res if r["activation"] == act and r["init"] == "standard" and r["depth"] == d5), None)
        if r is None:
            continue
        steps = [max(1, s["step"]) for s in r["activations"]]
        for layer in range(d5):
            axes[0][j].plot(steps, [s["p98"][layer] for s in r["activations"]], marker=".", label=f"layer {layer + 1}")
            axes[1][j].plot(steps, [s["saturated"][layer] for s in r["activations"]], marker=".")
        axes[0][j].set_title(f"{act}, standard init, {d5} hidden layers", fontsize=9)
        axes[0][j].set_ylabel("98th percentile of |activation|", fontsize=8)
        axes[1][j].set_ylabel("share saturated", fontsize=8)
        for i in range(2):
            axes[i][j].set_xscale("log")
            axes[i][j].set_xlabel("update (1 = init)", fontsize=8)
            axes[i][j].grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("activation saturation over training, per layer (300 fixed test cases)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(fig_dir, f"vanishing_saturation_{tag}.png"), dpi=110)
    plt.close(fig)
    # 3. activation histograms at the end (their Fig. 4)
    fig, axes = plt.subplots(1, len(acts), figsize=(3.8 * len(acts), 3.4), squeeze=False)
    for j, act in enumerate(acts):
        r = next((r for r in res if r["activation"] == act and r["init"] == "standard" and r["depth"] == d5), None)
        if r is None:
            continue
        last = r["activations"][-1]
        lo, hi = last["histogram_range"]
        n = len(last["histogram"][0])
        centres = [lo + (hi - lo) * (i + 0.5) / n for i in range(n)]
        for layer, h in enumerate(last["histogram"]):
            tot = sum(h) or 1
            axes[0][j].plot(centres, [v / tot for v in h], label=f"layer {layer + 1}")
        axes[0][j].set_title(f"{act}, standard init: activations after {out['steps']:,} updates", fontsize=8.5)
        axes[0][j].set_yscale("log")
        axes[0][j].set_xlabel("activation value", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(fig_dir, f"vanishing_histograms_{tag}.png"), dpi=110)
    plt.close(fig)


def report(out: dict) -> str:
    depths = out["depths"]
    keys = []
    for r in out["results"]:
        if (r["activation"], r["init"]) not in keys:
            keys.append((r["activation"], r["init"]))
    by = {(r["activation"], r["init"], r["depth"]): r for r in out["results"]}
    rows = []
    for act, init in keys:
        row = [f"{act}, {init}"]
        for d in depths:
            r = by[(act, init, d)]
            row.append(f"{100 * r['test_error_mean']:.1f} ± {100 * r['test_error_sd']:.1f}" +
                       (" (diverged)" if r["diverged"] else ""))
        for d in depths:
            r = by[(act, init, d)]
            row.append(f"{_gmean(r['grad_init']['signal_ratio_per_seed']):.1e} → "
                       f"{_gmean(r['grad_end']['signal_ratio_per_seed']):.1e}")
        r5 = by.get((act, init, 5)) or by[(act, init, depths[0])]
        row.append(f"{r5['grad_init']['jacobian_sv_mean']:.2f} → {r5['grad_end']['jacobian_sv_mean']:.2f}")
        sat = r5["activations"]
        row.append(f"{100 * max(sat[0]['saturated']):.0f}% → {100 * max(sat[-1]['saturated']):.0f}%")
        rows.append(row)
    t = C.markdown_table(["activation, init"] + [f"test error %, {d} layers" for d in depths] +
                         [f"dC/ds layer 1 / last, {d} layers: init → end" for d in depths] +
                         ["mean Jacobian sv (5 layers): init → end", "most saturated layer (5 layers): init → end"],
                         rows)
    gb = out["glorot_bengio_table1"]
    ref = "; ".join(f"{ds}: " + ", ".join(f"{k} {v}" for k, v in t1.items()) for ds, t1 in gb.items())
    return (t + f"\n\n{out['seeds']} seeds per cell (mean ± sd over seeds); width {out['width']}, "
            f"{out['steps']:,} updates of minibatch {out['batch']}, lr {out['lr']}; ratios: geometric mean over "
            f"seeds\nGlorot & Bengio Table 1 (5 hidden layers of 1000, test error %): {ref}\n"
            f"{out['seconds']} s")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="depths 2 and 5, 2 seeds, width 32, 60 updates")
    ap.add_argument("--depths", help="comma-separated hidden-layer counts (default 2,5,10,20)")
    ap.add_argument("--seeds", type=int, help="default 5")
    ap.add_argument("--width", type=int, help="default 128 (Glorot & Bengio: 1000)")
    ap.add_argument("--steps", type=int, help="updates (default 300)")
    ap.add_argument("--configs", help="comma-separated activation:init (default the Table 1 rows and relu:he; "
                                      "'all' adds sigmoid:normalized, relu:standard, relu:normalized)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tag", help="name of this run (default quick/full)")
    ap.add_argument("--results-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--fig-dir", default=C.FIGURES)
    ap.add_argument("--replot", action="store_true", help="figures and table from the saved JSON")
    a = ap.parse_args(argv)
    tag = a.tag or ("quick" if a.quick else "full")
    if a.replot:
        out = json.load(open(os.path.join(a.results_dir, f"vanishing_depth_{tag}.json")))
        figures(out, a.fig_dir)
        print(report(out))
        return out
    depths = tuple(int(d) for d in a.depths.split(",")) if a.depths else ((2, 5) if a.quick else DEPTHS)
    configs = (ALL_CONFIGS if a.configs == "all" else [tuple(c.split(":")) for c in a.configs.split(",")]
               if a.configs else CONFIGS)
    out = run(depths=depths, configs=configs, seeds=a.seeds or (2 if a.quick else 5), width=a.width or (32 if a.quick else 128),
              steps=a.steps or (60 if a.quick else 300), lr=a.lr, batch=a.batch, tag=tag,
              results_dir=a.results_dir, fig_dir=a.fig_dir)
    print(report(out))
    return out


if __name__ == "__main__":
    main()
