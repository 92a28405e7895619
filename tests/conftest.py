import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/samples and tests/harness.py

torch.set_num_threads(min(2, torch.get_num_threads()))

# Without a GPU, Triton's interpreter runs the Triton kernels on CPU tensors (tests/test_triton.py).
# Triton reads this when it is first imported (its own library functions are decorated then), so
# it is set here, before any test module can import triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    _deselect_uncompiled(config, items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# --- backends: the layer harness runs once per backend (torch_bp.backend) ---
# Rows whose Functions have a compiled path run under "python" and "cpp"; the other rows run
# the same code under both, so they run once. The cpp runs are skipped, with the reason, only
# when the compiled backend is unavailable here (torch_bp.backend_info() says why).
_PER_BACKEND_MODULES = {"test_layers"}


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__ in _PER_BACKEND_MODULES and "name" in metafunc.fixturenames:
        metafunc.fixturenames.append("torch_bp_backend")
        metafunc.parametrize("torch_bp_backend", ["python", "cpp"], indirect=True)


def _deselect_uncompiled(config, items):
    from torch_bp.registry import LAYERS, compiled_ops
    compiled = {r.name for r in LAYERS if compiled_ops(r)}
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        same_code = params.get("torch_bp_backend") == "cpp" and params.get("name") not in compiled
        (drop if same_code else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _use_backend(name):
    """Select backend ``name`` for one test (skip where "cpp" cannot run), restoring the one before."""
    import torch_bp
    from torch_bp import backend
    before = backend.backend_info().requested
    if name == "cpp":
        if before == "python":
            pytest.skip("TORCH_BP_BACKEND=python")
        try:
            torch_bp.set_backend("cpp")
        except RuntimeError as e:
            pytest.skip(str(e))
    else:
        torch_bp.set_backend("python")
    yield name
    torch_bp.set_backend(before)


@pytest.fixture
def torch_bp_backend(request):
    """The backend named by an indirect parametrization (``["python", "cpp"]``)."""
    yield from _use_backend(request.param)


@pytest.fixture(params=["python", "cpp"])
def each_backend(request):
    """Each backend in turn."""
    yield from _use_backend(request.param)


# --- devices: tests taking ``device`` run on the CPU and, marked ``cuda``, on a CUDA GPU (skipped
# cleanly without one, by pytest_collection_modifyitems above) ---
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    """Each device in turn: "cpu", and "cuda" where a GPU is (the test is marked ``cuda``)."""
    return torch.device(request.param)


@pytest.fixture
def cpp():
    """The compiled backend (skipped where it cannot run)."""
    yield from _use_backend("cpp")


@pytest.fixture(autouse=True)
def _restore_deterministic_algorithms():
    """Lightning's ``deterministic=True`` (tests/test_resume.py) sets torch's global deterministic mode and
    leaves it set; restored after every test, so that no test depends on the order the suite runs in."""
    import torch

    before, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before, warn_only=warn)
