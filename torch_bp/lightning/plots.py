"""The gradient-flow view: mean |gradient| and error-signal norm per layer, in depth order.

The :class:`~torch_bp.lightning.monitor.GradientMonitor` logs this figure to TensorBoard
(tag ``bp/gradient_flow``); this module also renders it from the logged scalars of a finished
run, for documents::

    python -m torch_bp.lightning.plots runs/digits/version_0 docs/gradient_flow.png
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Mapping, Optional, Sequence

import numpy as np


def gradient_flow_figure(layers: Sequence[str], signal_norm: Mapping[str, float],
                         grad_mean_abs: Mapping[str, float], title: str = "gradient flow",
                         types: Optional[Mapping[str, str]] = None):
    """A matplotlib Figure (no pyplot state): two log-scale bar series over ``layers``.

    ``signal_norm[layer]``: norm of the error signal reaching the layer (grad wrt its output);
    ``grad_mean_abs[layer]``: mean |gradient| of the layer's parameters. Missing or
    non-positive values are left out of the bars; non-finite ones are marked in red.
    ``types[layer]`` (the module class) is added to the tick labels when given.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.45 * len(layers) + 2.0), 4.0), dpi=100)
    fig.subplots_adjust(bottom=0.32, left=0.1, right=0.97, top=0.9)  # fixed: tight_layout costs ~2x the render
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(layers))
    for offset, values, label, color in ((-0.2, signal_norm, "error-signal norm ||dE/d output||", "tab:blue"),
                                        (0.2, grad_mean_abs, "mean |dE/d weight|", "tab:orange")):
        v = np.array([values.get(n, np.nan) for n in layers], dtype=float)
        ok = np.isfinite(v) & (v > 0)
        ax.bar(x[ok] + offset, v[ok], width=0.4, label=label, color=color)
        bad = np.array([n in values and not math.isfinite(values[n]) for n in layers])
        if bad.any():
            ax.scatter(x[bad] + offset, np.ones(bad.sum()), marker="x", color="red", label=f"{label}: NaN/Inf")
    ax.set_yscale("log")
    ax.set_xticks(x)
    types = types or {}
    ax.set_xticklabels([f"{n} {types[n]}" if n in types else n for n in layers], rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("layer (input -> output)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def figure_to_array(fig) -> np.ndarray:
    """Render a Figure to an (H, W, 3) uint8 array (Agg canvas, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def read_log(logdir: str, prefix: str = "bp/") -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
    """The scalar series (tag -> [(step, value), ...]) of the event files in ``logdir``, and
    the layer types (layer -> module class) from the monitor's ``<prefix>layers`` table."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    types = {}
    if f"{prefix}layers/text_summary" in acc.Tags()["tensors"]:
        table = acc.Tensors(f"{prefix}layers/text_summary")[-1].tensor_proto.string_val[0].decode()
        for row in table.splitlines()[2:]:
            cells = [c.strip() for c in row.split("|")]   # | depth | layer | type | backward |
            types[cells[2]] = cells[3]
    return scalars, types


def flow_from_scalars(scalars: Mapping[str, list], step: Optional[int] = None, prefix: str = "bp/"):
    """(layers, signal_norm, grad_mean_abs, step) at ``step`` (default: the last logged one).

    The monitor's per-layer tags are ``<prefix><kind>/<depth>_<layer>`` (depth zero-padded, so
    TensorBoard lists them in depth order too); layers come back in depth order.
    """
    def series(prefix):
        out = {}
        for tag, values in scalars.items():
            if tag.startswith(prefix):
                depth, _, name = tag[len(prefix):].partition("_")
                out[(int(depth), name)] = dict(values)
        return out

    sig, gma = series(f"{prefix}error_signal_norm/"), series(f"{prefix}grad_mean_abs/")
    steps = sorted({s for d in list(sig.values()) + list(gma.values()) for s in d})
    if not steps:
        raise ValueError("no error_signal_norm/ or grad_mean_abs/ scalars in this log (was GradientMonitor on?)")
    step = steps[-1] if step is None else step
    keys = sorted(set(sig) | set(gma))
    return ([name for _, name in keys], {k[1]: d[step] for k, d in sig.items() if step in d},
            {k[1]: d[step] for k, d in gma.items() if step in d}, step)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Render the gradient-flow view of a logged run to a PNG.")
    p.add_argument("logdir", help="a run's TensorBoard directory (e.g. runs/digits/version_0)")
    p.add_argument("out", help="PNG file to write")
    p.add_argument("--step", type=int, default=None, help="training step (default: the last logged)")
    p.add_argument("--title", default=None, help="figure title (default: the step)")
    a = p.parse_args(argv)
    scalars, types = read_log(a.logdir)
    layers, sig, gma, step = flow_from_scalars(scalars, a.step)
    title = a.title or f"gradient flow at step {step}"
    fig = gradient_flow_figure(layers, sig, gma, title=title, types=types)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out)
    print(f"wrote {a.out} (step {step}, {len(layers)} layers)")


if __name__ == "__main__":
    main()
