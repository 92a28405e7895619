"""Regenerate the README's generated parts: python scripts/update_readme.py

- the layer table, from the registry (``<!-- layers:start -->``);
- the benchmark tables, from experiments/results/bench_cpu.json (``<!-- bench:start -->``).
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

import torch_bp  # noqa: E402
from experiments.benchmarks.readme import tables  # noqa: E402

readme = root / "README.md"
text = readme.read_text()
for tag, body in (("layers", torch_bp.registry.markdown_table()), ("bench", tables())):
    block = f"<!-- {tag}:start -->\n{body}\n<!-- {tag}:end -->"
    text = re.sub(rf"<!-- {tag}:start -->.*<!-- {tag}:end -->", lambda m: block, text, flags=re.S)
readme.write_text(text)
