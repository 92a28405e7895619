"""What the GradientMonitor costs per training step in the default run (``torch-bp fit``).

Trains the CLI's default network on digits (batch 64) for ``--steps`` optimizer steps under
several callback settings, interleaved ``--repeats`` times, and times each training step
(``on_train_batch_start`` -> ``on_train_batch_end``: forward, backward, callbacks, optimizer
step; the first ``--warmup`` steps left out) and each whole ``trainer.fit`` (with the
end-of-training image; without validation). Prints median and mean step times, whole-fit
times and their ratios to training without the monitor, and writes the numbers to
``experiments/results/monitor_overhead.json``. Matplotlib is imported once before the timings (a
one-time cost of about a second at the first gradient-flow image of a process).

    .venv/bin/python experiments/monitor_overhead.py            # ~1-2 min on 2 quiet cores
    .venv/bin/python experiments/monitor_overhead.py --threads 1 --clock cpu   # on a busy machine

``--clock cpu`` times each step by the process's CPU time instead of wall time: on a machine
shared with other jobs, wall time mostly measures waiting for a core (with 2 threads, each
op waits for both), CPU time with one thread measures the work.
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
from torch_bp.lightning.plots import figure_to_array, gradient_flow_figure


class StepTimer(L.Callback):
    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.times: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = self.clock()
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append((self._step, self.clock() - self._t0))


SETTINGS = {
    "monitor off": lambda: [],
    "monitor on (default: every 25 steps)": lambda: [GradientMonitor()],
    "monitor on, every step, no histograms": lambda: [GradientMonitor(every_n_steps=1, histogram_every_n_steps=0)],
    "monitor + GradientCheck (CLI default)": lambda: [GradientMonitor(), GradientCheck()],
}


def run(setting: str, steps: int, logdir: str, clock) -> tuple[list[tuple[int, float]], float]:
    L.seed_everything(0, verbose=False)
    timer = StepTimer(clock)
    callbacks = [timer] + SETTINGS[setting]()   # the timer runs first and last around the others
    trainer = L.Trainer(max_steps=steps, logger=TensorBoardLogger(logdir, name="overhead"), callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, log_every_n_steps=10, accelerator="cpu")
    t0 = clock()
    trainer.fit(BPModule(default_net()), DigitsDataModule())
    return timer.times, clock() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=260, help="optimizer steps per run (histograms at 0 and 250)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5, help="first steps of each run left out")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall time or process CPU time")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "monitor_overhead.json"))
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    if a.threads:
        torch.set_num_threads(a.threads)
    clock = time.perf_counter if a.clock == "wall" else time.process_time
    figure_to_array(gradient_flow_figure(["a"], {"a": 1.0}, {"a": 1.0}))  # import matplotlib once, outside the timings
    times = {s: [] for s in SETTINGS}
    fits = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory() as logdir:
        for _ in range(a.repeats):
            for s in SETTINGS:  # interleaved, so drifts in machine load hit every setting alike
                steps, fit = run(s, a.steps, logdir, clock)
                times[s] += [t for step, t in steps if step >= a.warmup]
                fits[s].append(fit)
    base = statistics.median(times["monitor off"])
    base_fit = statistics.median(fits["monitor off"])
    rows = []
    print(f"\nmodel: {type(default_net()).__name__}, digits, batch 64, {a.steps} steps x {a.repeats} runs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.clock} clock, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'setting':<42} {'median step ms':>15} {'mean step ms':>13} {'ratio (median)':>15} {'ratio (mean)':>13}"
          f" {'whole fit s':>12} {'ratio (fit)':>12}")
    for s, ts in times.items():
        med, mean, fit = statistics.median(ts), statistics.fmean(ts), statistics.median(fits[s])
        rows.append({"setting": s, "median_ms": 1e3 * med, "mean_ms": 1e3 * mean, "ratio": med / base,
                     "mean_ratio": mean / statistics.fmean(times["monitor off"]), "steps": len(ts),
                     "fit_s": fit, "fit_ratio": fit / base_fit})
        r = rows[-1]
        print(f"{s:<42} {1e3 * med:>15.2f} {1e3 * mean:>13.2f} {r['ratio']:>14.2f}x {r['mean_ratio']:>12.2f}x"
              f" {fit:>12.2f} {r['fit_ratio']:>11.2f}x")
    with open(a.out, "w") as f:
        json.dump({"model": type(default_net()).__name__, "steps": a.steps, "repeats": a.repeats,
                   "torch": torch.__version__, "threads": torch.get_num_threads(), "clock": a.clock,
                   "load_average": os.getloadavg()[0], "cores": os.cpu_count(),
                   "machine": platform.processor() or platform.machine(), "rows": rows}, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
