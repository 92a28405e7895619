r"""DP-SGD as a Lightning callback: per-example (or ghost) clipping, Gaussian noise, privacy accounting.

The mechanism is :class:`torch_bp.DPOptimizer` (per-example gradients from torch_bp's own
per-sample rules); the accounting is Opacus's (``opacus.accountants``, an optional
dependency: ``pip install opacus``), stepped once per optimizer step with the noise
multiplier and the sampling rate q = batch size / training-set size.

NOTE (sampling): the analysis behind the accountants assumes each example enters each batch
independently with probability q (Poisson sampling). Lightning's loaders draw shuffled
fixed-size batches; reporting epsilon for them with the Poisson analysis is the usual
approximation (Opacus's own ``make_private`` with ``poisson_sampling=False`` does the same),
not a proof for this sampler.
"""
from __future__ import annotations

import math
from typing import Optional

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning_utilities.core.apply_func import apply_to_collection

from torch_bp.per_sample import DPOptimizer

from . import sinks
from .monitor import training_step_loss


def make_accountant(name: str):
    """An Opacus accountant by mechanism name ("rdp", "prv", "gdp"); ImportError without Opacus."""
    try:
        from opacus.accountants import create_accountant
    except ImportError as e:
        raise ImportError("DPSGD's privacy accounting uses Opacus's accountants: pip install opacus "
                          "(or pass accountant=None to train without accounting)") from e
    return create_accountant(name)


