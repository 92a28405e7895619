"""Regenerate the documentation's generated parts: python scripts/update_readme.py

- docs/layers.md: the layer table, from the registry (``<!-- layers:start -->``);
- docs/benchmarks.md: the benchmark tables, from experiments/results/bench_cpu.json (``<!-- bench:start -->``);
- README.md and docs/real-models.md: the backward coverage of transformers models, from
  experiments/results/real_models.json (``<!-- realmodels:start -->``).
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

import torch_bp  # noqa: E402
from experiments.benchmarks.readme import tables  # noqa: E402
from experiments.real_models import committed_table  # noqa: E402

GENERATED = [("layers", "docs/layers.md", torch_bp.registry.markdown_table),
             ("bench", "docs/benchmarks.md", tables),
             ("realmodels", "README.md", committed_table),
             ("realmodels", "docs/real-models.md", committed_table)]

for tag, path, make in GENERATED:
    page = root / path
    block = f"<!-- {tag}:start -->\n{make()}\n<!-- {tag}:end -->"
    page.write_text(re.sub(rf"<!-- {tag}:start -->.*<!-- {tag}:end -->", lambda m: block, page.read_text(),
                           flags=re.S))
