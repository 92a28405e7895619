import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/samples and tests/harness.py

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
