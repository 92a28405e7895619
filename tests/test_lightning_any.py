"""The Lightning callbacks on a user's own LightningModule (not torch_bp's BPModule), and DP-SGD.

- a module that converts its torch.nn network with torch_bp.convert, with GradientMonitor,
  GradientCheck and GradientStatistics, logging to TensorBoard and CSV: the tags read back;
- a module that converts nothing: error signals from output hooks equal the gradients with
  respect to the layers' outputs; GradientCheck checks it as torch_bp.convert would make it;
- DPSGD: the update equals torch_bp.DPOptimizer's on the same batch (per-example and ghost
  clipping), epsilon equals Opacus's own accountant's, a loss-reduction mismatch is refused.
"""
from __future__ import annotations

import csv
import math
import os
import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")
import lightning.pytorch as L  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import torch_bp  # noqa: E402
from torch_bp.lightning import DPSGD, GradientCheck, GradientMonitor, GradientStatistics, sinks  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class UserModule(L.LightningModule):
    """What a user writes: a torch.nn network, a training_step with its own loss and logging."""

    def __init__(self, convert: bool = True, lr: float = 0.1, reduction: str = "mean", inplace_relu: bool = False):
        super().__init__()
        self.save_hyperparameters()
        net = nn.Sequential(nn.Linear(12, 16), nn.LayerNorm(16), nn.ReLU(inplace=inplace_relu), nn.Linear(16, 3))
        self.model = torch_bp.convert(net) if convert else net
        self.reduction = reduction

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y, reduction=self.reduction)
        self.log("train/loss", loss.mean())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _data(n=48, batch=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)),
                      batch_size=batch)


def _trainer(tmp_path, callbacks, steps=4, loggers=None, **kw):
    loggers = loggers or [TensorBoardLogger(str(tmp_path), name="tb", default_hp_metric=False)]
    return L.Trainer(max_steps=steps, logger=loggers, callbacks=callbacks, accelerator="cpu",
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0, log_every_n_steps=1, **kw)


