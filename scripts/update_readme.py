"""Regenerate the README's layer table from the registry: python scripts/update_readme.py"""
import pathlib
import re

import torch_bp

readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
table = "<!-- layers:start -->\n" + torch_bp.registry.markdown_table() + "\n<!-- layers:end -->"
readme.write_text(re.sub(r"<!-- layers:start -->.*<!-- layers:end -->", lambda m: table, text, flags=re.S))
