"""Callbacks that show and verify backpropagation while a model trains.

- :class:`GradientMonitor` logs, every ``every_n_steps`` optimizer steps, the gradients and
  the error signals that torch_bp's backward rules propagate (captured inside the rules by
  :mod:`torch_bp._signals`, with no extra backward pass), and warns once when they vanish,
  explode or become non-finite.
- :class:`GradientCheck` recomputes, every ``every_n_steps``, one batch's gradients with
  plain torch autograd on a torch.nn twin of the model and logs how far ours are from them.

Both act on global rank 0 only and write to the trainer's loggers (images, histograms and
text to its TensorBoardLogger).
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Optional

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import grad_norm

import torch_bp
from torch_bp import _signals


class GradientFlowWarning(UserWarning):
    """Error signals vanish or explode across depth, or gradients are not finite."""


class GradientCheckWarning(UserWarning):
    """torch_bp's gradients differ from plain torch autograd's beyond the dtype tolerance."""


def _tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the trainer's TensorBoardLogger (None without one)."""
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):
            return lg.experiment
    return None


def _log_metrics(trainer: L.Trainer, metrics: dict, step: int) -> None:
    for lg in trainer.loggers:
        lg.log_metrics(metrics, step=step)


def _layer_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


# Custom-scalars layout: the per-layer series on one chart each (TensorBoard's "Custom Scalars" tab).
_LAYOUT = {
    "gradient flow (depth order)": {
        "error-signal norm per layer": ["Multiline", [r"error_signal_norm/.*"]],
        "mean |grad| per layer": ["Multiline", [r"grad_mean_abs/.*"]],
        "update / weight per parameter": ["Multiline", [r"update_ratio/.*"]],
        "gradient norms": ["Multiline", [r"grad_2\.0_norm.*"]],
    },
}


