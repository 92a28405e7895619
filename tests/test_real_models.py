"""torch_bp on third-party models: Hugging Face ``transformers`` built from tiny configs (random
init, nothing downloaded; experiments/real_models.py). For each: after ``torch_bp.convert`` the loss
and every parameter gradient equal the unconverted model's, and the share of backward compute nodes
run by torch_bp rules is at least the level reached (the target is 95%).

Tolerances (tests/harness.py's table):
- float64: the table's, at the precision the model itself computes in. Llama, Mistral and T5
  normalize (RMSNorm, T5LayerNorm) and take the loss on ``logits.float()`` in float32 whatever the
  model's dtype, so their float64 comparison has float32's tolerance.
- float32: we must be as close to torch's float32 result as torch's is to the exact (float64) one:
  the tolerance is the table's, or twice torch's own float32 error where that is larger (a
  52-layer MobileNetV2 with batch norm over 2 images of 1x1 pixels amplifies rounding).
Vision models that need torchvision: none of these does (their image processors would, and are not
used: inputs are random tensors).
"""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[dev])")

from harness import TOL

import torch_bp
from experiments.real_models import COVERAGE, PRECISION, _cast, models

NAMES = sorted(models())


def _run(model, x):
    out = model(**x)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            build, inputs = models()[name]
            torch.manual_seed(0)
            cache[name] = (build().train(), inputs(torch.Generator().manual_seed(0)))
        return copy.deepcopy(cache[name][0]), cache[name][1]
    return get


@pytest.mark.parametrize("name", NAMES)
def test_float64_loss_and_gradients_equal(name, built):
    ref, x = built(name)
    ref = ref.double()
    x = _cast(x, torch.float64)
    ours = torch_bp.convert(ref)
    loss_ref, g_ref = _run(ref, x)
    loss, g = _run(ours, x)
    t = TOL[PRECISION.get(name, torch.float64)]
    torch.testing.assert_close(loss, loss_ref, rtol=t, atol=t)
    assert g.keys() == g_ref.keys()
    for n in g_ref:
        assert (g[n] is None) == (g_ref[n] is None), n
        if g_ref[n] is not None:
            torch.testing.assert_close(g[n], g_ref[n], rtol=t, atol=t, msg=lambda m: f"{name} {n}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_float32_loss_and_gradients_as_close_as_torch(name, built):
    ref32, x = built(name)
    exact = copy.deepcopy(ref32).double()
    ours = torch_bp.convert(ref32)
    loss_ex, g_ex = _run(exact, _cast(x, torch.float64))
    loss_ref, g_ref = _run(ref32, x)
    loss, g = _run(ours, x)
    t = TOL[torch.float32]
    torch.testing.assert_close(loss, loss_ref, rtol=t, atol=t)
    for n in g_ref:
        if g_ref[n] is None:
            assert g[n] is None, n
            continue
        scale = g_ex[n].abs().max().item() or 1.0
        torch_err = (g_ref[n].double() - g_ex[n]).abs().max().item() / scale
        tn = max(t, 2 * torch_err)
        torch.testing.assert_close(g[n], g_ref[n], rtol=tn, atol=tn * scale, msg=lambda m: f"{name} {n}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_backward_coverage(name, built):
    """The share of backward compute nodes that are torch_bp rules, at the level reached; what is left
    to autograd is only the ops listed in experiments.real_models.COVERAGE (no rule for them yet)."""
    model, x = built(name)
    reached, missing = COVERAGE[name]
    before = torch_bp.conversion_report(torch_bp.convert(model, functional=False), x).backward
    after = torch_bp.conversion_report(torch_bp.convert(model), x).backward
    assert after.share >= reached, str(after)
    assert set(after.by_op) <= set(missing), str(after)
    assert after.share > before.share or before.share == 1.0


def test_revert_gives_the_original_classes_and_state_dict(built):
    for name in ("llama", "gpt2", "bert"):
        model, x = built(name)
        ours = torch_bp.convert(model)
        assert ours.state_dict().keys() == model.state_dict().keys()
        back = torch_bp.revert(ours)
        assert [type(m) for m in back.modules()] == [type(m) for m in model.modules()]
        assert not back._forward_pre_hooks and not back._forward_hooks
        for (k, v), (k2, v2) in zip(back.state_dict().items(), model.state_dict().items()):
            assert k == k2 and torch.equal(v, v2)


def test_converted_model_pickles(built, tmp_path):
    """Converted attention classes (rotary) are found again by pickle; the loss is unchanged."""
    model, x = built("llama")
    ours = torch_bp.convert(model)
    torch.save(ours, tmp_path / "m.pt")
    again = torch.load(tmp_path / "m.pt", weights_only=False)
    assert type(again.model.layers[0].self_attn) is type(ours.model.layers[0].self_attn)
    torch.testing.assert_close(again(**x).loss, ours(**x).loss)


def test_probe_rejects_a_lookalike():
    """A module shaped like RMSNorm (one 1-d weight, an eps) that computes something else is left alone
    and reported."""
    class ScaledMean(torch.nn.Module):  # x * w / (mean|x| + eps): not RMSNorm
        def __init__(self, d):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(d))
            self.eps = 1e-6

        def forward(self, x):
            return x * self.weight / (x.abs().mean(-1, keepdim=True) + self.eps)

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), ScaledMean(4))
    ours = torch_bp.convert(net)
    assert type(ours[1]) is ScaledMean
    report = torch_bp.conversion_report(ours)
    assert any(cls == "ScaledMean" for _, cls, _ in report.rejected)
    assert "ScaledMean" in str(report)


