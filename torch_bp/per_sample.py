r"""Per-example gradients and their norms, from torch_bp's rules, through autograd hooks.

At each layer an explicit backward already holds the layer's saved input and the error
signal arriving from above; the gradient of every single example follows from those two
(for a linear layer, ``grad_W[n] = grad_y[n]^T x[n]``). So each Function with parameters
states, next to its ``backward``, a per-sample rule:

``per_sample(ctx, batch_dim, *grad_outputs, out=None) -> {input index: (B, *param.shape)}``
    the terms whose sum over the batch is the parameter's gradient, as new tensors (never a
    view of a grad_output). ``out`` may hold, per index, a buffer of that shape and dtype
    from an earlier step to write into, or None (rules may ignore it).
``per_sample_norm_sq(ctx, batch_dim, *grad_outputs) -> {input index: (B,)}`` (optional)
    their squared norms without materialising them (the "ghost norm": for a linear layer
    ``||sum_t g_t x_t^T||^2 = sum_{t,s} (g_t . g_s)(x_t . x_s)``). Without it the norms are
    taken of ``per_sample``'s output, one layer at a time.
``backward_per_sample(ctx, batch_dim, *grad_outputs, out=None) -> (grads, {index: (B, ...)})``
    instead of ``per_sample``, for rules where both come out of one pass that should not be
    run twice (backpropagation through time): the ordinary gradients and the per-example ones.
``grad_from_per_sample = (i, ...)`` (optional class attribute, or set on ``ctx`` by ``per_sample``)
    inputs whose ordinary gradient is cheaper as the batch sum of the per-example ones than
    by the rule's own formula (a convolution's weight; a linear weight with several rows per
    example).

How they run (no rule is wrapped or changed; every step uses public autograd hooks):

1. While a block is open, every module of the tracked model that holds a tracked parameter
   (its own or a submodule's) carries a forward pre-hook and a forward hook; without a model,
   every module does (a global hook, ``torch.nn.modules.module.register_module_forward_hook``).
   After each hooked module's forward, the hook walks the autograd graph from the module's
   output back to its inputs' nodes (``grad_fn.next_functions``). It stops there, at leaves and
   at nodes already walked in this block; a hooked module's walk goes on from where the walks
   of the hooked modules it called stopped, and covers what unhooked ones (an activation)
   built. A node of a custom Function whose class (:func:`_function_class`) has
   ``per_sample`` or ``backward_per_sample`` and which takes a tracked parameter directly (the
   parameter's ``AccumulateGrad`` node is among its ``next_functions``) gets a pre-hook
   (``Node.register_prehook``). For a custom Function the node *is* its ``ctx``.
2. When the backward reaches that node, the pre-hook, before the rule's ``backward`` runs,
   calls the per-sample rule with the node as ``ctx`` and the arriving grad_outputs, with
   ``ctx.needs_input_grad`` masked, for that call only, to the tracked parameters that need a
   gradient; then it adds the results to ``param.grad_sample`` (mode ``"grads"``) or their
   squared norms to ``param.grad_sample_norm_sq`` (``"norms"``).
3. So that nothing is computed twice, the pre-hook leaves on ``ctx``, for the rule's own
   ``backward`` and until the block closes: ``ctx.per_sample_results`` (the
   per-example gradients of the inputs in ``grad_from_per_sample``, unless the backward builds
   a graph: ``create_graph`` keeps the rule's differentiable formula) and
   ``ctx.per_sample_backward`` (the gradients ``backward_per_sample`` returned). A rule's
   backward reads them through :func:`torch_bp.ops._util.summed_per_sample` and
   :func:`torch_bp.ops._util.backward_from_per_sample`; a backward that does not simply
   computes its gradients as always (same values, more work). Hooks cannot replace a gradient
   a backward left out, so this is the rule's to read, not the hook's to substitute.

Nothing is hooked while no block is open, and nothing under torch.func transforms or
``torch.compile`` (there nothing is recorded). A node hooked in a block does nothing when its
backward runs after that block has closed. A tracked parameter used outside every hooked
module's forward (a bare functional call at the top level) gets no per-example result:
``missing()`` names it.

Convention: ``grad_sample[n]`` is example n's term of ``.grad``, so ``grad_sample.sum(0)``
equals ``.grad`` whatever the loss reduction. With a mean-reduced loss, the gradient of
example n's own loss is ``B * grad_sample[n]`` (:class:`DPOptimizer` and the gradient
statistics take ``loss_reduction`` for this).

Which dim is the batch: ``batch_dim`` for layers whose leading dims are free (linear,
layer/RMS norm, embedding: the batch is that dim of their input and output, the other
leading dims, such as a sequence, are summed within each example); convolutions and
group/batch norm take dim 0 (their layout is (N, C, ...)); recurrent layers read it from
their own ``batch_first``.
"""
from __future__ import annotations