def _tb(logdir):
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_user_module_with_every_callback_logs_to_tensorboard_and_csv(tmp_path):
    torch.manual_seed(0)
    module = UserModule(convert=True)
    tb = TensorBoardLogger(str(tmp_path), name="tb", default_hp_metric=False)
    csv_logger = CSVLogger(str(tmp_path), name="csv")
    monitor = GradientMonitor(every_n_steps=1, histogram_every_n_steps=2)
    check, stats = GradientCheck(every_n_steps=2), GradientStatistics(every_n_steps=1)
    sinks._warned.clear()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer = _trainer(tmp_path, [monitor, check, stats], loggers=[tb, csv_logger])
        trainer.fit(module, _data())
        sinks.log_hparams(trainer, sinks.run_hparams(trainer, module))
    csv_warnings = [w for w in rec if "CSVLogger has no call" in str(w.message)]
    assert len(csv_warnings) == 1                                              # once, not per record
    params = [n for n, _ in module.named_parameters()]
    layers = ["model.0", "model.1", "model.2", "model.3"]                     # ReLU included
    expected = {"bp/grad_norm/total", "bp/grad_nonfinite", "bp/gradcheck/max_rel_diff", "bp/grad_var/total",
                "bp/grad_snr/total", "train/loss"}
    expected |= {f"bp/grad_norm/{p}" for p in params} | {f"bp/update_ratio/{p}" for p in params}
    expected |= {f"bp/error_signal_norm/{i:02d}_{n}" for i, n in enumerate(layers)}
    expected |= {f"bp/grad_var/{n}" for n in ("model.0", "model.1", "model.3")}
    expected |= {f"bp/gradcheck/max_rel_diff/{n}" for n in ("model.0", "model.1", "model.3", "input")}
    acc = _tb(tb.log_dir)
    tags = acc.Tags()
    assert expected <= set(tags["scalars"]), sorted(expected - set(tags["scalars"]))
    assert [e.step for e in acc.Scalars("bp/grad_var/total")] == [0, 1, 2, 3]
    assert all(e.value < 1e-4 for e in acc.Scalars("bp/gradcheck/max_rel_diff"))
    assert [e.step for e in acc.Images("bp/gradient_flow")] == [0, 2, 3]        # and the last logged step at the end
    assert {f"bp/error_signal/{i:02d}_{n}" for i, n in enumerate(layers)} <= set(tags["histograms"])
    table = acc.Tensors("bp/layers/text_summary")[0].tensor_proto.string_val[0].decode()
    assert table.count("| torch_bp |") == 4
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    with open(os.path.join(csv_logger.log_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert expected <= set(rows[0]), sorted(expected - set(rows[0]))          # the same scalars in the CSV
    grad_var = [float(r["bp/grad_var/total"]) for r in rows if r["bp/grad_var/total"]]
    assert grad_var == pytest.approx([e.value for e in acc.Scalars("bp/grad_var/total")], rel=1e-5)
    hp = open(os.path.join(csv_logger.log_dir, "hparams.yaml")).read()
    assert "optimizer/lr: 0.1" in hp and "model/convert: true" in hp


def test_unconverted_module_error_signals_come_from_output_hooks(tmp_path):
    torch.manual_seed(0)
    module = UserModule(convert=False, lr=0.0, inplace_relu=True)   # an in-place ReLU right after LayerNorm
    monitor = GradientMonitor(every_n_steps=1, histogram_every_n_steps=1)
    check, stats = GradientCheck(every_n_steps=1), GradientStatistics(every_n_steps=1)
    with pytest.warns(UserWarning, match="GradientStatistics: no per-example gradient norms"):
        trainer = _trainer(tmp_path, [monitor, check, stats], steps=1)
        trainer.fit(module, _data())
    assert not any(type(m).__module__.startswith("torch_bp") for m in module.modules())   # nothing converted
    x, y = next(iter(_data()))                                                  # lr=0: the same weights
    module.model[2].inplace = False                                             # the reference: no in-place op
    outs = {}
    handles = [module.model[i].register_forward_hook(
        lambda m, a, o, i=i: (o.retain_grad(), outs.__setitem__(i, o)) and None) for i in range(4)]
    nn.functional.cross_entropy(module(x), y).backward()
    for h in handles:
        h.remove()
    got = monitor.last_metrics
    for i in range(4):                       # LayerNorm's: w.r.t. its output before the ReLU changed it in place
        assert got[f"error_signal_norm/{i:02d}_model.{i}"] == pytest.approx(outs[i].grad.norm().item(), rel=1e-5)
    table = _tb(trainer.logger.log_dir).Tensors("bp/layers/text_summary")[0].tensor_proto.string_val[0].decode()
    assert table.count("| autograd |") == 4 and "torch_bp" not in table
    # GradientCheck compared a converted copy with torch: the model is checked as convert would make it
    assert set(check.history[0][1]) == {"model.0", "model.1", "model.3", "input"}
    assert max(check.history[0][1].values()) < 1e-4
    assert not stats.last_metrics
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_gradient_check_loss_fn_and_a_broken_rule(tmp_path, monkeypatch):
    """loss_fn= gives the loss; a wrong rule in the converted copy is caught on an unconverted model."""
    from torch_bp.lightning.monitor import GradientCheckWarning

    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return torch.tanh(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(output)

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return 2 * g * (1 - y * y)     # twice the right gradient

    class BrokenTanh(nn.Tanh):
        def forward(self, x):
            return Broken.apply(x)

    convert = __import__("importlib").import_module("torch_bp.convert")
    monkeypatch.setitem(convert._CONVERTERS, nn.Tanh, lambda m: convert._swap_class(m, BrokenTanh))
    monkeypatch.setitem(convert._REVERTERS, BrokenTanh, lambda m: convert._swap_class(m, nn.Tanh))

    class TanhModule(UserModule):
        def __init__(self):
            super().__init__(convert=False)
            self.model[2] = nn.Tanh()

    calls = []

    def loss_fn(module, batch):
        calls.append(len(batch[0]))
        return nn.functional.cross_entropy(module(batch[0]), batch[1])

    check = GradientCheck(every_n_steps=1, loss_fn=loss_fn, max_examples=5)
    with pytest.warns(GradientCheckWarning, match=r"model\.0"):
        _trainer(tmp_path, [check], steps=1).fit(TanhModule(), _data())
    assert calls == [5, 5]                                                      # ours and the twin, 5 examples
    assert check.failures and "model.0" in check.failures[0][1] and "model.3" not in check.failures[0][1]


def test_default_histogram_interval_follows_the_run_length():
    from torch_bp.lightning.monitor import default_histogram_interval

    assert default_histogram_interval(25, 230) == 50          # the default torch-bp fit run: 0, 50, ..., 200
    assert default_histogram_interval(25, 2300) == 450        # about 5 per run, a multiple of every_n_steps
    assert default_histogram_interval(25, math.inf) == 250
    assert default_histogram_interval(10, 1000) == 200
    assert default_histogram_interval(25, 60) == 25           # at least every_n_steps


# --- DP-SGD ---
def _dp_fit(tmp_path, dp, module, steps=1, data=None, loggers=None):
    trainer = _trainer(tmp_path, [dp], steps=steps, loggers=loggers)
    trainer.fit(module, data or _data())
    return trainer


@pytest.mark.parametrize("mode", ["grads", "ghost"])
def test_dpsgd_step_equals_dpoptimizer(tmp_path, mode):
    torch.manual_seed(0)
    module = UserModule(convert=True, lr=0.5, reduction="none" if mode == "ghost" else "mean")
    reference = UserModule(convert=True, lr=0.5)
    reference.load_state_dict(module.state_dict())
    x, y = next(iter(_data()))
    ref = torch_bp.DPOptimizer(torch.optim.SGD(reference.parameters(), lr=0.5), reference, max_grad_norm=0.05)
    with ref.per_sample():
        nn.functional.cross_entropy(reference(x), y).backward()
    ref.step()
    dp = DPSGD(max_grad_norm=0.05, noise_multiplier=0.0, mode=mode, accountant=None)
    _dp_fit(tmp_path, dp, module)
    assert (ref.last_norms > 0.05).all()                                        # every example was clipped
    torch.testing.assert_close(dp.dp.last_norms, ref.last_norms, rtol=1e-5, atol=1e-7)
    for (n, p), q in zip(module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=n)
    assert not isinstance(module.trainer.optimizers[0], torch_bp.DPOptimizer)   # unwrapped after fit
    assert "backward" not in module.__dict__


def test_dpsgd_epsilon_equals_opacus_accountant(tmp_path):
    pytest.importorskip("opacus")
    from opacus.accountants import RDPAccountant

    torch.manual_seed(0)
    sigma, delta = 1.1, 1e-5
    dp = DPSGD(max_grad_norm=1.0, noise_multiplier=sigma, delta=delta)
    csv_logger = CSVLogger(str(tmp_path), name="csv")
    _dp_fit(tmp_path, dp, UserModule(convert=True), steps=8, loggers=[csv_logger])   # 48 examples, batch 12: q = 1/4
    with open(os.path.join(csv_logger.log_dir, "metrics.csv")) as f:
        logged = [(int(r["step"]), float(r["bp/dp/epsilon"])) for r in csv.DictReader(f) if r.get("bp/dp/epsilon")]
    theirs = RDPAccountant()
    expected = []
    for step in range(1, 9):
        theirs.step(noise_multiplier=sigma, sample_rate=12 / 48)
        if step % 4 == 0:                                                       # an epoch is 4 steps
            expected.append((step, theirs.get_epsilon(delta)))
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [e for _, e in logged] == pytest.approx([e for _, e in expected], rel=1e-6)
    assert dp.epsilon == pytest.approx(expected[-1][1], rel=1e-12) and 0 < dp.epsilon < math.inf
    assert dp.state_dict()["history"] == [(sigma, 0.25, 8)]


def test_dpsgd_refuses_a_loss_reduction_that_does_not_match(tmp_path):
    dp = DPSGD(max_grad_norm=1.0, noise_multiplier=1.0, loss_reduction="sum", accountant=None)
    with pytest.raises(ValueError, match="loss_reduction='mean'"):
        _dp_fit(tmp_path, dp, UserModule(convert=True))


def test_dpsgd_refuses_unconverted_layers_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="noise_multiplier"):
        DPSGD(max_grad_norm=1.0, noise_multiplier=-1.0)
    with pytest.raises(RuntimeError, match="no per-example gradient for"):
        _dp_fit(tmp_path, DPSGD(max_grad_norm=1.0, noise_multiplier=1.0, accountant=None), UserModule(convert=False))
    module = UserModule(convert=True)
    with pytest.raises(ValueError, match="per-example losses"):                 # ghost needs reduction="none"
        _dp_fit(tmp_path, DPSGD(max_grad_norm=1.0, noise_multiplier=1.0, mode="ghost", accountant=None), module)


# --- FSDP: Lightning's FSDPStrategy refuses accelerator="cpu", so this needs CUDA ---
@pytest.mark.cuda
def test_converted_model_trains_under_fsdp_like_single_device(tmp_path):
    from lightning.pytorch.strategies import FSDPStrategy

    def run(strategy):
        torch.manual_seed(0)
        module = UserModule(convert=True, lr=0.1)
        trainer = L.Trainer(max_steps=3, strategy=strategy, accelerator="cuda", devices=1, precision="32-true",
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0)
        trainer.fit(module, _data())
        return {n: p.detach().float().cpu() for n, p in module.named_parameters()}

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    single, fsdp = run("auto"), run(FSDPStrategy())
    assert set(single) == set(fsdp)
    for n in single:
        torch.testing.assert_close(fsdp[n], single[n], rtol=1e-5, atol=1e-6, msg=n)


def test_sinks_use_each_loggers_own_call(monkeypatch):
    """Figures, histograms and text reach W&B's and MLflow's own calls (stand-ins for the clients:
    neither package is a dependency), and other loggers get one warning."""
    import sys
    import types

    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
    from matplotlib.figure import Figure

    calls = []

    class FakeWandb(WandbLogger):
        def __init__(self):
            pass

        def log_image(self, key, images, step=None, **kwargs):
            calls.append(("wandb.image", key, type(images[0]).__name__, step))

        def log_text(self, key, columns=None, data=None, **kwargs):
            calls.append(("wandb.text", key, data[0][1], data[0][0]))

        def log_metrics(self, metrics, step=None):
            (key, value), = metrics.items()
            calls.append(("wandb.metric", key, type(value).__name__, step))

    class Client:
        def __getattr__(self, name):
            return lambda run_id, obj, path: calls.append((f"mlflow.{name}", path, run_id))

    class FakeMLflow(MLFlowLogger):
        def __init__(self):
            pass

        experiment = property(lambda self: Client())
        run_id = property(lambda self: "run-1")

    class Histogram:
        def __init__(self, values):
            self.values = values

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Histogram=Histogram))
    trainer = types.SimpleNamespace(loggers=[FakeWandb(), FakeMLflow(), CSVLogger("unused")])
    sinks._warned.clear()
    with pytest.warns(UserWarning, match="CSVLogger has no call") as rec:
        sinks.log_figure(trainer, "bp/gradient_flow", Figure(), 3)
        sinks.log_histogram(trainer, "bp/grads/w", torch.tensor([1.0, float("nan"), 2.0]), 3)
        sinks.log_text(trainer, "bp/warnings", "vanishing", 3)
    assert len([w for w in rec if "CSVLogger" in str(w.message)]) == 1
    assert calls == [
        ("wandb.image", "bp/gradient_flow", "Figure", 3),
        ("mlflow.log_figure", "bp/gradient_flow/step_0000003.png", "run-1"),
        ("wandb.metric", "bp/grads/w", "Histogram", 3),
        ("mlflow.log_dict", "bp/grads/w/step_0000003.json", "run-1"),
        ("wandb.text", "bp/warnings", "vanishing", 3),
        ("mlflow.log_text", "bp/warnings/step_0000003.md", "run-1"),
    ]
