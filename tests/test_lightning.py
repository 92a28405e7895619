"""torch_bp.lightning: the LightningModule, built-in data, the torch-bp CLI, logs, DDP."""
from __future__ import annotations

import glob
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
import yaml

pytest.importorskip("lightning")
import lightning.pytorch as L  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import torch_bp  # noqa: E402
from torch_bp.lightning import (MLP, BPModule, DigitsDataModule, FamilyTreeNet, FamilyTreesDataModule,  # noqa: E402
                                GradientFlowWarning, GradientMonitor, ParityDataModule, SymmetryDataModule,
                                XORDataModule, cli, plots)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.yaml")))



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models: one thread is fastest, and robust on a shared machine (as the CLI's default)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

def test_import_torch_bp_keeps_lightning_out():
    code = ("import sys, torch_bp, torch_bp.functional, torch_bp.nn, torch_bp.registry; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'tensorboard', "
            "'jsonargparse', 'sklearn', 'matplotlib')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- data ---
def test_digits_split_is_seeded_and_disjoint():
    a, b = DigitsDataModule(seed=0), DigitsDataModule(seed=0)
    (xt, yt), (xv, yv) = a.tensors()
    assert xt.shape[1:] == (1, 8, 8) and len(xt) + len(xv) == 1797 and len(xv) == round(0.2 * 1797)
    assert 0.0 <= xt.min() and xt.max() <= 1.0 and set(yt.tolist()) == set(range(10))
    assert torch.equal(xv, b.tensors()[1][0])
    train_rows = {tuple(r.tolist()) for r in xt.flatten(1)}
    assert sum(tuple(r.tolist()) in train_rows for r in xv.flatten(1)) < 0.05 * len(xv)  # (digits has a few duplicates)
    assert DigitsDataModule(flatten=True).tensors()[0][0].shape[1:] == (64,)
    a.setup()
    sampler = a.train_dataloader().sampler                  # each epoch's order: a function of (seed, epoch)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(len(xt))) and first != second
    again = b.train_dataloader().sampler
    again.set_epoch(1)
    assert list(again) == second
    loader, it = a.train_dataloader(), None                 # stopped after 2 batches, resumed in a fresh loader
    it = iter(loader)
    done = [next(it)[1] for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches": 2}
    resumed = b.train_dataloader()
    resumed.load_state_dict(state)
    rest = [y for _, y in resumed]
    whole = [y for _, y in a.train_dataloader()]
    assert len(rest) == len(whole) - 2 and all(torch.equal(u, v) for u, v in zip(done + rest, whole))


def test_paper_task_datamodules():
    (x, y), (xv, yv) = SymmetryDataModule().tensors()
    assert x.shape == (64, 6) and y.sum() == 8 and torch.equal(x, xv)
    assert XORDataModule().tensors()[0][1].flatten().tolist() == [0, 1, 1, 0]
    assert ParityDataModule(4).tensors()[0][0].shape == (16, 4)
    dm = FamilyTreesDataModule(n_test=4, seed=1)
    (x, y), (xv, yv) = dm.tensors()
    assert x.shape == (100, 36) and xv.shape == (4, 36) and y.shape == (100, 24)
    assert (yv.sum(1) == 1).all() and (x[:, :24].sum(1) == 1).all() and (x[:, 24:].sum(1) == 1).all()
    dm.setup()
    assert len(next(iter(dm.train_dataloader()))[0]) == 100                      # full-batch sweeps by default


# --- the LightningModule ---
def test_convert_flag_and_accuracy_rules():
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    m = BPModule(plain, convert=True)
    assert isinstance(m.net[0], torch_bp.nn.Linear) and type(plain[0]) is torch.nn.Linear
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    loss = m.compute_loss(m.net, (x, y))
    assert type(m.net(x).grad_fn).__name__ == "LinearFunctionBackward" and loss.requires_grad
    assert m.accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])).item() == 0.5
    paper = BPModule(MLP(2, [2], 2, activation="sigmoid"), loss="sse")
    out, target = torch.tensor([[0.7, 0.1], [0.7, 0.6]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert paper.accuracy(out, target).item() == 0.5                             # all units right, per case
    assert BPModule(MLP(2, [2], 2), loss="bce_with_logits").threshold == 0.0
    margin = BPModule(FamilyTreeNet(), loss="sse_margin")
    out = torch.tensor([[0.9, 0.1, 0.5, 0.3]], requires_grad=True)             # on-unit > 0.8, off-unit < 0.2: no error
    loss = margin.loss_fn(out, torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
    loss.backward()
    assert loss.item() == pytest.approx(0.5 * (0.5 ** 2 + 0.3 ** 2), rel=1e-6)
    assert out.grad[0].tolist() == pytest.approx([0, 0, -0.5, 0.3], rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        BPModule(MLP(2, [2], 2), loss="hinge")


# --- the CLI ---
SMALL = """
trainer:
  max_steps: 6
  limit_val_batches: 2
  log_every_n_steps: 2
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {{save_dir: {root}, name: small, default_hp_metric: false}}
  callbacks:
    - class_path: torch_bp.lightning.GradientMonitor
      init_args: {{every_n_steps: 2, histogram_every_n_steps: 2}}
    - class_path: torch_bp.lightning.GradientCheck
      init_args: {{every_n_steps: 3}}
"""


def _torch_bp_layers(net):
    return [n for n, m in net.named_modules() if type(m).__module__.startswith("torch_bp.nn.")]


def test_cli_fit_logs_every_tag_with_finite_values(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL.format(root=tmp_path / "runs"))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        c = cli.build_cli(["fit", "--config", str(cfg)])
    assert not [w for w in rec if issubclass(w.category, GradientFlowWarning)]
    out = capsys.readouterr().out
    assert "validation accuracy: " in out and f"tensorboard --logdir {tmp_path / 'runs' / 'small'}" in out
    assert c.trainer.global_step == 6 and isinstance(c.model.net, type(torch_bp.lightning.default_net()))

    logdir = c.trainer.logger.log_dir
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    params = [f"net.{n}" for n, _ in c.model.net.named_parameters()]
    layers = [f"net.{n}" for n in _torch_bp_layers(c.model.net)]
    param_layers = sorted({p.rsplit(".", 1)[0] for p in params})
    expected = {"bp/grad_norm/total", "bp/grad_nonfinite", "bp/gradcheck/max_rel_diff",
                "bp/gradcheck/max_rel_diff/input",
                "train/loss_step", "train/loss_epoch", "val/loss", "val/acc"}
    for p in params:
        expected |= {f"bp/grad_norm/{p}", f"bp/update_ratio/{p}", f"bp/grad_zero_frac/{p}"}
        expected |= {f"bp/dead_units/{p}"} if p.endswith("weight") else set()
    expected |= {f"bp/gradcheck/max_rel_diff/{lay}" for lay in param_layers}
    scalars = set(tags["scalars"])
    assert expected <= scalars, sorted(expected - scalars)
    assert {t.split("/")[0] for t in scalars} == {"bp", "train", "val", "epoch"}   # the monitor's tags: one section
    assert not [t for t in scalars if "grad_nan" in t or "grad_inf" in t]      # per parameter only when non-zero
    by_layer = lambda prefix: {t.split("/", 2)[2].split("_", 1)[1]: t for t in scalars if t.startswith(prefix)}  # noqa: E731
    assert set(by_layer("bp/error_signal_norm/")) == set(layers)               # every torch_bp layer's error signal
    assert set(by_layer("bp/grad_mean_abs/")) == set(param_layers)
    depth = sorted(by_layer("bp/error_signal_norm/").values())
    assert [t.split("_", 3)[-1] for t in depth] == layers                      # tags sort in depth order
    for tag in scalars:
        values = [e.value for e in acc.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values), tag
    assert all(e.value == 0 for e in acc.Scalars("bp/grad_nonfinite"))
    for tag in ("bp/grad_norm/total", depth[0]):
        assert [e.step for e in acc.Scalars(tag)] == [0, 2, 4]                 # every_n_steps=2
    assert all(e.value < 1e-4 for e in acc.Scalars("bp/gradcheck/max_rel_diff"))
    assert [e.step for e in acc.Scalars("bp/gradcheck/max_rel_diff")] == [0, 3]
    hists = set(tags["histograms"])
    assert {f"bp/weights/{p}" for p in params} | {f"bp/grads/{p}" for p in params} <= hists
    signal_hists = {t for t in hists if t.startswith("bp/error_signal/")}
    assert signal_hists == {"bp/error_signal/" + t.split("/")[2] for t in depth}
    for tag in hists:
        h = acc.Histograms(tag)[-1].histogram_value
        assert h.num > 0 and math.isfinite(h.min) and math.isfinite(h.max), tag
    assert tags["images"] == ["bp/gradient_flow"] and [e.step for e in acc.Images("bp/gradient_flow")] == [0, 2, 4]
    assert "custom_scalars__config__" in tags["tensors"]
    layer_table = acc.Tensors("bp/layers/text_summary")[0].tensor_proto.string_val[0].decode()
    assert all(f"| {lay} |" in layer_table for lay in layers) and "| torch_bp |" in layer_table
    hparams = yaml.safe_load(open(os.path.join(logdir, "hparams.yaml")))       # the run's hyperparameters
    assert {"model/loss", "model/net", "optimizer/class", "optimizer/lr", "data/batch_size",
            "trainer/max_steps"} <= set(hparams), sorted(hparams)
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")  # TensorBoard's HPARAMS tab
    png = tmp_path / "flow.png"                                                # the docs' picture, from this log
    plots.main([logdir, str(png), "--step", "4"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scalars, types = plots.read_log(logdir)
    assert plots.flow_from_scalars(scalars)[0] == layers and set(types) == set(layers)
    saved = yaml.safe_load(open(os.path.join(logdir, "config.yaml")))
    assert saved["trainer"]["max_steps"] == 6


def test_cli_resumes_with_ckpt_path_last_by_default(tmp_path, monkeypatch):
    """The CLI's default callbacks keep last.ckpt in runs/<name>/checkpoints, the same directory for
    every run of the experiment, so the same command with --ckpt_path last goes on from it."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    first = cli.build_cli(args + ["--trainer.max_steps", "4"])
    last = tmp_path / "runs" / "digits" / "checkpoints" / "last.ckpt"
    assert first.trainer.global_step == 4 and last.is_file()
    assert torch.load(last, weights_only=True)["global_step"] == 4
    ckpt = torch.load(last, weights_only=True)                    # mark the checkpoint: weights + 1
    ckpt["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, last)
    # the same command, with --ckpt_path last and no steps left: the weights are the marked ones
    second = cli.build_cli(args + ["--trainer.max_steps", "4", "--ckpt_path", "last"])
    assert second.trainer.global_step == 4
    for k, v in second.model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    third = cli.build_cli(args + ["--trainer.max_steps", "6", "--ckpt_path", "last"])   # and on
    assert third.trainer.global_step == 6 and torch.load(last, weights_only=True)["global_step"] == 6


def test_cli_print_config_and_trainer_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fit", "--print_config", "--trainer.max_epochs", "3", "--model.optimizer", "SGD",
                  "--model.optimizer.lr", "0.5"])
    assert e.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["max_epochs"] == 3 and cfg["threads"] == 1
    init_args = cfg["model"]["optimizer"]["init_args"]
    assert cfg["model"]["optimizer"] == {"class_path": "torch.optim.SGD", "init_args": init_args}
    assert cfg["model"]["optimizer"]["init_args"]["lr"] == 0.5
    assert cfg["model"]["net"]["class_path"].startswith("torch_bp.lightning")
    assert cfg["data"]["class_path"] == "torch_bp.lightning.DigitsDataModule"
    callbacks = [c["class_path"].rsplit(".", 1)[1] for c in cfg["trainer"]["callbacks"]]
    assert callbacks == ["GradientMonitor", "GradientCheck", "ResumableCheckpoint"]


def test_experiment_configs_train(tmp_path, monkeypatch):
    """Every ready config parses with the CLI's parser, instantiates, and trains a few steps."""
    monkeypatch.chdir(tmp_path)
    assert {os.path.basename(c) for c in CONFIGS} >= {"digits.yaml", "symmetry.yaml", "family_trees.yaml",
                                                      "xor.yaml", "parity.yaml"}
    c = cli.build_cli(["--config", CONFIGS[0]], run=False)        # one parser for all (building it is slow)
    for config in CONFIGS:
        c.config = c.parser.parse_args(["--config", config, "--trainer.max_steps", "3",
                                        "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar",
                                        "false", "--trainer.logger.init_args.save_dir", str(tmp_path)])
        c.instantiate_classes()
        if not isinstance(c.datamodule, DigitsDataModule):                    # the paper's full-batch sweeps
            c.datamodule.setup()
            assert len(c.datamodule.train_dataloader()) == 1, config
        c.trainer.fit(c.model, c.datamodule)
        assert c.trainer.global_step == 3, config
        assert os.path.isdir(c.trainer.logger.log_dir), config
        monitors = [cb for cb in c.trainer.callbacks if isinstance(cb, GradientMonitor)]
        assert monitors and monitors[0].last_metrics, config                # the monitor logged at step 0


# --- DDP: 2 CPU processes (gloo) equal one process on the same global batch ---
def _ddp_run(tmp_path, strategy, devices, loader):
    torch.manual_seed(0)
    net = MLP(6, [8], 1, activation="tanh", output_activation="sigmoid")
    module = BPModule(net, loss="mse", optimizer=torch.optim.SGD)
    module.initial = [p.detach().double().clone() for p in module.parameters()]
    trainer = L.Trainer(strategy=strategy, devices=devices, accelerator="cpu", max_steps=3, precision="64-true",
                        logger=TensorBoardLogger(str(tmp_path), name=f"ddp{devices}", default_hp_metric=False),
                        callbacks=[GradientMonitor(every_n_steps=1, histogram_every_n_steps=0)],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(module, train_dataloaders=loader)
    return module, trainer


@pytest.mark.slow
def test_ddp_spawn_matches_single_process(tmp_path, monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    data = TensorDataset(*SymmetryDataModule().tensors()[0])
    # Under DDP Lightning shards the training set with DistributedSampler(shuffle=True, seed=0):
    # rank r takes perm[r::2], so step s sees perm[16s:16s+16] across the two ranks of 8.
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    single, _ = _ddp_run(tmp_path, "auto", 1, DataLoader(data, batch_size=16, sampler=perm))
    ddp, trainer = _ddp_run(tmp_path, "ddp_spawn", 2, DataLoader(data, batch_size=8))
    for (n, p), q in zip(single.named_parameters(), ddp.parameters()):
        # the trained weights come back from the workers into this process's float32 module
        torch.testing.assert_close(q.double(), p, rtol=1e-6, atol=1e-7, msg=n)
    assert all((p.double() - p0).abs().max() > 1e-5 for p, p0 in zip(ddp.parameters(), single.initial))  # it trained
    event_files = glob.glob(os.path.join(tmp_path, "ddp2", "*", "events.*"))
    assert len(event_files) == 1                                                # one writer: rank 0
    acc = EventAccumulator(os.path.dirname(event_files[0]), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("bp/grad_norm/total")] == [0, 1, 2]   # logged once per step
    assert [e.step for e in acc.Scalars("bp/error_signal_norm/00_net.1")] == [0, 1, 2]