import functools
import math
import sys
import weakref
from typing import Iterable

import torch
from torch.autograd.function import BackwardCFunction

from . import _compat
from .ops._util import plain_eager

__all__ = ["per_sample_grads", "PerSampleGrads", "DPOptimizer", "clip_factors"]

_state: "PerSampleGrads | None" = None   # the open block


# ------------------------------------------------------------------------------------
# Finding the rules' nodes in the autograd graph
# ------------------------------------------------------------------------------------
def _function_class(node) -> type | None:
    """The ``torch.autograd.Function`` subclass whose backward ``node`` runs (None: not a custom Function).

    NOTE: ``_forward_cls`` is the one private attribute the per-sample hooks use: torch gives the
    class of a custom Function's node (``<Name>Backward``, a ``BackwardCFunction``) the Function
    class as ``_forward_cls``, and there is no public accessor. Where it is missing, the
    registry's Functions are found by that class name."""
    if not isinstance(node, BackwardCFunction):
        return None
    cls = getattr(type(node), "_forward_cls", None)
    return cls if cls is not None else _registry_by_node_name().get(type(node).__name__)


@functools.lru_cache(maxsize=1)
def _registry_by_node_name() -> dict:
    from .registry import LAYERS
    return {f"{f.__name__}Backward": f for row in LAYERS for f in row.functions}


_RULES: dict = {}   # Function class -> (per_sample, per_sample_norm_sq, backward_per_sample), or None


def _rules(cls):
    if cls not in _RULES:
        rules = tuple(getattr(cls, name, None) for name in ("per_sample", "per_sample_norm_sq", "backward_per_sample"))
        _RULES[cls] = rules if rules[0] is not None or rules[2] is not None else None
    return _RULES[cls]


_ACCUMULATE_GRAD = type(torch.zeros((), requires_grad=True).view(()).grad_fn.next_functions[0][0])


