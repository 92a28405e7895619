r"""Gradient statistics across the examples of a batch, per layer, from per-example gradient norms.

With g_n the gradient of example n's own loss (B examples) and G = mean_n g_n the batch
gradient, per layer (its parameters together) and over the whole model:

    tr(S)  = (sum_n ||g_n||^2 - B ||G||^2) / (B - 1)     per-example gradient variance, summed
                                                          over coordinates (unbiased)
    SNR    = ||G||^2 / (tr(S) / B)                        the batch gradient's squared norm over
                                                          its sampling variance
    B_simple = tr(S) / |G_true|^2,   |G_true|^2 ~ ||G||^2 - tr(S) / B   (unbiased)

B_simple is the "simple noise scale" of McCandlish et al. (2018, An Empirical Model of
Large-Batch Training): the batch size around which doubling the batch stops halving the
number of steps (the critical batch size is of its order). Numerator and denominator are
noisy; as the paper recommends, each is averaged over steps (an exponential moving average)
before dividing.

Only per-example *norms* are needed: they come from :func:`torch_bp.per_sample_grads` in
mode ``"norms"`` (ghost norms where a rule has them), inside the step's own backward; G is
the ordinary ``.grad``. No second backward is run and no per-example gradient is kept.
"""
from __future__ import annotations

import math
from collections import defaultdict

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from torch_bp.per_sample import DPOptimizer, PerSampleGrads


def batch_gradient_stats(named_params, norm_sq: dict, batch: int, loss_reduction: str = "mean") -> dict:
    """Per layer and ``"total"``: (tr(S), ||G||^2) from per-example squared norms and ``.grad``.

    ``norm_sq``: parameter name -> (B,) squared norms of the per-example terms of ``.grad``
    (``grad_sample_norm_sq``); ``loss_reduction`` says how the loss combined the examples
    ("mean": g_n = B * term_n, G = .grad; "sum": g_n = term_n, G = .grad / B).
    """
    if batch < 2:
        raise ValueError("gradient statistics need a batch of at least 2 examples")
    scale = float(batch) if loss_reduction == "mean" else 1.0
    sum_sq, g_sq = defaultdict(float), defaultdict(float)
    parts_s, parts_g, names = [], [], []
    for name, p in named_params:
        if name not in norm_sq or p.grad is None:
            continue
        names.append(name.rsplit(".", 1)[0] if "." in name else name)
        parts_s.append(norm_sq[name].double().sum() * scale ** 2)
        parts_g.append(p.grad.double().square().sum() * (scale / batch) ** 2)
    if not names:
        return {}
    values = torch.stack([torch.stack(parts_s), torch.stack(parts_g)]).tolist()   # one sync
    for layer, s, g in zip(names, *values):
        sum_sq[layer] += s
        g_sq[layer] += g
    sum_sq["total"], g_sq["total"] = sum(values[0]), sum(values[1])
    return {layer: ((sum_sq[layer] - batch * g_sq[layer]) / (batch - 1), g_sq[layer]) for layer in sum_sq}


