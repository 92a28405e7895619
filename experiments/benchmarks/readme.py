"""The README's benchmark tables, generated from the suite's JSON (experiments/results/bench_cpu.json).

``python scripts/update_readme.py`` writes them between ``<!-- bench:start -->`` and
``<!-- bench:end -->``; tests/test_experiments.py checks that the README carries exactly these
tables, so the numbers there are always those of the committed JSON.
"""
from __future__ import annotations

import json
import pathlib

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "bench_cpu.json"


def _x(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def _md(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def tables(path=RESULTS) -> str:
    """Markdown: the machine line, the models, the language-model head and every layer."""
    d = json.loads(pathlib.Path(path).read_text())
    out = [f"Machine: {d['machine']}; float32; times are medians of {d['reps']} interleaved repetitions "
           f"(`{pathlib.Path(path).name}`).", "", "Models (built from `torch.nn` or `transformers`, converted with `torch_bp.convert`):", ""]
    out.append(_md(["model", "backend", "grad rel err", "eager ms", "ours ms", "time x eager", "time x compile",
                    "saved MB torch", "saved MB ours", "saved x torch"],
                   [[m["model"], m["backend"], f"{m['grad_max_rel_err']:.1e}", f"{m['eager_ms']:.1f}",
                     f"{m['ours_ms']:.1f}", _x(m["time_vs_eager"]), _x(m["time_vs_compile"]),
                     f"{m['saved_MB_torch']:.1f}", f"{m['saved_MB_ours']:.1f}", _x(m["saved_ratio"], 3)]
                    for m in d["models"] if "backend" in m]))  # rows without: skipped (a note)
    if d.get("heads"):
        out += ["", f"Linear + cross-entropy head ({d['heads'][0]['head']}; peak: resident bytes of one "
                    "forward + backward beyond the inputs):", ""]
        out.append(_md(["candidate", "ms", "time x eager", "cpu time x eager", "saved MB", "saved x eager",
                        "peak MB", "peak x eager"],
                       [[h["candidate"], f"{h['ms']:.0f}", _x(h["time_vs_eager"]), _x(h["cpu_time_vs_eager"]),
                         f"{h['saved_MB']:.0f}", _x(h["saved_vs_eager"], 3), f"{h['peak_MB']:.0f}",
                         _x(h["peak_vs_eager"], 3)] for h in d["heads"]]))
    layers = {}
    for r in d["layers"]:
        layers.setdefault(r["layer"], {})[r.get("backend")] = r
    rows = []
    for name, by in layers.items():
        if None in by:  # no size, or an error: the suite's note
            rows.append([name] + ["-"] * 5 + [by[None].get("note", "")])
            continue
        runs = [by[b] for b in ("python", "cpp") if b in by]
        timed = runs[0].get("eager_ms") is not None  # rows filled by --saved-only have no times yet
        rows.append([name, f"{runs[0]['eager_ms']:.3g}" if timed else "-",
                     _x(by["python"].get("time_vs_eager")) if "python" in by else "-",
                     _x(by["cpp"].get("time_vs_eager")) if "cpp" in by else "-", f"{runs[0]['saved_MB_torch']:.3g}",
                     " / ".join(f"{r['saved_MB_ours']:.3g}" for r in runs),
                     " / ".join(_x(r["saved_ratio"], 3) for r in runs)])
    out += ["", "Layers (sizes in `experiments/benchmarks/layers.py`; two values: python / cpp):", ""]
    out.append(_md(["layer", "eager ms", "python x eager", "cpp x eager", "saved MB torch", "saved MB ours",
                    "saved x torch"], rows))
    return "\n".join(out)
