"""Callbacks that show and verify backpropagation while a model trains, on any LightningModule.

- :class:`GradientMonitor` logs, every ``every_n_steps`` optimizer steps, the gradients and
  the error signals reaching each layer: inside torch_bp's backward rules for its layers
  (:mod:`torch_bp._signals`), from a hook on the layer's output for every other layer; no
  extra backward pass. It warns once when they vanish, explode or become non-finite.
- :class:`GradientCheck` recomputes, every ``every_n_steps``, a few examples' gradients with
  plain torch autograd on a torch.nn twin of the model and logs how far torch_bp's are from them.

Both act on global rank 0 only. Scalars go to every logger of the trainer under one prefix
(``bp/`` by default); figures, histograms and text through each logger's own call
(:mod:`torch_bp.lightning.sinks`).
"""
from __future__ import annotations

import copy
import functools
import math
import warnings
from typing import Any, Callable, Optional

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import grad_norm, rank_zero_info
from lightning_utilities.core.apply_func import apply_to_collection

import torch_bp
from torch_bp import _signals

from . import sinks

class GradientFlowWarning(UserWarning):
    """Error signals vanish or explode across depth, or gradients are not finite."""


class GradientCheckWarning(UserWarning):
    """torch_bp's gradients differ from plain torch autograd's beyond the dtype tolerance."""


def _layer_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _is_ours(module: torch.nn.Module) -> bool:
    """A torch_bp layer: its backward is one of torch_bp's rules."""
    return type(module).__module__.startswith("torch_bp.nn.")


