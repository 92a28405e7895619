"""A LightningModule that trains any network of torch_bp layers (or converts a torch.nn one)."""
from __future__ import annotations

from typing import Callable, Optional, Union

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info

import torch_bp
import torch_bp.functional as BF


def _pick(name: str) -> Callable:
    """torch_bp's functional ``name``, or torch's while torch_bp has no rule for it."""
    ours = getattr(BF, name, None)
    return ours if ours is not None else getattr(torch.nn.functional, name)


# Module-level functions (not lambdas) so that a BPModule pickles (ddp_spawn).
def cross_entropy(out, target):
    return _pick("cross_entropy")(out, target)


def mse(out, target):
    return _pick("mse_loss")(out, target)


def sse(out, target):
    """The 1986 paper's error E = 1/2 sum over cases and output units of (y - d)^2."""
    return 0.5 * _pick("mse_loss")(out, target, reduction="sum")


def sse_margin(out, target, lo: float = 0.2, hi: float = 0.8):
    """The 1986 family-tree error: 1/2 summed squared error, but zero for an output unit that
    should be on and is above ``hi``, or should be off and is below ``lo`` (Nature, Fig. 4)."""
    inside = ((target > 0.5) & (out > hi)) | ((target < 0.5) & (out < lo))
    return 0.5 * _pick("mse_loss")(out, torch.where(inside, out.detach(), target), reduction="sum")


def _torch_sse_margin(out, target, lo: float = 0.2, hi: float = 0.8):
    inside = ((target > 0.5) & (out > hi)) | ((target < 0.5) & (out < lo))
    return 0.5 * torch.nn.functional.mse_loss(out, torch.where(inside, out.detach(), target), reduction="sum")


def bce_with_logits(out, target):
    return _pick("binary_cross_entropy_with_logits")(out, target)


def _torch_sse(out, target):
    return 0.5 * torch.nn.functional.mse_loss(out, target, reduction="sum")


# name -> (our loss(out, target), torch's reference for the GradientCheck twin)
LOSSES: dict[str, tuple[Callable, Callable]] = {
    "cross_entropy": (cross_entropy, torch.nn.functional.cross_entropy),
    "mse": (mse, torch.nn.functional.mse_loss),
    "sse": (sse, _torch_sse),
    "sse_margin": (sse_margin, _torch_sse_margin),
    "bce_with_logits": (bce_with_logits, torch.nn.functional.binary_cross_entropy_with_logits),
}


class BPModule(L.LightningModule):
    r"""Train ``net`` with Lightning: configurable loss, optimizer and scheduler; logs loss and accuracy.

    Args:
        net: the network, made of torch_bp layers (``torch_bp.lightning.models``) or any
            torch.nn model with ``convert=True``. Default:
            :func:`~torch_bp.lightning.models.default_net` (digits).
        convert: swap the supported torch.nn layers of ``net`` for torch_bp's
            (:func:`torch_bp.convert`) and log what was converted (INFO, rank 0).
        loss: ``"cross_entropy"`` (class-index targets), ``"mse"``, ``"sse"`` (the paper's
            1/2 summed squared error), ``"sse_margin"`` (the same with the family-tree
            margin: no error beyond 0.8 / 0.2), ``"bce_with_logits"``, or any loss module
            ``loss(output, target)``. torch_bp's own loss rule is used where it has one.
        optimizer: called with the parameters (``torch.optim.Adam`` by default; from the CLI
            ``--model.optimizer SGD --model.optimizer.lr 0.1``).
        lr_scheduler: optional, called with the optimizer; stepped every epoch
            (``ReduceLROnPlateau`` watches ``val/loss``).
        threshold: for float targets (the paper's tasks), a case is correct when every
            output unit lies on the target's side of ``threshold`` (default 0 for
            ``bce_with_logits``, else 0.5).

    Logged: ``train/loss`` (every step and epoch), ``train/acc``, ``val/loss``, ``val/acc``.
    Accuracy: argmax for class-index targets, all units right for float targets.
    """

    def __init__(self, net: Optional[torch.nn.Module] = None, convert: bool = False,
                 loss: Union[str, torch.nn.Module] = "cross_entropy",
                 optimizer: OptimizerCallable = torch.optim.Adam,
                 lr_scheduler: Optional[LRSchedulerCallable] = None,
                 threshold: Optional[float] = None):
        super().__init__()
        if net is None:
            from .models import default_net

            net = default_net()
        if convert:
            net = torch_bp.convert(net)
            rank_zero_info(str(torch_bp.conversion_report(net)))
        self.net = net
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a loss module")
            self.loss_fn, self.reference_loss_fn = LOSSES[loss]
        else:
            self.loss_fn = self.reference_loss_fn = loss
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.threshold = threshold if threshold is not None else (0.0 if loss == "bce_with_logits" else 0.5)
        # only plain values in checkpoints (they load with weights_only=True)
        self.save_hyperparameters({"convert": convert, "threshold": self.threshold,
                                   "loss": loss if isinstance(loss, str) else type(loss).__name__})

    def forward(self, x):
        return self.net(x)

    def compute_loss(self, net: torch.nn.Module, batch, reference: bool = False) -> torch.Tensor:
        """The training loss of ``net`` on ``batch`` (``reference``: torch's loss, for GradientCheck)."""
        x, y = batch
        return (self.reference_loss_fn if reference else self.loss_fn)(net(x), y)

    def accuracy(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not y.is_floating_point() and out.dim() == y.dim() + 1:
            return (out.argmax(1) == y).float().mean()
        return ((out > self.threshold) == (y > 0.5)).reshape(len(y), -1).all(1).float().mean()

    def _step(self, batch, stage: str):
        x, y = batch
        out = self.net(x)
        loss = self.loss_fn(out, y)
        with torch.no_grad():
            acc = self.accuracy(out.detach(), y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(x))
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val", on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        opt = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return opt
        sched = self.lr_scheduler(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "monitor": "val/loss"}}