def test_user_converter_declaration():
    """register_converter with a structural match and a probe: users extend the converter."""
    class Swish(torch.nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    class MySiLU(torch.nn.Module):
        def forward(self, x):
            return torch_bp.functional.silu(x)

    import importlib
    C = importlib.import_module("torch_bp.convert")  # the module (torch_bp.convert is the function)
    try:
        torch_bp.register_converter(
            convert_fn=lambda m: C._swap_class(m, MySiLU), ours_cls=MySiLU,
            revert_fn=lambda m: C._swap_class(m, Swish), match=lambda m: type(m) is Swish,
            probe=lambda m: (torch.randn(3, 5),), name="my-silu")
        net = torch_bp.convert(torch.nn.Sequential(torch.nn.Linear(5, 5), Swish()), functional=False)
        assert type(net[1]) is MySiLU
        assert type(torch_bp.revert(net)[1]) is Swish
    finally:
        C._USER.clear()


def test_report_without_inputs_says_parameters_only(built):
    model, _ = built("llama")
    text = str(torch_bp.conversion_report(torch_bp.convert(model)))
    assert "counted parameters only" in text


@pytest.mark.filterwarnings("ignore")
def test_lightning_trains_a_converted_model(built, tmp_path):
    """A converted BERT classifier trained a few steps through torch_bp.lightning.BPModule."""
    L = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from torch_bp.lightning import BPModule

    class Logits(torch.nn.Module):
        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, ids):
            return self.hf(input_ids=ids).logits

    model, x = built("bert")
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 64, (16, 8), generator=g), torch.randint(0, 3, (16,), generator=g))
    module = BPModule(Logits(model), convert=True, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    before = [p.detach().clone() for p in module.parameters()]
    cov = torch_bp.conversion_report(module.net, (data.tensors[0][:2],),
                                     loss_fn=lambda out: torch_bp.functional.cross_entropy(out, data.tensors[1][:2]))
    assert cov.backward.share == 1.0, str(cov)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_causal_lm_loss_without_logits_equals_the_model_loss(name, built):
    """torch_bp.nn.hf.causal_lm_loss: fused linear_cross_entropy on the base model's hidden state gives
    the model's own loss and gradients (float64 model; float32's tolerance: the model takes its loss on
    logits.float(), i.e. in float32)."""
    from torch_bp.nn.hf import causal_lm_loss
    ref, x = built(name)
    ref = ref.double()
    ours = torch_bp.convert(ref)
    loss_ref, g_ref = _run(ref, x)
    loss = causal_lm_loss(ours, x["input_ids"], x["labels"], chunk_size=5)
    loss.backward()
    t = TOL[torch.float32]
    torch.testing.assert_close(loss.float(), loss_ref, rtol=t, atol=t)
    for n, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, g_ref[n], rtol=t, atol=t, msg=lambda m: f"{name} {n}: {m}")