class GradientMonitor(L.Callback):
    r"""Log gradients and the error signals inside torch_bp's backward rules to TensorBoard.

    Every ``every_n_steps`` optimizer steps (on global rank 0, at ``on_before_optimizer_step``):

    - ``grad_2.0_norm/<param>`` and ``grad_2.0_norm_total`` (Lightning's ``grad_norm`` keys);
    - ``error_signal_norm/<depth>_<layer>``: norm of the gradient w.r.t. each torch_bp layer's
      output, captured inside its backward rule during the step's own backward;
    - ``grad_mean_abs/<depth>_<layer>``: mean |gradient| of each layer's parameters;
    - ``grad_zero_frac/<param>``, ``dead_units/<param>`` (share of output units, rows of a
      weight, whose gradient is all zero), ``grad_nan/<param>``, ``grad_inf/<param>`` and
      ``grad_nonfinite_total`` (NaN and Inf are counted and logged, never dropped);
    - after the optimizer step: ``update_ratio/<param>`` = ||w_new - w_old|| / ||w_old||.

    Every ``histogram_every_n_steps`` (a multiple of ``every_n_steps``): histograms
    ``weights/<param>``, ``grads/<param>``, ``error_signal/<depth>_<layer>`` and the image
    ``gradient_flow`` (both per-layer series in depth order, see
    :func:`torch_bp.lightning.plots.gradient_flow_figure`); the image also for the last
    logged step when training ends. A custom-scalars layout groups the
    per-layer series. ``<depth>`` is the layer's place in forward order, zero-padded, so
    TensorBoard lists layers from input to output.

    Warns once per kind (a :class:`GradientFlowWarning` and a TensorBoard text entry under
    ``gradient_monitor/warnings`` naming the layers) when the error signal reaching a layer is
    below ``vanishing_factor`` or above ``exploding_factor`` times the one reaching the layer
    nearest the loss, or when gradients or error signals are not finite.

    Off-steps cost a modulo: no hooks are on the modules and the rules only check a flag.

    Args:
        every_n_steps: log every this many optimizer steps (step 0 included).
        histogram_every_n_steps: histograms and the gradient-flow image (0: never; an image
            costs ~0.1 s of CPU, so not every step).
        error_signals: capture error signals (needs torch_bp layers in the model).
        vanishing_factor, exploding_factor: thresholds of the warnings (see above).
        norm_type: the p of the gradient norms.
    """

    def __init__(self, every_n_steps: int = 25, histogram_every_n_steps: int = 250, error_signals: bool = True,
                 vanishing_factor: float = 1e-3, exploding_factor: float = 1e3, norm_type: float = 2.0):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.error_signals = error_signals
        self.vanishing_factor = vanishing_factor
        self.exploding_factor = exploding_factor
        self.norm_type = float(norm_type)
        self.last_metrics: dict[str, float] = {}   # what the last logged step logged
        self.warned: dict[str, str] = {}           # kind -> message, each warned once
        self._depth: dict[str, int] = {}           # layer -> place in forward order (fixed once seen)
        self._types: dict[str, str] = {}           # layer -> module class name
        self._capture: Optional[_signals.Capture] = None
        self._watch = None
        self._logged_step = -1
        self._capture_step = -1
        self._scale = 1.0
        self._last_flow = None
        self._before: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._before_step = -1

    # -- when --
    def _due(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def _hist_due(self, step: int) -> bool:
        return self.histogram_every_n_steps > 0 and step % self.histogram_every_n_steps == 0

    # -- Lightning hooks --
    def on_fit_start(self, trainer, pl_module):
        tb = _tensorboard(trainer) if trainer.is_global_zero else None
        if tb is not None and hasattr(tb, "add_custom_scalars"):
            tb.add_custom_scalars(_LAYOUT)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if trainer.is_global_zero and self.error_signals and self._due(step) and self._capture is None:
            self._watch = _signals.watch(pl_module)
            self._capture = _signals.start(keep_tensors=self._hist_due(step))
            self._capture_step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        if not trainer.is_global_zero or not self._due(step) or self._logged_step == step:
            return
        self._logged_step = step
        capture = self._end_capture()
        signals = capture.norms() if capture is not None else {}
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # fp16 AMP: the backward ran on a scaled loss
        self._scale = float(scaler.get_scale()) if scaler is not None else 1.0
        signals = {k: v / self._scale for k, v in signals.items()}
        tb = _tensorboard(trainer)
        self._place(pl_module, list(signals) + [_layer_of(n) for n, p in pl_module.named_parameters()
                                                if p.grad is not None], tb, step)
        metrics, nonfinite = self._gradient_metrics(pl_module)
        for layer, v in signals.items():
            metrics[f"error_signal_norm/{self._tag(layer)}"] = v
        self.last_metrics = metrics
        _log_metrics(trainer, metrics, step)
        self._last_flow = (metrics, signals, step)
        if self._hist_due(step) and tb is not None:
            self._histograms(tb, pl_module, capture, step)
            self._flow_image(tb, metrics, signals, step)
            self._last_flow = None
        self._detect(trainer, tb, signals, nonfinite, step)
        self._before = {n: (p, p.detach().clone()) for n, p in pl_module.named_parameters() if p.requires_grad}
        self._before_step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._capture is not None and trainer.global_step > self._capture_step:
            self._end_capture()  # the step went by without on_before_optimizer_step (e.g. no loss returned)
        if not self._before or trainer.global_step <= self._before_step:
            return  # no optimizer step yet (gradient accumulation)
        metrics = {}
        for name, (p, old) in self._before.items():
            metrics[f"update_ratio/{name}"] = (p.detach() - old).norm() / old.norm().clamp_min(1e-12)
        values = torch.stack(list(metrics.values())).tolist() if metrics else []
        metrics = dict(zip(metrics, values))
        self.last_metrics.update(metrics)
        _log_metrics(trainer, metrics, self._before_step)
        self._before = {}

    def on_train_end(self, trainer, pl_module):
        self._end_capture()
        tb = _tensorboard(trainer) if trainer.is_global_zero else None
        if tb is not None and self._last_flow is not None and self.histogram_every_n_steps > 0:
            self._flow_image(tb, *self._last_flow)  # the last logged step's view, if it has none yet
        self._last_flow = None

    def on_exception(self, trainer, pl_module, exception):
        self._end_capture()

    def state_dict(self):
        return {"warned": dict(self.warned), "depth": dict(self._depth), "types": dict(self._types)}

    def load_state_dict(self, state_dict):
        self.warned = dict(state_dict.get("warned", {}))
        self._depth = dict(state_dict.get("depth", {}))
        self._types = dict(state_dict.get("types", {}))

    # -- pieces --
    def _end_capture(self) -> Optional[_signals.Capture]:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.stop()
        if self._watch is not None:
            self._watch.remove()
            self._watch = None
        return capture

    def _place(self, pl_module, layers, tb, step) -> None:
        """Give new layers the next depths; log the layer table (text) when it grows."""
        new = False
        for layer in layers:
            if layer not in self._depth:
                self._depth[layer] = len(self._depth)
                self._types[layer] = type(pl_module.get_submodule(layer)).__name__
                new = True
        if new and tb is not None:
            rows = [f"| {d:02d} | {n} | {self._types[n]} |" for n, d in sorted(self._depth.items(), key=lambda i: i[1])]
            tb.add_text("gradient_monitor/layers", "\n".join(["| depth | layer | type |", "|---|---|---|", *rows]), step)

    def _tag(self, layer: str) -> str:
        return f"{self._depth[layer]:02d}_{layer}"

    def _gradient_metrics(self, pl_module) -> tuple[dict, list[str]]:
        metrics = {k: float(v) for k, v in grad_norm(pl_module, self.norm_type).items()}
        stats, layer_sum, layer_count = {}, {}, {}
        for name, p in pl_module.named_parameters():
            g = p.grad
            if g is None:
                continue
            g = g.to_dense() if g.is_sparse else g.detach()
            stats[f"grad_zero_frac/{name}"] = (g == 0).float().mean()
            if g.dim() >= 2:
                stats[f"dead_units/{name}"] = (g.reshape(g.shape[0], -1) == 0).all(1).float().mean()
            stats[f"grad_nan/{name}"] = g.isnan().sum().float()
            stats[f"grad_inf/{name}"] = g.isinf().sum().float()
            layer = _layer_of(name)
            s = g.float().abs().sum()
            layer_sum[layer] = s if layer not in layer_sum else layer_sum[layer] + s
            layer_count[layer] = layer_count.get(layer, 0) + g.numel()
        for layer, s in layer_sum.items():
            stats[f"grad_mean_abs/{self._tag(layer)}"] = s / max(layer_count[layer], 1)
        values = torch.stack(list(stats.values())).tolist() if stats else []
        stats = dict(zip(stats, values))
        bad = [k.split("/", 1)[1] for k, v in stats.items()
               if (k.startswith("grad_nan/") or k.startswith("grad_inf/")) and v > 0]
        stats["grad_nonfinite_total"] = float(sum(v for k, v in stats.items()
                                                  if k.startswith("grad_nan/") or k.startswith("grad_inf/")))
        metrics.update(stats)
        return metrics, sorted(set(bad))

    def _histograms(self, tb, pl_module, capture, step) -> None:
        def add(tag, t):
            t = t.detach().float().flatten()
            t = t[t.isfinite()]
            if t.numel():
                tb.add_histogram(tag, t.cpu(), step)

        for name, p in pl_module.named_parameters():
            add(f"weights/{name}", p)
            if p.grad is not None:
                add(f"grads/{name}", p.grad.to_dense() if p.grad.is_sparse else p.grad)
        if capture is not None:
            for layer, ts in capture.tensors.items():
                add(f"error_signal/{self._tag(layer)}", torch.cat([t.flatten() for t in ts]).float() / self._scale)

    def _flow_image(self, tb, metrics, signals, step) -> None:
        from .plots import figure_to_array, gradient_flow_figure

        gma = {k.split("/", 1)[1].split("_", 1)[1]: v for k, v in metrics.items() if k.startswith("grad_mean_abs/")}
        layers = sorted(set(signals) | set(gma), key=lambda n: self._depth[n])
        fig = gradient_flow_figure(layers, signals, gma, title=f"gradient flow at step {step}", types=self._types)
        tb.add_image("gradient_flow", figure_to_array(fig), step, dataformats="HWC")

    def _detect(self, trainer, tb, signals: dict, nonfinite_params: list, step: int) -> None:
        msgs = {}
        bad_signals = [n for n, v in signals.items() if not math.isfinite(v)]
        if nonfinite_params or bad_signals:
            where = ", ".join(nonfinite_params + [f"error signal of {n}" for n in bad_signals])
            msgs["nonfinite"] = f"non-finite gradients at step {step} in: {where}"
        finite = [(n, v) for n, v in signals.items() if math.isfinite(v)]
        if len(finite) >= 2 and finite[-1][1] > 0:
            out_name, out_norm = finite[-1]
            for kind, pick, factor, word in (
                    ("vanishing", lambda v: v < self.vanishing_factor * out_norm, self.vanishing_factor, "below"),
                    ("exploding", lambda v: v > self.exploding_factor * out_norm, self.exploding_factor, "above")):
                hit = [(n, v) for n, v in finite[:-1] if pick(v)]
                if hit:
                    layers = ", ".join(f"{n} ({v:.2e})" for n, v in hit)
                    msgs[kind] = (f"{kind} error signal at step {step}: the error signal reaching {layers} is "
                                  f"{word} {factor:g} x the one reaching the last layer {out_name} ({out_norm:.2e})")
        for kind, msg in msgs.items():
            if kind in self.warned:
                continue
            self.warned[kind] = msg
            warnings.warn(f"GradientMonitor: {msg}", GradientFlowWarning, stacklevel=2)
            if tb is not None:
                tb.add_text("gradient_monitor/warnings", msg, step)


# The GradientCheck tolerance: max |ours - torch| / max |torch| per layer. Each single rule
# agrees with torch to the harness's table (tests/harness.py: 1e-10, 1e-5, 2*2^-7, 2*2^-10);
# a whole network's gradients pass through many rules and reductions over the batch, so
# we allow 10x that.
TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.bfloat16: 20 * 2.0 ** -7,
    torch.float16: 20 * 2.0 ** -10,
}