def _grad_fns(obj, found: list) -> list:
    """The ``grad_fn`` of every tensor in ``obj`` (tensors inside tuples, lists and dicts)."""
    if isinstance(obj, torch.Tensor):
        if obj.grad_fn is not None:
            found.append(obj.grad_fn)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _grad_fns(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _grad_fns(item, found)
    return found


class _Call:
    """One module call in progress: its inputs' nodes (where its walk stops), and the nodes where
    the walks of the modules it called stopped (where its own walk goes on)."""

    __slots__ = ("module", "stops", "pending")

    def __init__(self, module, stops):
        self.module, self.stops, self.pending = module, stops, []


def _clear(node) -> None:
    """Remove what the pre-hook left on ``ctx`` for the rule's backward (it serves that backward only)."""
    node.__dict__.pop("per_sample_results", None)
    node.__dict__.pop("per_sample_backward", None)


# ------------------------------------------------------------------------------------
# The block
# ------------------------------------------------------------------------------------
class PerSampleGrads:
    r"""Collect per-example gradients (or their squared norms) of a model's parameters.

    Use :func:`per_sample_grads` (``with torch_bp.per_sample_grads(model): ...``). Both the
    forward and the backward must run inside the block. Entering clears ``grad_sample`` and
    ``grad_sample_norm_sq`` of the tracked parameters. Raises ValueError on entry if the model
    has a batch norm in training mode with trainable parameters.

    Args:
        model: the module (or an iterable of parameters) whose parameters to track. With a
            module, its modules that hold tracked parameters carry the block's forward hooks;
            with parameters alone, every module's forward does (a global hook, for the block only).
        batch_dim: the batch dim of the input and output of linear, norm and embedding layers.
        mode: ``"grads"`` materialises ``param.grad_sample`` (B, *param.shape);
            ``"norms"`` only computes ``param.grad_sample_norm_sq`` (B,).

    NOTE (buffers): a parameter's previous ``grad_sample`` that nothing else refers to (no
    variable, container or view holds it: it can no longer be observed) is reused on entry as
    the memory of the new one, where the shape agrees, instead of allocating B x params
    numbers afresh each step (on CPU a fresh large allocation costs page faults several
    times the writing itself). Keep a reference (or a clone) to keep a step's values.

    NOTE (norms mode): a parameter used by two layer calls in one block (tied weights) gets
    the sum of two per-example gradients, whose norm is not the sum of their norms; norms
    mode raises then (use mode ``"grads"``).

    NOTE (graph): the block keeps the autograd nodes it has walked until it closes (so that
    each is walked once); the backward frees their saved tensors as usual.
    """

    def __init__(self, model: torch.nn.Module | Iterable[torch.nn.Parameter], batch_dim: int = 0,
                 mode: str = "grads"):
        if mode not in ("grads", "norms"):
            raise ValueError(f"mode must be 'grads' or 'norms', got {mode!r}")
        if isinstance(model, torch.nn.Module):
            self.module = model
            self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        else:
            self.module = None
            self.named = [(str(i), p) for i, p in enumerate(model) if p.requires_grad]
        self.batch_dim = batch_dim
        self.mode = mode
        self._tracked = {id(p): p for _, p in self.named}
        # the modules that carry the block's forward hooks: those holding a tracked parameter (their
        # own or a submodule's); a module without one (an activation) is walked by the module around it
        self._hooked = [] if self.module is None else _holding(self.module, self._tracked)
        self._spare: dict[int, torch.Tensor] = {}
        self._hits: dict[int, int] = {}
        self._handles: list = []
        self._calls: list[_Call] = []     # module calls in progress
        self._walked: set = set()         # nodes walked in this block
        self._left: list = []             # (weak refs to) nodes the pre-hook left results on
        self._block = 0                   # counts the blocks: a node's hooks act in their own block only
        self.open = False
        self.entered = 0     # blocks entered so far (a consumer tells a fresh block's results from stale ones)

    # -- the block --
    def __enter__(self) -> "PerSampleGrads":
        global _state
        if _state is not None:
            raise RuntimeError("per_sample_grads blocks cannot be nested")
        if self.module is not None:
            _check_supported(self.module)
        self._spare = {}   # previous grad_sample tensors nothing else refers to, each offered once
        for _, p in self.named:
            if self.mode == "grads" and _unreferenced(p):
                self._spare[id(p)] = p.grad_sample
            _drop(p, "grad_sample")
            _drop(p, "grad_sample_norm_sq")
        self._hits.clear()
        self._block += 1
        if self.module is None:
            mm = torch.nn.modules.module
            self._handles = [mm.register_module_forward_pre_hook(self._enter),
                             mm.register_module_forward_hook(self._exit, always_call=True)]
        else:
            self._handles = [h for m in self._hooked
                             for h in (m.register_forward_pre_hook(self._enter, with_kwargs=True),
                                       m.register_forward_hook(self._exit, with_kwargs=True, always_call=True))]
        self.open = True
        self.entered += 1
        _state = self
        return self

    def __exit__(self, *exc) -> None:
        global _state
        self.open = False
        for h in self._handles:
            h.remove()
        self._handles, self._calls, self._walked = [], [], set()
        for ref in self._left:   # what the rules' backwards could read: no longer theirs to read
            node = ref()
            if node is not None:
                _clear(node)
        self._left = []
        if _state is self:
            _state = None

    # -- results --
    def missing(self, params: Iterable[torch.nn.Parameter] | None = None) -> list[str]:
        """Tracked parameters that got a gradient but no per-example result: their layer has no
        per-sample rule, is not a torch_bp layer, or received a transformed parameter.

        "Got a gradient" means ``.grad is not None``, or membership in ``params`` if given."""
        attr = "grad_sample" if self.mode == "grads" else "grad_sample_norm_sq"
        got = None if params is None else {id(p) for p in params}
        return [n for n, p in self.named if (p.grad is not None if got is None else id(p) in got)
                and getattr(p, attr, None) is None]

    def norm_sq(self) -> dict[str, torch.Tensor]:
        """Parameter name -> per-example squared norm (B,), in either mode."""
        out = {}
        for n, p in self.named:
            if self.mode == "norms":
                v = getattr(p, "grad_sample_norm_sq", None)
            else:
                gs = getattr(p, "grad_sample", None)
                v = None if gs is None else _sq_norms(gs)
            if v is not None:
                out[n] = v
        return out

    def norms(self) -> torch.Tensor:
        """Per-example norm of the whole gradient (all tracked parameters), shape (B,)."""
        sq = list(self.norm_sq().values())
        if not sq:
            raise RuntimeError("no per-example results: did forward and backward run inside the block?")
        return torch.stack(sq).sum(0).sqrt()

    # -- forward: find the rules' nodes --
    def _enter(self, module, args, kwargs=None) -> None:
        if plain_eager():
            self._calls.append(_Call(module, set(_grad_fns((args, kwargs), []))))

    def _exit(self, module, args, *rest) -> None:   # rest: (kwargs, output) or (output,)
        calls = self._calls
        if not calls or calls[-1].module is not module or not plain_eager():
            return
        call = calls.pop()
        self._walk(_grad_fns(rest[-1], call.pending), call.stops)
        if calls:   # the caller's walk goes on from where this one stopped
            calls[-1].pending.extend(call.stops)

    def _walk(self, stack: list, stops: set) -> None:
        """Hook the rules' nodes reachable from ``stack`` without passing ``stops`` or a walked node."""
        walked, tracked = self._walked, self._tracked
        while stack:
            node = stack.pop()
            if node in walked or node in stops:
                continue
            walked.add(node)
            nexts = node.next_functions
            for nxt, _ in nexts:
                if nxt is not None and type(nxt) is not _ACCUMULATE_GRAD and nxt not in walked:
                    stack.append(nxt)
            cls = _function_class(node)
            if cls is None or (rules := _rules(cls)) is None:
                continue
            # next_functions has an entry per *tensor* input (None where it needs no gradient), the
            # rule's input indices count every input: the inputs that need a gradient are, in order,
            # the entries that are not None
            needing = [i for i, n in enumerate(node.needs_input_grad) if n]
            edges = [nxt for nxt, _ in nexts if nxt is not None]
            params = {}
            if len(needing) == len(edges):
                for i, nxt in zip(needing, edges):
                    if type(nxt) is _ACCUMULATE_GRAD:
                        p = nxt.variable
                        if tracked.get(id(p)) is p:
                            params[i] = p
            if params:
                ref = weakref.ref(node)
                node.register_prehook(functools.partial(self._prehook, ref, cls, rules, params, self._block))

    # -- backward: the pre-hook on a rule's node --
    def _prehook(self, ref, cls, rules, params, block, grad_outputs) -> None:
        node = ref()
        if node is None:
            return
        _clear(node)   # a backward after the block or a repeated one: nothing from an earlier one
        if _state is not self or self._block != block:
            return
        needs = node.needs_input_grad
        want = tuple(bool(n) and i in params for i, n in enumerate(needs))
        if not any(want):
            return
        per_sample, rule_norms, fused = rules
        grads_mode = self.mode == "grads"
        out = {i: self._spare.pop(id(params[i]), None) for i, w in enumerate(want) if w} if grads_mode else None
        results = norms = None
        if fused is not None:
            with torch.no_grad():
                grads, results = fused(node, self.batch_dim, *grad_outputs, out=out)
            node.per_sample_backward = tuple(grads)
            self._left.append(ref)
        else:
            if grad_outputs[0] is None:   # no gradient reaches the output: every example's term is 0
                return
            node.needs_input_grad = want  # the rules honour it: the tracked parameters only
            try:
                with torch.no_grad():
                    if not grads_mode and rule_norms is not None:
                        norms = rule_norms(node, self.batch_dim, *grad_outputs)
                    else:
                        results = per_sample(node, self.batch_dim, *grad_outputs, out=out)
            finally:
                node.needs_input_grad = needs
            # create_graph (grad mode on in backward) keeps the rule's own, differentiable, gradient
            if results is not None and not torch.is_grad_enabled():
                chosen = getattr(node, "grad_from_per_sample", getattr(cls, "grad_from_per_sample", ()))
                summable = {i: (results[i], params[i].dtype) for i in chosen if i in results and i in params}
                if summable:
                    node.per_sample_results = summable
                    self._left.append(ref)
        if norms is None and not grads_mode:
            norms = {i: _sq_norms(g) for i, g in results.items()}
        for i, p in params.items():
            if not want[i] or (results if grads_mode else norms).get(i) is None:
                continue
            if grads_mode:
                self._add(p, "grad_sample", results[i])
            else:
                if self._hits.get(id(p)):
                    raise RuntimeError(
                        "per_sample_grads(mode='norms'): a parameter of shape "
                        f"{tuple(p.shape)} is used by more than one layer call (tied weights or a second "
                        "backward); the norm of a sum is not the sum of norms. Use mode='grads'.")
                self._hits[id(p)] = 1
                self._add(p, "grad_sample_norm_sq", norms[i])

    def _add(self, p, attr, value) -> None:
        old = getattr(p, attr, None)
        if old is None:
            setattr(p, attr, value)
            return
        if old.shape != value.shape:
            raise RuntimeError(
                f"per_sample_grads: a parameter of shape {tuple(p.shape)} got per-example results of batch "
                f"{value.shape[0]} and {old.shape[0]} in one block (one batch per block)")
        setattr(p, attr, old + value)   # out of place: ``value`` or ``old`` may alias a grad_output


def per_sample_grads(model, batch_dim: int = 0, mode: str = "grads") -> PerSampleGrads:
    r"""Context under which torch_bp layers also compute per-example gradients in their backward.

    Example::

        >>> with torch_bp.per_sample_grads(model):
        ...     loss = F.cross_entropy(model(x), y, reduction="sum")
        ...     loss.backward()
        >>> model[0].weight.grad_sample.shape            # (B, *weight.shape)
        >>> with torch_bp.per_sample_grads(model, mode="norms") as ps:
        ...     model(x).square().sum().backward()
        >>> ps.norms()                                    # (B,) per-example gradient norms

    See :class:`PerSampleGrads` for the arguments and the conventions.
    """
    return PerSampleGrads(model, batch_dim, mode)


def _holding(model: torch.nn.Module, tracked: dict) -> list:
    """The modules of ``model`` (each once, in ``modules()`` order) that hold a tracked parameter,
    their own or a submodule's: one pass over the tree, each module's own parameters read once."""
    holds: dict = {}

    def visit(m) -> bool:
        if id(m) in holds:
            return holds[id(m)][1]
        holds[id(m)] = (m, False)   # a module reached again while visiting its own subtree adds nothing
        own = any(p is not None and id(p) in tracked for p in m._parameters.values())
        below = [visit(c) for c in m._modules.values() if c is not None]
        holds[id(m)] = (m, own or any(below))
        return holds[id(m)][1]

    visit(model)
    return [m for m in model.modules() if holds[id(m)][1]]


def _drop(p, attr) -> None:
    if getattr(p, attr, None) is not None:
        setattr(p, attr, None)


def _refs(p) -> tuple[int, int | None]:
    t = p.__dict__.get("grad_sample")
    return sys.getrefcount(t), _compat.storage_use_count(t)


def _calibrate() -> tuple[int, int] | None:
    """The reference counts of a ``grad_sample`` held by its parameter only (None: cannot tell)."""
    try:
        probe = torch.nn.Parameter(torch.zeros(1))
        probe.grad_sample = torch.zeros(2, 1)
        refs = _refs(probe)
        return None if refs[1] is None else refs
    except Exception:  # an interpreter or torch without these counts: never reuse
        return None


_ALONE = _calibrate()


def _unreferenced(p) -> bool:
    t = p.__dict__.get("grad_sample")
    if _ALONE is None or not isinstance(t, torch.Tensor) or t._base is not None:
        return False
    del t   # counted by _refs otherwise
    return _refs(p) == _ALONE


def _sq_norms(g: torch.Tensor) -> torch.Tensor:
    g = g.float() if g.dtype in (torch.float16, torch.bfloat16) else g
    return g.reshape(g.shape[0], -1).square().sum(1)


def _check_supported(model: torch.nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.MultiheadAttention) and not m.batch_first:
            raise ValueError(
                f"per_sample_grads: {name or 'the model'} is a MultiheadAttention with batch_first=False: its in- "
                "and out-projections see the batch at different dims. Use batch_first=True.")
        if (isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
                and any(p.requires_grad for p in m.parameters(recurse=False))):
            raise ValueError(
                f"per_sample_grads: {name or 'the model'} ({type(m).__name__}) is in training mode: batch "
                "normalization mixes the examples of a batch, so per-example gradients are not defined. "
                "Replace it with GroupNorm (or LayerNorm), put it in eval mode, or freeze its parameters.")


# ------------------------------------------------------------------------------------
# DP-SGD: per-example clipping and Gaussian noise
# ------------------------------------------------------------------------------------
def clip_factors(norms: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``min(1, C / ||g_n||)`` per example (0-norm examples keep factor 1)."""
    return (max_norm / norms.clamp_min(1e-12)).clamp(max=1.0)


class DPOptimizer:
    r"""DP-SGD around any optimizer: clip each example's gradient to ``max_grad_norm``, sum,
    add Gaussian noise ``N(0, (noise_multiplier * max_grad_norm)^2)`` and average.

    Step:  c_n = min(1, C / ||g_n||),   g = (sum_n c_n g_n + sigma C xi) / B,   xi ~ N(0, I)

    where g_n is the gradient of example n's own loss (``B * grad_sample[n]`` for a
    mean-reduced loss, see ``loss_reduction``) and ``B`` the batch size. With
    ``noise_multiplier=0`` this is per-example clipping alone (no privacy).

    Two ways to get the per-example gradients:

    - ``mode="grads"`` (one backward): run forward and backward inside ``with dp.per_sample():``,
      then ``dp.step()``; the clipped sum is ``einsum(c, grad_sample)``.
    - ``mode="ghost"`` (ghost clipping: no per-example gradient is materialised): call
      ``dp.backward(per_example_losses)``, then ``dp.step()``. A first backward computes only
      the per-example norms (ghost norms where the layer has them), a second the ordinary
      gradient of ``sum_n c_n loss_n``.

    ``dp.step(closure)`` runs ``closure`` (forward and backward; in mode ``"ghost"`` it calls
    ``dp.backward``) inside the block itself, as Lightning's optimizer loop does.

    Refused, before any parameter changes:

    - a trainable parameter without per-example gradients (a layer with no torch_bp
      per-sample rule): its gradient could not be clipped;
    - ``step`` with no backward inside ``dp.per_sample()`` since the previous step: the
      per-example gradients left on the parameters are the previous batch's;
    - an example whose gradient norm is NaN or Inf: clipping it would make every parameter NaN;
    - ``noise_multiplier < 0``, or a ``max_grad_norm`` that is not a positive number.

    ``loss_reduction`` cannot be read off the gradients: :meth:`check_loss_reduction` tests it
    on a batch (the Lightning callback :class:`torch_bp.lightning.DPSGD` does so on its first
    batch). The privacy accounting (epsilon for a delta and a sampling rate) is not done here;
    :class:`torch_bp.lightning.DPSGD` does it with Opacus's accountant.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, max_grad_norm: float,
                 noise_multiplier: float = 0.0, loss_reduction: str = "mean", mode: str = "grads",
                 batch_dim: int = 0, generator: torch.Generator | None = None):
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if mode not in ("grads", "ghost"):
            raise ValueError(f"mode must be 'grads' or 'ghost', got {mode!r}")
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a positive number, got {max_grad_norm}")
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be a number >= 0 (0: no noise), got {noise_multiplier}")
        self.optimizer = optimizer
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.loss_reduction = loss_reduction
        self.mode = mode
        self.batch_dim = batch_dim
        self.generator = generator
        self._ps = PerSampleGrads(model, batch_dim, "grads" if mode == "grads" else "norms")
        self.last_norms: torch.Tensor | None = None     # per-example norms before clipping
        self._factors: torch.Tensor | None = None
        self._stepped_block = 0                          # the per-sample block the last step used

    # -- a torch.optim.Optimizer to its callers (schedulers, checkpoints, Lightning) --
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, group) -> None:
        raise RuntimeError("DPOptimizer: parameters are fixed by `model` (build a new DPOptimizer)")

    def per_sample(self) -> PerSampleGrads:
        """The block to run forward and backward in."""
        return self._ps

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def backward(self, per_example_losses: torch.Tensor) -> None:
        """Ghost clipping: ``per_example_losses`` (B,) from a forward run inside ``dp.per_sample()``
        (mode ``"ghost"``); leaves the clipped (not yet noised) gradient sum in ``.grad``."""
        if self.mode != "ghost":
            raise RuntimeError("DPOptimizer.backward is for mode='ghost'; with mode='grads' call loss.backward()")
        if per_example_losses.dim() != 1:
            raise ValueError(f"per_example_losses must be 1-d (B,), got shape {tuple(per_example_losses.shape)}")
        if not self._ps.open:
            raise RuntimeError("call dp.backward inside `with dp.per_sample():`, where the forward ran")
        params = [p for _, p in self._ps.named]
        grads = torch.autograd.grad(per_example_losses.sum(), params, retain_graph=True, allow_unused=True)
        self._ps.__exit__()
        self._check(self._ps.missing([p for p, g in zip(params, grads) if g is not None]))
        norms = self._ps.norms()            # losses are per example: no rescaling
        self._check_finite(norms)
        self.last_norms = norms
        self._factors = clip_factors(norms, self.max_grad_norm)
        (self._factors.detach() * per_example_losses).sum().backward()

    def _check(self, missing) -> None:
        if missing:
            raise RuntimeError(f"DPOptimizer: no per-example gradient for {missing}: their layers have no "
                               "per-sample rule (convert the model with torch_bp.convert, or freeze them)")

    @staticmethod
    def _check_finite(norms: torch.Tensor) -> None:
        bad = (~norms.isfinite()).nonzero().flatten().tolist()   # one device sync per step
        if bad:
            raise RuntimeError(
                f"DPOptimizer: the gradient of example(s) {bad[:10]}{' ...' if len(bad) > 10 else ''} of the batch "
                "is NaN or Inf; clipping it would turn every parameter NaN. Nothing was changed: find the "
                "example (its input, its loss) or skip the batch.")

    def check_loss_reduction(self, loss_fn, batch) -> str:
        """Test ``loss_reduction`` against the loss: ``loss_fn(batch)`` (a scalar) on ``batch`` and
        on ``batch`` given twice (every tensor whose ``batch_dim`` has the batch size concatenated
        with itself), in eval mode and without grad. A mean over examples is unchanged, a sum
        doubles. Raises ValueError when the loss clearly is the other reduction than declared
        (per-example norms would be off by the batch size: over-clipping for a sum declared
        "mean", and for a mean declared "sum" a clipping bound B times looser than
        ``max_grad_norm``, which voids the privacy guarantee). Returns "mean", "sum", or
        "unknown" when the ratio is neither (e.g. a large regulariser in the loss)."""
        sizes = {t.shape[self.batch_dim] for t in _tensors(batch) if t.dim() > self.batch_dim}
        if len(sizes) != 1:
            return "unknown"
        b = sizes.pop()

        def twice(t):
            return torch.cat([t, t], self.batch_dim) if t.dim() > self.batch_dim and t.shape[self.batch_dim] == b else t

        modes = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            with torch.no_grad():
                one = float(loss_fn(batch))
                two = float(loss_fn(_map_tensors(batch, twice)))
        finally:
            for m, training in modes:
                m.training = training
        if not (math.isfinite(one) and math.isfinite(two)) or one == 0:
            return "unknown"
        ratio = two / one
        # exact up to rounding for a plain mean or sum; a mean plus a regulariser stays exact, a
        # sum plus one lands between the two and gives no verdict
        found = "mean" if abs(ratio - 1) < 1e-3 else "sum" if abs(ratio - 2) < 2e-3 else "unknown"
        if found != "unknown" and found != self.loss_reduction:
            raise ValueError(
                f"DPOptimizer(loss_reduction={self.loss_reduction!r}), but the loss is a {found} over the examples "
                f"(it {'doubles' if found == 'sum' else 'stays the same'} when the batch is given twice): the "
                f"per-example norms would be off by the batch size. Use loss_reduction={found!r}.")
        return found

    @torch.no_grad()
    def step(self, closure=None):
        """Clip, sum, noise and average the gradients, then step the wrapped optimizer."""
        if closure is not None:
            with torch.enable_grad():
                if self._ps.open:
                    closure()
                else:
                    with self._ps:
                        closure()
        named = [(n, p) for n, p in self._ps.named if p.grad is not None]
        if self.mode == "grads":
            if self._ps.entered == self._stepped_block:
                raise RuntimeError(
                    "DPOptimizer.step: no backward ran inside `with dp.per_sample():` since the last step; the "
                    "per-example gradients on the parameters are the previous batch's. Run forward and backward "
                    "inside the block (or pass them as step(closure)).")
            self._check(self._ps.missing())
            gs = [p.grad_sample for _, p in named]
            if not gs:
                raise RuntimeError("DPOptimizer.step: no per-example gradients (run backward inside dp.per_sample())")
            batch = gs[0].shape[0]
            scale = float(batch) if self.loss_reduction == "mean" else 1.0
            norms = torch.stack([_sq_norms(g) for g in gs]).sum(0).sqrt() * scale
            self._check_finite(norms)
            self._stepped_block = self._ps.entered
            self.last_norms = norms
            c = clip_factors(norms, self.max_grad_norm) * scale
            for (_, p), g in zip(named, gs):
                p.grad = (c.to(g.dtype) @ g.reshape(batch, -1)).reshape(p.shape)
        else:
            if self._factors is None:
                raise RuntimeError("DPOptimizer.step (mode='ghost'): call dp.backward(per_example_losses) first")
            batch = self._factors.shape[0]
            self._factors = None
        std = self.noise_multiplier * self.max_grad_norm
        for _, p in named:
            if std > 0:
                p.grad.add_(torch.randn(p.grad.shape, generator=self.generator, device=p.device,
                                        dtype=p.grad.dtype), alpha=std)
            p.grad.div_(batch)
        return self.optimizer.step()


def _tensors(batch) -> list:
    out = []
    _map_tensors(batch, lambda t: out.append(t) or t)
    return out


def _map_tensors(batch, fn):
    """``batch`` with ``fn`` applied to every tensor in it (tuples, lists and dicts are walked)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return type(batch)((k, _map_tensors(v, fn)) for k, v in batch.items())
    if isinstance(batch, (tuple, list)):
        items = [_map_tensors(v, fn) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    return batch