class DPSGD(L.Callback):
    r"""Differentially private training of any LightningModule with torch_bp's per-example gradients.

    At the start of fitting, the module's optimizer is wrapped in a :class:`torch_bp.DPOptimizer`
    (clip each example's gradient to ``max_grad_norm``, add Gaussian noise of standard deviation
    ``noise_multiplier * max_grad_norm`` to the sum, average); it is unwrapped at the end. After
    every optimizer step the accountant is stepped with ``(noise_multiplier, sample_rate)``; at
    the end of every training epoch it logs, under ``prefix``:

    - ``dp/epsilon``: epsilon spent so far for ``delta`` (also :attr:`epsilon`);
    - ``dp/clipped_frac``: the share of examples whose gradient was clipped in the epoch.

    Modes (see :class:`~torch_bp.DPOptimizer`):

    - ``"grads"``: ``training_step`` returns the usual loss; each example's gradient is
      materialised (``grad_sample``). On the first batch the declared ``loss_reduction`` is
      tested against the module's own loss (:meth:`~torch_bp.DPOptimizer.check_loss_reduction`,
      ``check_loss_reduction=True``).
    - ``"ghost"`` (ghost clipping, no per-example gradient materialised): ``training_step``
      returns the per-example losses, a 1-d tensor (``reduction="none"``); the callback runs the
      two backward passes of ghost clipping in place of ``loss.backward()``.

    Every trainable parameter must be in a torch_bp layer with a per-sample rule
    (:func:`torch_bp.convert` the model). Not supported (raises): gradient accumulation, more
    than one process, more than one optimizer, batch norm in training mode.

    Args:
        max_grad_norm: the clipping bound C.
        noise_multiplier: sigma (>= 0; 0 trains with clipping alone, and epsilon is infinite).
        delta: the delta of the reported (epsilon, delta).
        mode: ``"grads"`` or ``"ghost"``.
        loss_reduction: how the loss of ``training_step`` combines the examples (mode "grads").
        sample_rate: q; default: the first batch's size over the training set's length.
        accountant: Opacus mechanism name (``"rdp"``, ``"prv"``, ``"gdp"``), or None: no accounting.
        batch_dim: the batch dim of the layers' inputs.
        generator: a torch.Generator for the noise (default: the global RNG). Neither is a
            cryptographically secure source.
        check_loss_reduction: test ``loss_reduction`` on the first batch (mode "grads").
        prefix: put before every tag.
    """

    def __init__(self, max_grad_norm: float, noise_multiplier: float, delta: float = 1e-5, mode: str = "grads",
                 loss_reduction: str = "mean", sample_rate: Optional[float] = None,
                 accountant: Optional[str] = "rdp", batch_dim: int = 0,
                 generator: Optional[torch.Generator] = None, check_loss_reduction: bool = True,
                 prefix: str = "bp/"):
        super().__init__()
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if sample_rate is not None and not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        DPOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0), torch.nn.Module(), max_grad_norm,
                    noise_multiplier, loss_reduction, mode)   # the same argument checks, before training starts
        self.max_grad_norm = float(max_grad_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.delta = float(delta)
        self.mode = mode
        self.loss_reduction = loss_reduction
        self.sample_rate = sample_rate
        self.batch_dim = batch_dim
        self.generator = generator
        self.check_reduction = check_loss_reduction
        self.prefix = prefix
        self.accountant = make_accountant(accountant) if accountant is not None else None
        self.epsilon: Optional[float] = None
        self.dp: Optional[DPOptimizer] = None
        self._q: Optional[float] = sample_rate
        self._stepped = -1
        self._clipped = None         # (clipped examples, examples) this epoch, as tensors (no sync per step)
        self._checked = False
        self._saved_backward = None

    # -- set up and take down --
    def on_fit_start(self, trainer, pl_module):
        if trainer.accumulate_grad_batches != 1:
            raise ValueError("DPSGD: gradient accumulation is not supported "
                             "(per-example gradients of one batch per step)")
        if trainer.world_size != 1:
            raise ValueError("DPSGD: one process only (the noise and the accounting are not distributed)")
        if not pl_module.automatic_optimization:
            raise ValueError("DPSGD: needs automatic optimization (wrap the optimizer in torch_bp.DPOptimizer "
                             "yourself for manual optimization)")
        if len(trainer.optimizers) != 1:
            raise ValueError(f"DPSGD: one optimizer, got {len(trainer.optimizers)}")
        opt = trainer.optimizers[0]
        self.dp = DPOptimizer(opt, pl_module, self.max_grad_norm, self.noise_multiplier, self.loss_reduction,
                              self.mode, self.batch_dim, self.generator)
        trainer.strategy.optimizers = [self.dp]
        if self.mode == "ghost":
            dp = self.dp

            def backward(loss, *args, **kwargs):
                if loss.dim() != 1:
                    raise ValueError("DPSGD(mode='ghost'): training_step must return the per-example losses, a 1-d "
                                     f"tensor (reduction='none'), got shape {tuple(loss.shape)}")
                dp.backward(loss)

            self._saved_backward = pl_module.__dict__.get("backward")
            pl_module.backward = backward   # an instance attribute: Lightning's closure calls module.backward
        rank_zero_info(f"DPSGD: clipping to {self.max_grad_norm:g}, noise multiplier {self.noise_multiplier:g}, "
                       f"mode {self.mode!r}, delta {self.delta:g}")

    def on_fit_end(self, trainer, pl_module):
        self._restore(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception):
        self._restore(trainer, pl_module)

    def _restore(self, trainer, pl_module) -> None:
        if self.dp is not None and trainer.optimizers and trainer.optimizers[0] is self.dp:
            trainer.strategy.optimizers = [self.dp.optimizer]
        if self.mode == "ghost" and "backward" in pl_module.__dict__:
            del pl_module.backward
            if self._saved_backward is not None:
                pl_module.backward = self._saved_backward

    # -- every step --
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._q is None:
            b, n = _batch_length(batch, self.batch_dim), _dataset_length(trainer)
            if b is None or not n:
                raise ValueError("DPSGD: cannot tell the sampling rate (batch size / training-set size) from the "
                                 "loader; pass sample_rate=")
            self._q = min(b / n, 1.0)
        if self.mode == "grads" and self.check_reduction and not self._checked:
            self._checked = True
            found = self.dp.check_loss_reduction(lambda b: training_step_loss(pl_module, b), batch)
            if found == "unknown":
                rank_zero_info("DPSGD: could not tell whether the loss is a mean or a sum over the examples; "
                               f"trusting loss_reduction={self.loss_reduction!r}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self._stepped or self.dp is None or self.dp.last_norms is None:
            return
        self._stepped = trainer.global_step
        if self.accountant is not None:
            self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self._q)
        norms = self.dp.last_norms
        clipped = torch.stack([(norms > self.max_grad_norm).sum().double(), norms.new_tensor(norms.numel()).double()])
        self._clipped = clipped if self._clipped is None else self._clipped + clipped

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = {}
        if self.accountant is not None and len(self.accountant):
            self.epsilon = (math.inf if self.noise_multiplier == 0
                            else float(self.accountant.get_epsilon(delta=self.delta)))
            metrics["dp/epsilon"] = self.epsilon
        if self._clipped is not None:
            done, total = self._clipped.tolist()
            metrics["dp/clipped_frac"] = done / max(total, 1.0)
            self._clipped = None
        if metrics and trainer.is_global_zero:
            sinks.log_scalars(trainer, {self.prefix + k: v for k, v in metrics.items()}, trainer.global_step)

    # -- checkpoints: the accountant's history (plain numbers) --
    def state_dict(self):
        return {"history": [tuple(h) for h in self.accountant.history] if self.accountant is not None else [],
                "sample_rate": self._q}

    def load_state_dict(self, state_dict):
        if self.accountant is not None:
            self.accountant.history = [tuple(h) for h in state_dict.get("history", [])]
        if self._q is None:
            self._q = state_dict.get("sample_rate")


def _dataset_length(trainer) -> Optional[int]:
    dataset = getattr(trainer.train_dataloader, "dataset", None)
    try:
        return len(dataset)
    except TypeError:
        return None


def _batch_length(batch, batch_dim: int) -> Optional[int]:
    sizes = []
    apply_to_collection(batch, torch.Tensor,
                        lambda t: sizes.append(t.shape[batch_dim]) if t.dim() > batch_dim else None)
    return sizes[0] if sizes else None