def _compute_dtype(trainer, net) -> torch.dtype:
    precision = str(getattr(trainer, "precision", ""))
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    p = next(net.parameters(), None)
    return p.dtype if p is not None else torch.float32


def _tolerance(dtype: torch.dtype, net) -> float:
    """:data:`TOLERANCE` for ``dtype``; float32 on CUDA with TF32 allowed (cuDNN allows it for
    convolutions by default) computes with a 10-bit mantissa, so it gets float16's."""
    p = next(net.parameters(), None)
    tf32 = (p is not None and p.is_cuda and dtype == torch.float32
            and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32))
    return TOLERANCE[torch.float16] if tf32 else TOLERANCE.get(dtype, TOLERANCE[torch.float32])


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """max |a - b| / max |b| (NaN where both are NaN counts as equal; any other NaN as inf)."""
    a, b = a.detach().double(), b.detach().double()
    both_nan = a.isnan() & b.isnan()
    diff = torch.where(both_nan, torch.zeros_like(a), (a - b).abs())
    diff = torch.where(diff.isnan(), torch.full_like(diff, math.inf), diff)
    scale = torch.where(both_nan, torch.zeros_like(b), b.abs()).max() if b.numel() else b.new_zeros(())
    return (diff.max() if diff.numel() else diff.new_zeros(())) / scale.clamp_min(1e-30)


