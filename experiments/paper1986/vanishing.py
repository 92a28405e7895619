"""Vanishing and exploding gradients in deep MLPs (after Glorot & Bengio 2010), watched by GradientMonitor.

Net: 8 torch_bp.nn.Linear layers (32 -> 7 x 128 hidden -> 4), torch_bp activations between them,
biases 0. Task (synthetic, no download): x ~ N(0, I_32), label = argmax of a fixed random
teacher tanh(x A) B (4 classes); 4096 training and 1024 validation cases. Cross-entropy
(torch_bp's rule), SGD lr 0.05, momentum 0.9, minibatch 64, one seed per configuration.

Configurations (activation x init of the weights):
- "standard"  W ~ U[-1/sqrt(n_in), 1/sqrt(n_in)]            (Glorot & Bengio's "standard")
- "xavier"    W ~ U[-sqrt(6/(n_in+n_out)), +sqrt(6/(n_in+n_out))]   ("normalized")
- "he"        W ~ N(0, 2/n_in)                               (He et al. 2015, for ReLU)
- "he_x2"     W ~ N(0, 8/n_in), twice He's std: the exploding case
for sigmoid (standard, xavier), tanh (standard, xavier), ReLU (standard, he, he_x2).

Training runs through Lightning (torch_bp.lightning.BPModule) with the
torch_bp.lightning.GradientMonitor callback, which logs to TensorBoard, every few steps, the
error signal dE/ds reaching each layer (captured inside torch_bp's backward rules) and each
parameter's gradient norm; this script reads the same numbers back from the monitor to draw
the per-layer norms by depth and to print the table. It also computes, at init and at the end,
the mean singular value of each layer's Jacobian ds_{l+1}/ds_l = W_{l+1} diag(f'(s_l)).

    .venv/bin/python -m experiments.paper1986.vanishing --quick   # 150 steps per configuration
    .venv/bin/python -m experiments.paper1986.vanishing           # 1500 steps per configuration
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import time
import warnings

import torch

import torch_bp

from . import common as C

WIDTH, DEPTH, N_IN, N_OUT = 128, 8, 32, 4
CONFIGS = [("sigmoid", "standard"), ("sigmoid", "xavier"), ("tanh", "standard"), ("tanh", "xavier"),
           ("relu", "standard"), ("relu", "he"), ("relu", "he_x2")]
_ACT = {"sigmoid": torch_bp.nn.Sigmoid, "tanh": torch_bp.nn.Tanh, "relu": torch_bp.nn.ReLU}
_DACT = {"sigmoid": lambda s: torch.sigmoid(s) * (1 - torch.sigmoid(s)),
         "tanh": lambda s: 1 - torch.tanh(s) ** 2, "relu": lambda s: (s > 0).to(s.dtype)}


def make_net(activation: str, init: str, seed: int = 0, width: int = WIDTH, depth: int = DEPTH) -> torch.nn.Sequential:
    """Linear, act, Linear, act, ..., Linear (``depth`` Linear layers), weights by ``init``, biases 0."""
    g = torch.Generator().manual_seed(seed)
    sizes = [N_IN] + [width] * (depth - 1) + [N_OUT]
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch_bp.nn.Linear(n_in, n_out)
        with torch.no_grad():
            if init == "standard":
                lin.weight.copy_((torch.rand(n_out, n_in, generator=g) * 2 - 1) / math.sqrt(n_in))
            elif init == "xavier":
                lin.weight.copy_((torch.rand(n_out, n_in, generator=g) * 2 - 1) * math.sqrt(6 / (n_in + n_out)))
            elif init in ("he", "he_x2"):
                std = math.sqrt(2 / n_in) * (2 if init == "he_x2" else 1)
                lin.weight.copy_(torch.randn(n_out, n_in, generator=g) * std)
            else:
                raise ValueError(f"unknown init {init!r}")
            lin.bias.zero_()
        layers.append(lin)
        if k < depth - 1:
            layers.append(_ACT[activation]())
    return torch.nn.Sequential(*layers)


def teacher_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(0, I), y = argmax tanh(x A) B with a teacher fixed by seed 1234 (data by ``seed``)."""
    gt = torch.Generator().manual_seed(1234)
    A = torch.randn(N_IN, 64, generator=gt) / math.sqrt(N_IN)
    B = torch.randn(64, N_OUT, generator=gt)
    x = torch.randn(n, N_IN, generator=torch.Generator().manual_seed(seed))
    return x, (torch.tanh(x @ A) @ B).argmax(1)