class GradientStatistics(L.Callback):
    r"""Log per-layer gradient variance, SNR and the gradient noise scale to the trainer's loggers.

    Every ``every_n_steps`` optimizer steps (on global rank 0), the step's forward and backward
    run inside ``per_sample_grads(model, mode="norms")``, and after the backward it logs, to
    every logger of the trainer and under ``prefix`` (``bp/`` by default):

    - ``grad_var/<layer>``: tr(S), the per-example gradient variance summed over the layer's
      parameters; ``grad_snr/<layer>``: ||G||^2 / (tr(S) / B);
    - ``noise_scale/<layer>`` and ``noise_scale/total``: B_simple from moving averages (decay
      ``ema``) of tr(S) and of the unbiased |G_true|^2 (not logged while the latter is <= 0);
    - ``grad_var/total``, ``grad_snr/total`` over all parameters with per-example norms.

    Formulas: :mod:`torch_bp.lightning.grad_stats`. Layers are named as in
    ``named_parameters`` without the parameter's own name. Needs the model's parameters in
    torch_bp layers with per-sample rules (others are left out, and a model with none gets
    one warning naming what to convert); no batch norm in training mode. Nothing is logged
    under gradient accumulation (``accumulate_grad_batches > 1``),
    where ``.grad`` is not the batch's own gradient.

    Args:
        every_n_steps: log every this many optimizer steps (step 0 included).
        loss_reduction: how the training loss combines the examples (``"mean"`` or ``"sum"``).
        ema: decay of the moving averages behind the noise scale.
        batch_dim: the batch dim of the layers' inputs (see :class:`torch_bp.per_sample.PerSampleGrads`).
        prefix: put before every tag.
    """

    def __init__(self, every_n_steps: int = 25, loss_reduction: str = "mean", ema: float = 0.9, batch_dim: int = 0,
                 prefix: str = "bp/"):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        self.every_n_steps = every_n_steps
        self.loss_reduction = loss_reduction
        self.ema = ema
        self.batch_dim = batch_dim
        self.prefix = prefix
        self._warned = False
        self.last_metrics: dict[str, float] = {}
        self._avg: dict[str, tuple[float, float]] = {}   # layer -> (EMA of tr(S), EMA of |G_true|^2)
        self._ps: PerSampleGrads | None = None
        self._ps_model = None
        self._borrowed: tuple[PerSampleGrads, str] | None = None   # a DPOptimizer's block and loss reduction

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._close()   # a step that skipped its backward left the block open
        self._borrowed = None
        if not trainer.is_global_zero or trainer.global_step % self.every_n_steps:
            return
        if trainer.accumulate_grad_batches != 1:
            return
        dp = trainer.optimizers[0] if len(trainer.optimizers) == 1 else None
        if isinstance(dp, DPOptimizer):
            # DP-SGD (torch_bp.lightning.DPSGD) runs the step inside its own per-sample block
            if dp.mode == "grads":
                self._borrowed = (dp.per_sample(), dp.loss_reduction)
            elif not self._warned:
                self._warned = True
                rank_zero_warn("GradientStatistics: nothing is logged under DPSGD(mode='ghost'), whose backward "
                               "leaves the clipped gradient, not the batch gradient, in .grad")
            return
        if self._ps is None or self._ps_model is not pl_module:
            self._ps, self._ps_model = PerSampleGrads(pl_module, self.batch_dim, mode="norms"), pl_module
        self._ps.__enter__()

    def on_after_backward(self, trainer, pl_module):
        reduction = self.loss_reduction
        if self._borrowed is not None:
            (ps, reduction), self._borrowed = self._borrowed, None
        else:
            ps = self._close()
        if ps is None:
            return
        norm_sq = ps.norm_sq()
        if not norm_sq:
            if not self._warned:
                self._warned = True
                missing = ps.missing()
                names = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
                rank_zero_warn(f"GradientStatistics: no per-example gradient norms, so nothing is logged: "
                               f"{len(missing)} parameters ({names}) "
                               "are in layers without a torch_bp per-sample rule. Convert the model "
                               "(torch_bp.convert) to get them.")
            return
        batch = next(iter(norm_sq.values())).shape[0]
        stats = batch_gradient_stats(ps.named, norm_sq, batch, reduction)
        metrics = {}
        for layer, (var, g_sq) in stats.items():
            metrics[f"grad_var/{layer}"] = var
            metrics[f"grad_snr/{layer}"] = g_sq / (var / batch) if var > 0 else math.inf
            true_sq = g_sq - var / batch
            old = self._avg.get(layer)
            avg = (var, true_sq) if old is None else tuple(self.ema * o + (1 - self.ema) * v
                                                           for o, v in zip(old, (var, true_sq)))
            self._avg[layer] = avg
            if avg[1] > 0:
                metrics[f"noise_scale/{layer}"] = avg[0] / avg[1]
        self.last_metrics = metrics
        for lg in trainer.loggers:
            lg.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=trainer.global_step)

    def _close(self):
        ps = self._ps
        if ps is None or not ps.open:
            return None
        ps.__exit__(None, None, None)
        return ps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._close()

    def on_train_end(self, trainer, pl_module):
        self._close()

    def on_exception(self, trainer, pl_module, exception):
        self._close()

    def state_dict(self):
        return {"avg": dict(self._avg)}

    def load_state_dict(self, state_dict):
        self._avg = {k: tuple(v) for k, v in state_dict.get("avg", {}).items()}
