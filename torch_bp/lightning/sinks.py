"""Records other than scalars (figures, histograms, text, hyperparameters) for every logger of a trainer.

Lightning's ``Logger`` interface has one call for scalars and one for hyperparameters; figures,
histograms and text each have a native call on some loggers only. The callbacks write them
through the functions below, which use, per logger:

============  ==============================  ==========================  ===========================
logger        figure                          histogram                   text
============  ==============================  ==========================  ===========================
TensorBoard   ``SummaryWriter.add_figure``    ``add_histogram``           ``add_text``
W&B           ``WandbLogger.log_image``       ``wandb.Histogram``         ``WandbLogger.log_text``
MLflow        artifact ``<tag>/step_N.png``   artifact ``.json`` (counts)  artifact ``<tag>/step_N.md``
============  ==============================  ==========================  ===========================

Any other logger (CSV, Neptune, ...) gets the scalars only, and one warning per logger class
says what it misses. Hyperparameters go to every logger (:func:`log_hparams`).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

_warned: set[str] = set()   # logger classes already warned about (one warning each per process)


def _kind(logger) -> str | None:
    if isinstance(logger, TensorBoardLogger):
        return "tensorboard"
    if isinstance(logger, WandbLogger):
        return "wandb"
    if isinstance(logger, MLFlowLogger):
        return "mlflow"
    return None


def _unsupported(logger, what: str) -> None:
    name = type(logger).__name__
    if name not in _warned:
        _warned.add(name)
        rank_zero_warn(f"torch_bp.lightning: {name} has no call for figures, histograms or text (here: {what}); "
                       "they go to this trainer's TensorBoard, W&B or MLflow loggers only, the scalars to all")


def _artifact(tag: str, step: int, ext: str) -> str:
    return f"{tag}/step_{step:07d}.{ext}"


def log_scalars(trainer, metrics: Mapping[str, float], step: int) -> None:
    for lg in trainer.loggers:
        lg.log_metrics(dict(metrics), step=step)


def log_figure(trainer, tag: str, fig, step: int) -> None:
    """A matplotlib Figure (made without pyplot; not closed here)."""
    for lg in trainer.loggers:
        kind = _kind(lg)
        if kind == "tensorboard":
            lg.experiment.add_figure(tag, fig, step, close=False)
        elif kind == "wandb":
            lg.log_image(key=tag, images=[fig], step=step)
        elif kind == "mlflow":
            lg.experiment.log_figure(lg.run_id, fig, _artifact(tag, step, "png"))
        else:
            _unsupported(lg, f"figure {tag!r}")


def log_histogram(trainer, tag: str, values: torch.Tensor, step: int, bins: int = 64) -> None:
    """A histogram of the finite entries of ``values`` (nothing when there are none)."""
    v = values.detach().float().flatten()
    v = v[v.isfinite()].cpu()
    if not v.numel():
        return
    for lg in trainer.loggers:
        kind = _kind(lg)
        if kind == "tensorboard":
            lg.experiment.add_histogram(tag, v, step)
        elif kind == "wandb":
            import wandb

            lg.log_metrics({tag: wandb.Histogram(v.numpy())}, step=step)
        elif kind == "mlflow":
            counts, edges = np.histogram(v.numpy(), bins=bins)
            lg.experiment.log_dict(lg.run_id, {"step": step, "counts": counts.tolist(), "bin_edges": edges.tolist()},
                                   _artifact(tag, step, "json"))
        else:
            _unsupported(lg, f"histogram {tag!r}")


def log_text(trainer, tag: str, text: str, step: int) -> None:
    """Markdown text."""
    for lg in trainer.loggers:
        kind = _kind(lg)
        if kind == "tensorboard":
            lg.experiment.add_text(tag, text, step)
        elif kind == "wandb":
            lg.log_text(key=tag, columns=["step", "text"], data=[[step, text]])
        elif kind == "mlflow":
            lg.experiment.log_text(lg.run_id, text, _artifact(tag, step, "md"))
        else:
            _unsupported(lg, f"text {tag!r}")


def _plain(v: Any):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    if isinstance(v, type):
        return f"{v.__module__}.{v.__qualname__}"
    return type(v).__name__ if isinstance(v, torch.nn.Module) else str(v)


def run_hparams(trainer, pl_module=None, datamodule=None) -> dict[str, Any]:
    """The run's hyperparameters as flat plain values: the module's and datamodule's saved
    hyperparameters (``model/...``, ``data/...``), the first optimizer's class and its first
    param group's numbers (``optimizer/...``), and the trainer's limits. An object without saved
    hyperparameters contributes its public attributes that are plain numbers or strings."""
    out: dict[str, Any] = {}
    for prefix, obj in (("model", pl_module), ("data", datamodule)):
        if obj is None:
            continue
        saved = dict(getattr(obj, "hparams", {}) or {})
        if not saved:   # no save_hyperparameters(): its own public plain attributes (not Lightning's)
            base = set(vars(L.LightningDataModule())) | set(vars(L.LightningModule()))
            saved = {k: v for k, v in vars(obj).items()
                     if not k.startswith("_") and k not in base and isinstance(v, (bool, int, float, str))}
        for k, v in saved.items():
            out[f"{prefix}/{k}"] = _plain(v)
    net = getattr(pl_module, "net", None)
    if isinstance(net, torch.nn.Module):
        out["model/net"] = type(net).__name__
    if trainer.optimizers:
        opt = trainer.optimizers[0]
        inner = getattr(opt, "optimizer", opt)   # a wrapper (DPOptimizer) names what it wraps
        out["optimizer/class"] = type(inner).__name__
        for k, v in opt.param_groups[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"optimizer/{k}"] = v
    out["trainer/max_epochs"] = trainer.max_epochs
    out["trainer/max_steps"] = trainer.max_steps
    out["trainer/precision"] = str(trainer.precision)
    return out


def log_hparams(trainer, params: Mapping[str, Any], metric_tags: list[str] | None = None) -> None:
    """Hyperparameters with the run's final metrics, for every logger.

    TensorBoard: an hparams-plugin session whose metrics are the existing scalar series
    ``metric_tags`` (default: the trainer's epoch-level ``callback_metrics``), so its HPARAMS
    tab shows their last values beside the hyperparameters without a second copy of them;
    every logger: ``log_hyperparams(params)`` (``hparams.yaml`` for TensorBoard and CSV).
    """
    params = {k: _plain(v) for k, v in params.items()}
    if metric_tags is None:
        metric_tags = sorted(k for k in trainer.callback_metrics if not k.endswith("_step"))
    final = {k: float(trainer.callback_metrics[k]) for k in metric_tags if k in trainer.callback_metrics}
    for lg in trainer.loggers:
        lg.log_hyperparams(params)
        lg.save()
        if _kind(lg) == "tensorboard":
            # its save() keeps an hparams.yaml written at the start of fit
            from lightning.pytorch.core.saving import save_hparams_to_yaml

            save_hparams_to_yaml(os.path.join(lg.log_dir, "hparams.yaml"), lg.hparams)
        if _kind(lg) == "tensorboard" and final:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams

            # a writer of its own: the logger's is closed once fit ends; TensorBoard reads every
            # event file of the run's directory
            with SummaryWriter(log_dir=lg.log_dir) as writer:
                for summary in hparams({k: v for k, v in params.items() if v is not None}, final):
                    writer.file_writer.add_summary(summary)