def linear_names(net: torch.nn.Sequential, prefix: str = "net.") -> list[str]:
    return [prefix + n for n, m in net.named_children() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def jacobian_singular_values(net: torch.nn.Sequential, activation: str, x: torch.Tensor) -> list[float]:
    """Mean singular value of ds_{l+1}/ds_l = W_{l+1} diag(f'(s_l)) for each pair of Linear layers,
    averaged over the rows of ``x`` (Glorot & Bengio: ~0.5 standard, ~0.8 normalized init, tanh)."""
    lins = [m for m in net if isinstance(m, torch.nn.Linear)]
    s = lins[0](x)                                           # (N, width) pre-activations
    out = []
    for nxt in lins[1:]:
        J = nxt.weight.unsqueeze(0) * _DACT[activation](s).unsqueeze(1)   # (N, out, in)
        out.append(float(torch.linalg.svdvals(J).mean()) if bool(J.isfinite().all()) else math.nan)  # diverged
        s = nxt(_ACT[activation]()(s))
    return out


def run_config(activation: str, init: str, steps: int, *, every: int, tag: str, seed: int = 0,
               log_root: str | None = None, histograms: bool = True, n_jacobian: int = 256) -> dict:
    import lightning.pytorch as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    from torch_bp.lightning import BPModule, GradientMonitor

    class Record(L.Callback):
        """Keeps, after every logged step, the per-layer numbers the GradientMonitor just logged."""

        def __init__(self, monitor):
            self.monitor, self.rows = monitor, []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step % self.monitor.every_n_steps == 0:
                self.rows.append((trainer.global_step, dict(self.monitor.last_metrics)))

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    L.seed_everything(seed, verbose=False)
    net = make_net(activation, init, seed)
    names = linear_names(net)
    x_tr, y_tr = teacher_data(4096, seed=1)
    x_va, y_va = teacher_data(1024, seed=2)
    jac0 = jacobian_singular_values(net, activation, x_va[:n_jacobian])
    model = BPModule(net, loss="cross_entropy",
                     optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    monitor = GradientMonitor(every_n_steps=every, histogram_every_n_steps=every * 10 if histograms else 0)
    rec = Record(monitor)
    name = f"{activation}_{init}"
    logger = TensorBoardLogger(log_root or C.RUNS_ROOT, name=f"vanishing/{tag}", version=name)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=logger, callbacks=[monitor, rec],
                        log_every_n_steps=every, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=min(steps, 64), check_val_every_n_epoch=None,
                        num_sanity_val_steps=0)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, DataLoader(TensorDataset(x_tr, y_tr), batch_size=64, shuffle=True, generator=g),
                    DataLoader(TensorDataset(x_va, y_va), batch_size=1024))
    seconds = time.perf_counter() - t0
    jac1 = jacobian_singular_values(net, activation, x_va[:n_jacobian])

    def per_layer(metrics: dict, kind: str) -> list[float]:
        out = []
        for n in names:
            if kind == "signal":
                v = [val for k, val in metrics.items() if k.startswith("error_signal_norm/") and k.endswith("_" + n)]
            else:
                v = [val for k, val in metrics.items() if k == f"grad_norm/{n}.weight"]
            out.append(float(v[0]) if v else math.nan)
        return out

    history = [{"step": s, "error_signal": per_layer(m, "signal"), "grad_norm": per_layer(m, "grad")}
               for s, m in rec.rows]
    cm = trainer.callback_metrics
    flow_warnings = sorted({str(w.message).split(":")[1].strip().split(" ")[0] for w in caught
                            if "GradientMonitor" in str(w.message)})
    return {"activation": activation, "init": init, "steps": steps, "every": every, "layers": names,
            "history": history, "jacobian_sv_init": jac0, "jacobian_sv_end": jac1,
            "val_acc": float(cm.get("val/acc", math.nan)), "val_loss": float(cm.get("val/loss", math.nan)),
            "monitor_warnings": flow_warnings, "seconds": round(seconds, 1),
            "tensorboard": os.path.join(logger.save_dir, "vanishing", tag, name)}


def _ratio(v: list[float]) -> float:
    """First layer over last layer (dE/ds at the input side / at the output side)."""
    return v[0] / v[-1] if v[-1] and math.isfinite(v[0]) and math.isfinite(v[-1]) else math.nan


def _mean(v: list[float]) -> float:
    return sum(v) / len(v) if v else math.nan