class GradientCheck(L.Callback):
    r"""Online verification: compare our gradients with torch autograd's on a twin, every N steps.

    On global rank 0, before every ``every_n_steps``-th step's own forward, the callback
    copies the network (``pl_module.net``), builds its torch.nn twin with
    ``twin(copy)`` (default :func:`torch_bp.revert`: the same weights, plain torch.nn layers),
    computes the loss of the current batch with each (``pl_module.compute_loss``: our loss
    rule for ours, torch's for the twin) under the same RNG seed and the trainer's precision
    context, and takes gradients w.r.t. the parameters and the network input with
    ``torch.autograd.grad``. Training is untouched: copies, no ``.grad`` written, the global
    RNG restored.

    Logged: ``gradcheck/max_rel_diff/<layer>`` (max |ours - torch| / max |torch| over the
    layer's parameters; ``input`` for the input gradient) and ``gradcheck/max_rel_diff``.
    Above ``tolerance`` (default :data:`TOLERANCE` for the compute dtype, float16's for float32
    under TF32 on CUDA) it warns with a
    :class:`GradientCheckWarning` naming the layers and writes ``gradient_check/warnings`` text;
    ``failures`` keeps ``(step, {layer: diff})`` of every failed check.

    Args:
        every_n_steps: check every this many optimizer steps (step 0 included).
        tolerance: override the dtype tolerance.
        twin: ``module -> torch.nn twin`` (default :func:`torch_bp.revert`).
        train_mode: run both in training mode (dropout with the same seed); ``False``: eval mode.
            On CUDA our dropout masks differ from torch's fused kernel: use ``False`` there for
            models with dropout.
    """

    def __init__(self, every_n_steps: int = 100, tolerance: Optional[float] = None,
                 twin: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None, train_mode: bool = True):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.tolerance = tolerance
        self.twin = twin or torch_bp.revert
        self.train_mode = train_mode
        self.history: list[tuple[int, dict]] = []
        self.failures: list[tuple[int, dict]] = []
        self._checked_step = -1

    def setup(self, trainer, pl_module, stage):
        if not (hasattr(pl_module, "net") and hasattr(pl_module, "compute_loss")):
            raise AttributeError("GradientCheck needs a LightningModule with `net` and "
                                 "`compute_loss(net, batch, reference=False)`, as torch_bp.lightning.BPModule")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every_n_steps or self._checked_step == step:
            return
        self._checked_step = step
        with trainer.precision_plugin.forward_context(), _signals.suspended():
            diffs = self.check(pl_module, batch, seed=step)
        dtype = _compute_dtype(trainer, pl_module.net)
        tol = self.tolerance if self.tolerance is not None else _tolerance(dtype, pl_module.net)
        self.history.append((step, diffs))
        metrics = {f"gradcheck/max_rel_diff/{k}": v for k, v in diffs.items()}
        metrics["gradcheck/max_rel_diff"] = max(diffs.values(), default=0.0)
        _log_metrics(trainer, metrics, step)
        bad = {k: v for k, v in diffs.items() if not v <= tol}
        if bad:
            self.failures.append((step, bad))
            layers = ", ".join(f"{k} ({v:.2e})" for k, v in bad.items())
            msg = (f"step {step}: torch_bp gradients differ from torch autograd's beyond the {dtype} "
                   f"tolerance {tol:g} (max relative difference) in: {layers}")
            warnings.warn(f"GradientCheck: {msg}", GradientCheckWarning, stacklevel=2)
            tb = _tensorboard(trainer)
            if tb is not None:
                tb.add_text("gradient_check/warnings", msg, step)

    def check(self, pl_module, batch, seed: int = 0) -> dict[str, float]:
        """Per-layer max relative difference of our gradients from the twin's on ``batch``."""
        ours = copy.deepcopy(pl_module.net)
        twin = self.twin(copy.deepcopy(ours))
        grads = []
        for net, reference in ((ours, False), (twin, True)):
            net.train(self.train_mode)
            x, *rest = batch
            x = x.detach().clone().requires_grad_(x.is_floating_point())
            params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
            leaves = [p for _, p in params] + ([x] if x.requires_grad else [])
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                torch.manual_seed(seed)
                loss = pl_module.compute_loss(net, (x, *rest), reference=reference)
                g = torch.autograd.grad(loss, leaves, allow_unused=True)
            names = [f"net.{n}" for n, _ in params] + (["input"] if x.requires_grad else [])
            grads.append(dict(zip(names, g)))
        diffs: dict[str, torch.Tensor] = {}
        for name, g_ours in grads[0].items():
            g_ref = grads[1].get(name)
            if g_ours is None or g_ref is None:
                continue
            layer = "input" if name == "input" else _layer_of(name)
            d = _rel_diff(g_ours, g_ref)
            diffs[layer] = d if layer not in diffs else torch.maximum(diffs[layer], d)
        values = torch.stack(list(diffs.values())).tolist() if diffs else []
        return dict(zip(diffs, values))
