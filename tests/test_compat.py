"""torch_bp on the torch it runs on: the private torch probes of torch_bp._compat and their
public fallbacks, the declared torch range, and one Lightning step.

CI runs this file on the pinned torch (the full suite) and on the newest torch release it
installs (the smoke run of ``scripts/test.sh --newest``).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from torch.utils._python_dispatch import TorchDispatchMode

import torch_bp
from torch_bp import _compat

ROOT = Path(__file__).resolve().parents[1]


class _CompiledOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func.namespace == "torch_bp"
        return func(*args, **(kwargs or {}))


def test_private_probe_and_public_fallback_agree():
    """Outside and inside each torch.func transform, the private probe (where this torch has
    it) and the public fallback give the same answer."""
    seen = []

    def f(t):
        private = _compat._peek() is not None if _compat._peek is not None else None
        seen.append((private, _compat.functorch_transform_active_public(t), _compat.functorch_transform_active(t)))
        return t.sin().sum()

    x = torch.randn(3, 4)
    f(x)
    torch.func.vmap(f)(x)
    torch.func.grad(f)(x)
    torch.func.jacrev(f)(x)
    torch.func.jvp(f, (x,), (x,))
    expected = [False, True, True, True, True]
    for (private, public, used), want in zip(seen, expected):
        assert public == want and used == want
        assert private in (None, want)
    print(_compat.private_in_use())  # which path this torch takes, in the test log


@pytest.mark.parametrize("path", ["private", "public"])
def test_compiled_ops_stay_out_of_vmap(path, cpp, monkeypatch):
    """Under vmap the Python rule runs (the compiled ops have no batching rule); outside, the
    compiled ops run; with the private probe and with the public fallback alike."""
    if path == "public":
        monkeypatch.setattr(_compat, "_peek", None)
    elif _compat._peek is None:
        pytest.skip("this torch lacks the private probe")
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64)
    log = _CompiledOps()
    with log:
        per = torch.func.vmap(lambda xi: torch_bp.functional.rms_norm(xi, (8,), w))(x)
    assert log.calls == 0
    with log:
        ref = torch_bp.functional.rms_norm(x, (8,), w)
    assert log.calls > 0
    torch.testing.assert_close(per, ref)


def _spec(requirement: str, name: str) -> SpecifierSet:
    m = re.fullmatch(rf"{name}\s*([<>=!~,.\d\s*]+)", requirement.strip())
    assert m, f"{requirement!r} is not a plain version range for {name}"
    return SpecifierSet(m.group(1))


def test_declared_torch_range_is_what_ci_runs():
    """pyproject.toml's torch range holds the pinned torch (full suite) and the newest torch
    CI installs (smoke run), and excludes the next minor release, which CI has not run."""
    deps = re.search(r"^dependencies = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    spec = _spec(next(d.strip(' "') for d in deps.split('", ') if re.match(r'"?torch\b', d.strip())), "torch")
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    setup_sh = (ROOT / "scripts" / "setup.sh").read_text()
    newest = Version(re.search(r"^NEWEST_TORCH=([\d.]+)$", test_sh, re.M).group(1))
    pinned = Version(re.search(r"^PINNED_TORCH=([\d.]+)$", setup_sh, re.M).group(1))
    assert pinned in spec and newest in spec, (str(spec), pinned, newest)
    assert Version(f"{newest.major}.{newest.minor + 1}.0") not in spec, f"{spec} admits a torch CI has not run"
    assert "--newest" in (ROOT / ".ci" / "run").read_text()


def test_one_lightning_step(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from torch_bp.lightning import MLP, BPModule

    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    module = BPModule(MLP(4, [8], 3), convert=True)
    before = [p.detach().clone() for p in module.parameters()]
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    assert trainer.global_step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    assert any(type(m).__module__.startswith("torch_bp.nn") for m in module.modules())