def figure(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    colors = {"sigmoid": "tab:blue", "tanh": "tab:orange", "relu": "tab:green"}
    styles = {"standard": "-", "xavier": "--", "he": "--", "he_x2": ":"}
    for r in results:
        h = r["history"]
        if not h:
            continue
        depth = list(range(1, len(r["layers"]) + 1))
        for col, snap in enumerate((h[0], h[-1])):
            for row, key in enumerate(("error_signal", "grad_norm")):
                ax = axes[row][col]
                ax.plot(depth, snap[key], styles[r["init"]], color=colors[r["activation"]], marker="o", ms=3,
                        label=f"{r['activation']}, {r['init']}")
    for col, when in enumerate(("at initialisation (step 0)", "at the end of training")):
        axes[0][col].set_title(f"error signal ||dE/ds|| per layer, {when}", fontsize=9)
        axes[1][col].set_title(f"weight gradient ||dE/dW|| per layer, {when}", fontsize=9)
        axes[1][col].set_xlabel("layer (1 = next to the input, 8 = output layer)")
    for ax in axes.flat:
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("8-layer MLP, width 128: per-layer norms logged by torch_bp.lightning.GradientMonitor", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_over_training(results: list[dict], path: str) -> None:
    """Error signal reaching layer 1 over the one reaching layer 8, against the training step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sigmoid": "tab:blue", "tanh": "tab:orange", "relu": "tab:green"}
    styles = {"standard": "-", "xavier": "--", "he": "--", "he_x2": ":"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        steps = [h["step"] for h in r["history"]]
        ax.plot(steps, [_ratio(h["error_signal"]) for h in r["history"]], styles[r["init"]], marker=".",
                color=colors[r["activation"]], label=f"{r['activation']}, {r['init']}")
    ax.axhline(1, color="black", lw=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("||dE/ds|| layer 1 / layer 8")
    ax.set_title("error signal at the input side relative to the output side, during training", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(steps: int, every: int, *, tag: str, configs=CONFIGS, results_dir: str | None = None,
        fig_dir: str | None = None, log_root: str | None = None, histograms: bool = True,
        n_jacobian: int = 256) -> dict:
    """All ``configs``. ``histograms=False`` skips the monitor's histograms and gradient-flow images;
    ``n_jacobian``: validation cases over which the Jacobian singular values are averaged."""
    results = [run_config(a, i, steps, every=every, tag=tag, log_root=log_root, histograms=histograms,
                          n_jacobian=n_jacobian) for a, i in configs]
    out = {"experiment": "vanishing", "tag": tag, "steps": steps, "width": WIDTH, "depth": DEPTH,
           "results": results}
    if fig_dir:
        figure(results, os.path.join(fig_dir, f"vanishing_gradient_by_depth_{tag}.png"))
        figure_over_training(results, os.path.join(fig_dir, f"vanishing_ratio_over_training_{tag}.png"))
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, f"vanishing_{tag}.json"), "w") as f:
            json.dump(out, f, indent=1)
    return out


def report(out: dict) -> str:
    rows = []
    for r in out["results"]:
        h0, h1 = r["history"][0], r["history"][-1]
        rows.append([f"{r['activation']}, {r['init']}",
                     f"{_ratio(h0['error_signal']):.2g}", f"{_ratio(h1['error_signal']):.2g}",
                     f"{_ratio(h0['grad_norm']):.2g}", f"{_ratio(h1['grad_norm']):.2g}",
                     f"{_mean(r['jacobian_sv_init']):.2f}", f"{_mean(r['jacobian_sv_end']):.2f}",
                     f"{100 * r['val_acc']:.1f}%", ", ".join(r["monitor_warnings"]) or "-"])
    t = C.markdown_table(["activation, init", "dE/ds layer 1 / layer 8, init", "same, end",
                          "dE/dW layer 1 / layer 8, init", "same, end", "mean Jacobian sv, init", "same, end",
                          "val acc", "monitor warnings"], rows)
    secs = sum(r["seconds"] for r in out["results"])
    return t + f"\n\n{out['steps']} steps per configuration; training time {secs:.0f} s in all"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="150 steps per configuration")
    ap.add_argument("--steps", type=int, help="optimizer steps per configuration (default 1500, quick 150)")
    ap.add_argument("--every", type=int, help="GradientMonitor every_n_steps (default steps/30)")
    ap.add_argument("--configs", help="comma-separated activation:init pairs (default all 7)")
    ap.add_argument("--tag", help="name of this run (default quick/full)")
    ap.add_argument("--results-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--fig-dir", default=C.FIGURES)
    ap.add_argument("--log-root", default=None, help=f"TensorBoard root (default {C.RUNS_ROOT})")
    ap.add_argument("--replot", action="store_true", help="redraw the figures and table from the saved results")
    a = ap.parse_args(argv)
    steps = a.steps or (150 if a.quick else 1500)
    every = a.every or max(1, steps // 30)
    tag = a.tag or ("quick" if a.quick else "full")
    configs = [tuple(c.split(":")) for c in a.configs.split(",")] if a.configs else CONFIGS
    if a.replot:
        with open(os.path.join(a.results_dir, f"vanishing_{tag}.json")) as f:
            out = json.load(f)
        figure(out["results"], os.path.join(a.fig_dir, f"vanishing_gradient_by_depth_{tag}.png"))
        figure_over_training(out["results"], os.path.join(a.fig_dir, f"vanishing_ratio_over_training_{tag}.png"))
        print(report(out))
        return out
    t0 = time.perf_counter()
    out = run(steps, every, tag=tag, configs=configs, results_dir=a.results_dir, fig_dir=a.fig_dir,
              log_root=a.log_root)
    print(report(out))
    print(f"total {time.perf_counter() - t0:.1f} s; TensorBoard: {a.log_root or C.RUNS_ROOT}/vanishing/{tag}/")
    return out


if __name__ == "__main__":
    main()
