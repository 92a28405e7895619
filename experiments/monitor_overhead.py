"""What the GradientMonitor costs per training step in the default run (``torch-bp fit``).

Trains the CLI's default network on digits (batch 64) for ``--steps`` optimizer steps under
several callback settings, interleaved ``--repeats`` times, and times each training step
(``on_train_batch_start`` -> ``on_train_batch_end``: forward, backward, callbacks, optimizer
step). Prints a table of median step times and their ratio to training without the
monitor, and writes the numbers to ``experiments/monitor_overhead.json``.

    .venv/bin/python experiments/monitor_overhead.py            # ~1-2 min on 2 cores
    .venv/bin/python experiments/monitor_overhead.py --steps 60 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from torch_bp.lightning import BPModule, DigitsDataModule, GradientCheck, GradientMonitor, default_net


class StepTimer(L.Callback):
    def __init__(self):
        self.times: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append((self._step, time.perf_counter() - self._t0))


SETTINGS = {
    "monitor off": lambda: [],
    "monitor on (default: every 25 steps)": lambda: [GradientMonitor()],
    "monitor on, every step, no histograms": lambda: [GradientMonitor(every_n_steps=1, histogram_every_n_steps=0)],
    "monitor + GradientCheck (CLI default)": lambda: [GradientMonitor(), GradientCheck()],
}


def run(setting: str, steps: int, logdir: str) -> list[tuple[int, float]]:
    L.seed_everything(0, verbose=False)
    timer = StepTimer()
    callbacks = [timer] + SETTINGS[setting]()   # the timer runs first and last around the others
    trainer = L.Trainer(max_steps=steps, logger=TensorBoardLogger(logdir, name="overhead"), callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, log_every_n_steps=10, accelerator="cpu")
    trainer.fit(BPModule(default_net()), DigitsDataModule())
    return timer.times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5, help="first steps of each run left out")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "monitor_overhead.json"))
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    times = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory() as logdir:
        for _ in range(a.repeats):
            for s in SETTINGS:  # interleaved, so drifts in machine load hit every setting alike
                times[s] += [t for step, t in run(s, a.steps, logdir) if step >= a.warmup]
    base = statistics.median(times["monitor off"])
    rows = []
    print(f"\nmodel: {type(default_net()).__name__}, digits, batch 64, {a.steps} steps x {a.repeats} runs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'setting':<42} {'median step ms':>15} {'mean step ms':>13} {'ratio (median)':>15} {'ratio (mean)':>13}")
    for s, ts in times.items():
        med, mean = statistics.median(ts), statistics.fmean(ts)
        rows.append({"setting": s, "median_ms": 1e3 * med, "mean_ms": 1e3 * mean, "ratio": med / base,
                     "mean_ratio": mean / statistics.fmean(times["monitor off"]), "steps": len(ts)})
        print(f"{s:<42} {1e3 * med:>15.2f} {1e3 * mean:>13.2f} {rows[-1]['ratio']:>14.2f}x {rows[-1]['mean_ratio']:>12.2f}x")
    with open(a.out, "w") as f:
        json.dump({"model": type(default_net()).__name__, "steps": a.steps, "repeats": a.repeats,
                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "machine": platform.processor() or platform.machine(), "rows": rows}, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