def _first_tensor(out) -> Optional[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    return None


class _HookWatch:
    r"""Error signals of the layers that are not torch_bp's, and the forward order of all layers.

    A forward hook on each leaf module of ``model`` that has parameters of its own or is a
    torch.nn activation (the layers a reader of the gradient flow looks for) registers a hook
    on the module's output tensor, which receives dE/d output in the step's own backward.

    NOTE: ``register_full_backward_hook`` would do the same but wraps the module's output in a
    view, and an in-place op on that output (``ReLU(inplace=True)`` after a norm layer, common in
    torchvision) then fails; a tensor hook registered before an in-place op receives the
    gradient with respect to the output as the module returned it.

    torch_bp's own layers get only a forward pre-hook here, for the order: their error signals
    come from inside their rules (:mod:`torch_bp._signals`).
    """

    def __init__(self, model: torch.nn.Module, keep_tensors: bool, hook_others: bool):
        self.keep_tensors = keep_tensors
        self.order: list[str] = []
        self._in_order: set[str] = set()
        self.sq: dict[str, torch.Tensor] = {}
        self.tensors: dict[str, list] = {}
        self.handles = []
        for name, m in model.named_modules():
            if not name:
                continue
            if _is_ours(m):
                self.handles.append(m.register_forward_pre_hook(functools.partial(self._seen, name)))
            elif hook_others and next(m.children(), None) is None and (
                    next(m.parameters(recurse=False), None) is not None
                    or type(m).__module__ == "torch.nn.modules.activation"):
                self.handles.append(m.register_forward_hook(functools.partial(self._forward, name)))

    def _seen(self, name, module, args) -> None:
        if name not in self._in_order:
            self._in_order.add(name)
            self.order.append(name)

    def _forward(self, name, module, args, out) -> None:
        t = _first_tensor(out)
        if t is None or not t.requires_grad or torch.compiler.is_compiling():
            return
        self._seen(name, module, args)
        t.register_hook(functools.partial(self._grad, name))

    def _grad(self, name, grad) -> None:
        g = grad.detach()
        sq = (g if g.dtype == torch.float64 else g.float()).square().sum()
        self.sq[name] = sq if name not in self.sq else self.sq[name] + sq
        if self.keep_tensors:
            self.tensors.setdefault(name, []).append(g)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


# Custom-scalars layout (TensorBoard's "Custom Scalars" tab): the per-layer series on one chart each.
def _layout(prefix: str) -> dict:
    p = prefix.replace(".", r"\.")
    return {"gradient flow (depth order)": {
        "error-signal norm per layer": ["Multiline", [rf"{p}error_signal_norm/.*"]],
        "mean |grad| per layer": ["Multiline", [rf"{p}grad_mean_abs/.*"]],
        "update / weight per parameter": ["Multiline", [rf"{p}update_ratio/.*"]],
        "gradient norms": ["Multiline", [rf"{p}grad_norm/.*"]],
    }}


def default_histogram_interval(every_n_steps: int, total_steps: float, points: int = 5) -> int:
    """A multiple of ``every_n_steps`` giving about ``points`` histogram steps over a run of
    ``total_steps`` (250, or ``every_n_steps`` if larger, when the length is unknown)."""
    if not math.isfinite(total_steps) or total_steps <= 0:
        return max(250 // every_n_steps, 1) * every_n_steps
    return max(round(total_steps / points / every_n_steps), 1) * every_n_steps


class GradientMonitor(L.Callback):
    r"""Log gradients and the error signal reaching every layer, on any model.

    Every ``every_n_steps`` optimizer steps (on global rank 0, at ``on_before_optimizer_step``),
    to every logger of the trainer, under ``prefix`` (``bp/`` by default, so that TensorBoard
    shows them in one section):

    - ``grad_norm/<param>`` and ``grad_norm/total``: gradient p-norms (p = ``norm_type``);
    - ``error_signal_norm/<depth>_<layer>``: norm of the gradient w.r.t. each layer's output,
      captured in the step's own backward: inside the backward rule for torch_bp's layers,
      by a hook on the output for the others (see the layer table below);
    - ``grad_mean_abs/<depth>_<layer>``: mean |gradient| of each layer's parameters;
    - ``grad_zero_frac/<param>``, ``dead_units/<param>`` (share of output units, rows of a
      weight, whose gradient is all zero);
    - ``grad_nonfinite``: the number of NaN and Inf gradient entries, all parameters together;
      when it is not zero, also ``grad_nan/<param>`` and ``grad_inf/<param>`` for the parameters
      that have them (NaN and Inf are counted and logged, never dropped);
    - after the optimizer step: ``update_ratio/<param>`` = ||w_new - w_old|| / ||w_old||.

    Every ``histogram_every_n_steps`` (a multiple of ``every_n_steps``): histograms
    ``weights/<param>``, ``grads/<param>``, ``error_signal/<depth>_<layer>`` and the figure
    ``gradient_flow`` (both per-layer series in depth order, see
    :func:`torch_bp.lightning.plots.gradient_flow_figure`); the figure also for the last
    logged step when training ends. Figures, histograms and text go through each logger's own
    call (:mod:`torch_bp.lightning.sinks`: TensorBoard, W&B, MLflow; one warning for a logger
    without). The text ``layers`` lists the layers in depth order with their type and whose
    backward produced the error signal (``torch_bp`` rule, or ``autograd`` for the others).
    ``<depth>`` is the layer's place in forward order, zero-padded, so TensorBoard lists
    layers from input to output. A custom-scalars layout groups the per-layer series.

    Warns once per kind (a :class:`GradientFlowWarning` and the text ``warnings``, naming the
    layers) when the error signal reaching a layer is below ``vanishing_factor`` or above
    ``exploding_factor`` times the one reaching the layer nearest the loss, or when
    gradients or error signals are not finite.

    Off-steps cost a modulo: no hooks are on the modules and torch_bp's rules only check a flag.

    Args:
        every_n_steps: log every this many optimizer steps (step 0 included).
        histogram_every_n_steps: histograms and the gradient-flow figure (0: never; ``None``,
            the default: about 5 times per run, from the trainer's estimated number of steps,
            see :func:`default_histogram_interval`).
        error_signals: capture error signals.
        hook_other_layers: also capture, with output hooks, the error signals of layers that
            are not torch_bp's (leaf modules with parameters, and torch.nn activations).
        vanishing_factor, exploding_factor: thresholds of the warnings (see above).
        norm_type: the p of the gradient norms.
        prefix: put before every tag.
    """

    def __init__(self, every_n_steps: int = 25, histogram_every_n_steps: Optional[int] = None,
                 error_signals: bool = True, hook_other_layers: bool = True, vanishing_factor: float = 1e-3,
                 exploding_factor: float = 1e3, norm_type: float = 2.0, prefix: str = "bp/"):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if histogram_every_n_steps is not None and histogram_every_n_steps < 0:
            raise ValueError(f"histogram_every_n_steps must be >= 0 or None, got {histogram_every_n_steps}")
        self.every_n_steps = every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.error_signals = error_signals
        self.hook_other_layers = hook_other_layers
        self.vanishing_factor = vanishing_factor
        self.exploding_factor = exploding_factor
        self.norm_type = float(norm_type)
        self.prefix = prefix
        self.last_metrics: dict[str, float] = {}   # what the last logged step logged (tags without the prefix)
        self.warned: dict[str, str] = {}           # kind -> message, each warned once
        self._depth: dict[str, int] = {}           # layer -> place in forward order (fixed once seen)
        self._types: dict[str, str] = {}           # layer -> module class name
        self._rules: dict[str, str] = {}           # layer -> "torch_bp" or "autograd"
        self._capture: Optional[_signals.Capture] = None
        self._watch = None
        self._hooks: Optional[_HookWatch] = None
        self._hist_every = histogram_every_n_steps or 0
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
        return self._hist_every > 0 and step % self._hist_every == 0

    def _log(self, trainer, metrics: dict, step: int) -> None:
        sinks.log_scalars(trainer, {self.prefix + k: v for k, v in metrics.items()}, step)

    # -- Lightning hooks --
    def on_fit_start(self, trainer, pl_module):
        if self.histogram_every_n_steps is None:
            self._hist_every = default_histogram_interval(self.every_n_steps, trainer.estimated_stepping_batches)
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                if isinstance(lg, TensorBoardLogger):
                    lg.experiment.add_custom_scalars(_layout(self.prefix))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if trainer.is_global_zero and self.error_signals and self._due(step) and self._capture is None:
            keep = self._hist_due(step)
            self._watch = _signals.watch(pl_module)
            self._hooks = _HookWatch(pl_module, keep, self.hook_other_layers)
            self._capture = _signals.start(keep_tensors=keep)
            self._capture_step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        if not trainer.is_global_zero or not self._due(step) or self._logged_step == step:
            return
        self._logged_step = step
        capture, hooks = self._end_capture()
        signals = self._signals(capture, hooks)
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # fp16 AMP: the backward ran on a scaled loss
        self._scale = float(scaler.get_scale()) if scaler is not None else 1.0
        signals = {k: v / self._scale for k, v in signals.items()}
        self._place(trainer, pl_module, list(signals) + [_layer_of(n) for n, p in pl_module.named_parameters()
                                                         if p.grad is not None], step)
        metrics, nonfinite = self._gradient_metrics(pl_module)
        for layer, v in signals.items():
            metrics[f"error_signal_norm/{self._tag(layer)}"] = v
        self.last_metrics = metrics
        self._log(trainer, metrics, step)
        self._last_flow = (metrics, signals, step)
        if self._hist_due(step):
            self._histograms(trainer, pl_module, capture, hooks, step)
            self._flow_figure(trainer, metrics, signals, step)
            self._last_flow = None
        self._detect(trainer, signals, nonfinite, step)
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
        self._log(trainer, metrics, self._before_step)
        self._before = {}

    def on_train_end(self, trainer, pl_module):
        self._end_capture()
        if trainer.is_global_zero and self._last_flow is not None and self._hist_every > 0:
            self._flow_figure(trainer, *self._last_flow)  # the last logged step's view, if it has none yet
        self._last_flow = None

    def on_exception(self, trainer, pl_module, exception):
        self._end_capture()

    def state_dict(self):
        return {"warned": dict(self.warned), "depth": dict(self._depth), "types": dict(self._types),
                "rules": dict(self._rules)}

    def load_state_dict(self, state_dict):
        self.warned = dict(state_dict.get("warned", {}))
        self._depth = dict(state_dict.get("depth", {}))
        self._types = dict(state_dict.get("types", {}))
        self._rules = dict(state_dict.get("rules", {}))

    # -- pieces --
    def _end_capture(self) -> tuple[Optional[_signals.Capture], Optional[_HookWatch]]:
        capture, self._capture = self._capture, None
        hooks, self._hooks = self._hooks, None
        if capture is not None:
            capture.stop()
        if self._watch is not None:
            self._watch.remove()
            self._watch = None
        if hooks is not None:
            hooks.remove()
        return capture, hooks

    @staticmethod
    def _signals(capture, hooks) -> dict[str, float]:
        """Layer -> error-signal norm, torch_bp's layers and the others together, in forward order."""
        ours = capture.norms() if capture is not None else {}
        others = {}
        if hooks is not None and hooks.sq:
            names = list(hooks.sq)
            others = dict(zip(names, torch.stack([hooks.sq[n].double() for n in names]).sqrt().tolist()))
        order = list(hooks.order) if hooks is not None else []
        order += [n for n in list(ours) + list(others) if n not in order]
        return {n: ours[n] if n in ours else others[n] for n in order if n in ours or n in others}

    def _place(self, trainer, pl_module, layers, step) -> None:
        """Give new layers the next depths; log the layer table (text) when it grows."""
        new = False
        for layer in layers:
            if layer not in self._depth:
                module = pl_module.get_submodule(layer)
                self._depth[layer] = len(self._depth)
                self._types[layer] = type(module).__name__
                self._rules[layer] = "torch_bp" if _is_ours(module) else "autograd"
                new = True
        if new:
            rows = [f"| {d:02d} | {n} | {self._types[n]} | {self._rules.get(n, '')} |"
                    for n, d in sorted(self._depth.items(), key=lambda i: i[1])]
            table = "\n".join(["| depth | layer | type | backward |", "|---|---|---|---|", *rows])
            sinks.log_text(trainer, f"{self.prefix}layers", table, step)

    def _tag(self, layer: str) -> str:
        return f"{self._depth[layer]:02d}_{layer}"

    def _gradient_metrics(self, pl_module) -> tuple[dict, list[str]]:
        norms = grad_norm(pl_module, self.norm_type)   # keys grad_{p}_norm/<param>, grad_{p}_norm_total
        metrics = {}
        for k, v in norms.items():
            metrics["grad_norm/total" if k.endswith("_norm_total") else "grad_norm/" + k.split("/", 1)[1]] = float(v)
        stats, counts, layer_sum, layer_count = {}, {}, {}, {}
        for name, p in pl_module.named_parameters():
            g = p.grad
            if g is None:
                continue
            g = g.to_dense() if g.is_sparse else g.detach()
            stats[f"grad_zero_frac/{name}"] = (g == 0).float().mean()
            if g.dim() >= 2:
                stats[f"dead_units/{name}"] = (g.reshape(g.shape[0], -1) == 0).all(1).float().mean()
            counts[f"grad_nan/{name}"] = g.isnan().sum().float()
            counts[f"grad_inf/{name}"] = g.isinf().sum().float()
            layer = _layer_of(name)
            s = g.float().abs().sum()
            layer_sum[layer] = s if layer not in layer_sum else layer_sum[layer] + s
            layer_count[layer] = layer_count.get(layer, 0) + g.numel()
        for layer, s in layer_sum.items():
            stats[f"grad_mean_abs/{self._tag(layer)}"] = s / max(layer_count[layer], 1)
        keys = list(stats) + list(counts)
        values = torch.stack(list(stats.values()) + list(counts.values())).tolist() if keys else []
        values = dict(zip(keys, values))
        metrics.update({k: values[k] for k in stats})
        bad = {k: v for k, v in values.items() if k in counts and v > 0}
        metrics["grad_nonfinite"] = float(sum(bad.values()))
        metrics.update(bad)                            # per parameter only where there are some
        return metrics, sorted({k.split("/", 1)[1] for k in bad})

    def _histograms(self, trainer, pl_module, capture, hooks, step) -> None:
        p = self.prefix
        for name, param in pl_module.named_parameters():
            sinks.log_histogram(trainer, f"{p}weights/{name}", param, step)
            if param.grad is not None:
                sinks.log_histogram(trainer, f"{p}grads/{name}",
                                    param.grad.to_dense() if param.grad.is_sparse else param.grad, step)
        tensors = dict(capture.tensors) if capture is not None else {}
        if hooks is not None:
            tensors.update(hooks.tensors)
        for layer, ts in tensors.items():
            if layer in self._depth:
                sinks.log_histogram(trainer, f"{p}error_signal/{self._tag(layer)}",
                                    torch.cat([t.flatten().float() for t in ts]) / self._scale, step)

    def _flow_figure(self, trainer, metrics, signals, step) -> None:
        from .plots import gradient_flow_figure

        gma = {k.split("/", 1)[1].split("_", 1)[1]: v for k, v in metrics.items() if k.startswith("grad_mean_abs/")}
        layers = sorted(set(signals) | set(gma), key=lambda n: self._depth[n])
        types = {n: f"{self._types[n]}{'' if self._rules.get(n) == 'torch_bp' else ' (autograd)'}" for n in layers}
        fig = gradient_flow_figure(layers, signals, gma, title=f"gradient flow at step {step}", types=types)
        sinks.log_figure(trainer, f"{self.prefix}gradient_flow", fig, step)

    def _detect(self, trainer, signals: dict, nonfinite_params: list, step: int) -> None:
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
            sinks.log_text(trainer, f"{self.prefix}warnings", msg, step)


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


def _max_diff_and_scale(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max |a - b|, max |b|), NaN where both are NaN counting as equal and any other NaN as inf."""
    a, b = a.detach().double(), b.detach().double()
    if not b.numel():
        return b.new_zeros(()), b.new_zeros(())
    both_nan = a.isnan() & b.isnan()
    diff = torch.where(both_nan, torch.zeros_like(a), (a - b).abs())
    diff = torch.where(diff.isnan(), torch.full_like(diff, math.inf), diff)
    return diff.max(), torch.where(both_nan, torch.zeros_like(b), b.abs()).max()


def _no_log(*args, **kwargs) -> None:
    return None


def _loss_of(output) -> torch.Tensor:
    """The loss in what a ``training_step`` returned (a tensor, or a dict with ``"loss"``)."""
    loss = output.get("loss") if isinstance(output, dict) else output
    if not isinstance(loss, torch.Tensor):
        raise RuntimeError(f"training_step returned {type(output).__name__}, not a loss tensor or a dict with "
                           "'loss' (pass loss_fn= to the callback)")
    return loss


def training_step_loss(module: L.LightningModule, batch) -> torch.Tensor:
    """``module.training_step(batch, 0)``'s loss, with ``self.log`` calls ignored."""
    saved = {k: module.__dict__[k] for k in ("log", "log_dict") if k in module.__dict__}
    module.log = module.log_dict = _no_log   # instance attributes shadow the methods
    try:
        return _loss_of(module.training_step(batch, 0))
    finally:
        for k in ("log", "log_dict"):
            module.__dict__.pop(k, None)
        module.__dict__.update(saved)


def _batch_size(batch) -> Optional[int]:
    sizes = []
    apply_to_collection(batch, torch.Tensor, lambda t: sizes.append(t.shape[0]) if t.dim() else None)
    return sizes[0] if sizes else None


def slice_batch(batch, n: int):
    """The first ``n`` examples of every tensor in ``batch`` whose leading dim is the batch size."""
    b = _batch_size(batch)
    if b is None or b <= n:
        return batch
    return apply_to_collection(batch, torch.Tensor, lambda t: t[:n] if t.dim() and t.shape[0] == b else t)


def _is_bp_module(module) -> bool:
    """torch_bp.lightning.BPModule or a module with its interface (``net``, ``compute_loss``)."""
    return isinstance(getattr(module, "net", None), torch.nn.Module) and callable(getattr(module, "compute_loss", None))


class GradientCheck(L.Callback):
    r"""Online verification: compare torch_bp's gradients with torch autograd's on a twin, every N steps.

    Works with any LightningModule. On global rank 0, before every ``every_n_steps``-th step's
    own forward, the callback copies the module and makes from the copy

    - ``ours``: the copy as it is, if it has torch_bp layers; else :func:`torch_bp.convert` of it
      (a model that is not converted is then checked as conversion would make it);
    - its twin: ``twin(copy of ours)`` (default :func:`torch_bp.revert`: the same weights,
      plain torch.nn layers);

    computes the loss of the batch's first ``max_examples`` examples with each, under the
    same RNG seed and the trainer's precision context, and takes gradients w.r.t. the
    parameters and the floating-point tensors of the batch with ``torch.autograd.grad``. The
    loss is, in this order: ``loss_fn(module, batch)`` if given; ``compute_loss(net, batch,
    reference)`` for a :class:`~torch_bp.lightning.BPModule` (torch_bp's loss rule for ours,
    torch's for the twin); else the module's own ``training_step`` (its ``self.log`` calls
    ignored). Training is untouched: copies, no ``.grad`` written, the global RNG restored.

    A loss computed with a torch_bp functional inside ``training_step`` or ``loss_fn`` is the
    same in both (the twin reverts modules, not function calls): the check then covers the
    layers only.

    Logged (under ``prefix``): ``gradcheck/max_rel_diff/<layer>`` (max |ours - torch| / max
    |torch| over the layer's parameters; ``input`` for the batch's floating-point tensors)
    and ``gradcheck/max_rel_diff``. Above ``tolerance`` (default :data:`TOLERANCE` for the
    compute dtype, float16's for float32 under TF32 on CUDA) it warns with a
    :class:`GradientCheckWarning` naming the layers and writes the text ``gradcheck/warnings``;
    ``failures`` keeps ``(step, {layer: diff})`` of every failed check.

    Args:
        every_n_steps: check every this many optimizer steps (step 0 included).
        tolerance: override the dtype tolerance.
        twin: ``module -> torch.nn twin`` (default :func:`torch_bp.revert`).
        train_mode: run both in training mode (dropout with the same seed); ``False``: eval mode.
            On CUDA our dropout masks differ from torch's fused kernel: use ``False`` there for
            models with dropout.
        loss_fn: ``loss_fn(module, batch) -> loss``, called with each copy of the LightningModule.
        max_examples: the check uses at most this many examples of the batch.
        prefix: put before every tag.
    """

    def __init__(self, every_n_steps: int = 100, tolerance: Optional[float] = None,
                 twin: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None, train_mode: bool = True,
                 loss_fn: Optional[Callable[[L.LightningModule, Any], torch.Tensor]] = None, max_examples: int = 16,
                 prefix: str = "bp/"):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {max_examples}")
        self.every_n_steps = every_n_steps
        self.tolerance = tolerance
        self.twin = twin or torch_bp.revert
        self.train_mode = train_mode
        self.loss_fn = loss_fn
        self.max_examples = max_examples
        self.prefix = prefix
        self.history: list[tuple[int, dict]] = []
        self.failures: list[tuple[int, dict]] = []
        self._checked_step = -1
        self._told = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every_n_steps or self._checked_step == step:
            return
        self._checked_step = step
        with trainer.precision_plugin.forward_context(), _signals.suspended():
            diffs = self.check(pl_module, batch, seed=step, trainer=trainer)
        dtype = _compute_dtype(trainer, pl_module)
        tol = self.tolerance if self.tolerance is not None else _tolerance(dtype, pl_module)
        self.history.append((step, diffs))
        metrics = {f"{self.prefix}gradcheck/max_rel_diff/{k}": v for k, v in diffs.items()}
        metrics[f"{self.prefix}gradcheck/max_rel_diff"] = max(diffs.values(), default=0.0)
        sinks.log_scalars(trainer, metrics, step)
        bad = {k: v for k, v in diffs.items() if not v <= tol}
        if bad:
            self.failures.append((step, bad))
            layers = ", ".join(f"{k} ({v:.2e})" for k, v in bad.items())
            msg = (f"step {step}: torch_bp gradients differ from torch autograd's beyond the {dtype} "
                   f"tolerance {tol:g} (max relative difference) in: {layers}")
            warnings.warn(f"GradientCheck: {msg}", GradientCheckWarning, stacklevel=2)
            sinks.log_text(trainer, f"{self.prefix}gradcheck/warnings", msg, step)

    def _copies(self, pl_module) -> tuple[torch.nn.Module, torch.nn.Module]:
        bp = _is_bp_module(pl_module) and self.loss_fn is None
        src = pl_module.net if bp else pl_module
        # LightningModule.__getstate__ leaves the trainer out of the copy
        ours = copy.deepcopy(src)
        if not any(_is_ours(m) for m in ours.modules()):
            ours = torch_bp.convert(ours, inplace=True)
            if not self._told:
                self._told = True
                rank_zero_info("GradientCheck: the model has no torch_bp layers; it is checked as torch_bp.convert "
                               f"makes it:\n{torch_bp.conversion_report(ours)}")
        return ours, self.twin(copy.deepcopy(ours))

    def check(self, pl_module, batch, seed: int = 0, trainer=None) -> dict[str, float]:
        """Per-layer max relative difference of torch_bp's gradients from the twin's on ``batch``."""
        bp = _is_bp_module(pl_module) and self.loss_fn is None
        batch = slice_batch(batch, self.max_examples)
        grads = []
        for net, reference in zip(self._copies(pl_module), (False, True)):
            if trainer is not None and isinstance(net, L.LightningModule):
                net._trainer = trainer   # training_step may read self.trainer; its self.log is ignored
            net.train(self.train_mode)
            b = apply_to_collection(batch, torch.Tensor, lambda t: t.detach().clone().requires_grad_(
                t.is_floating_point()))
            inputs = []
            apply_to_collection(b, torch.Tensor, lambda t: inputs.append(t) if t.requires_grad else None)
            params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
            leaves = [p for _, p in params] + inputs
            devices = [p.device for _, p in params[:1] if p.device.type == "cuda"]
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                torch.manual_seed(seed)
                if self.loss_fn is not None:
                    loss = self.loss_fn(net, b)
                elif bp:
                    loss = pl_module.compute_loss(net, b, reference=reference)
                else:
                    loss = training_step_loss(net, b)
                if loss.dim():   # per-example losses (DPSGD's ghost mode): their sum, the same for both copies
                    loss = loss.sum()
                g = torch.autograd.grad(loss, leaves, allow_unused=True)
            prefix = "net." if bp else ""
            named = {f"{prefix}{n}": gi for (n, _), gi in zip(params, g)}
            named.update({f"input.{i}": gi for i, gi in enumerate(g[len(params):])})
            grads.append(named)
        # NOTE: one scale per layer (max |torch| over all its parameters), not per parameter: a
        # parameter whose true gradient is exactly zero (an attention key's bias: softmax ignores a
        # shift common to all keys) has two rounding-noise gradients, whose relative difference is O(1)
        num: dict[str, torch.Tensor] = {}
        den: dict[str, torch.Tensor] = {}
        for name, g_ours in grads[0].items():
            g_ref = grads[1].get(name)
            if g_ours is None or g_ref is None:
                continue
            layer = "input" if name.startswith("input.") else _layer_of(name)
            d, s = _max_diff_and_scale(g_ours, g_ref)
            num[layer] = d if layer not in num else torch.maximum(num[layer], d)
            den[layer] = s if layer not in den else torch.maximum(den[layer], s)
        values = torch.stack([num[k] / den[k].clamp_min(1e-30) for k in num]).tolist() if num else []
        return dict(zip(num, values))
