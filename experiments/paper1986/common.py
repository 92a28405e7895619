"""A vectorised runner: S independent small nets trained full-batch as one tensor program.

The net is an ordinary module of torch_bp layers (``torch_bp.nn.Linear``, ``Sigmoid``). Its
parameters are stacked seed-first (``(S, out, in)``) and the module is run under
``torch.func.vmap`` through ``torch.func.functional_call``; ``torch.autograd.grad`` of the
summed loss then runs torch_bp's own rules (vmapped: ``generate_vmap_rule = True``; the graph
nodes are ``VmappedLinearFunctionBackward`` / ``VmappedSigmoidFunctionBackward``). Seeds
share no parameter, so the gradient of the sum is each seed's own gradient.

The update is eq. 9 of the paper, written out:  dw(t) = -eps dE/dw(t) + alpha dw(t-1),
w += dw, with (eps, alpha) allowed to change between sweeps, optionally followed by the
family-tree weight decay w *= (1 - decay). A seed whose stopping criterion is met is frozen
(its dw is zeroed), so its weights are those at the sweep it solved.

Seeds are independent of the ensemble size: seed s is initialised from
``torch.Generator().manual_seed(s)`` in ``named_parameters`` order, so
``train_reference`` (a plain per-seed loop on the module itself) gives the same numbers.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

import torch_bp.functional as F

DTYPE = torch.float64
RUNS_ROOT = os.environ.get("TORCH_BP_RUNS", "runs/experiments")   # TensorBoard root for every run
FIGURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "figures")
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out")


def setup_threads(n: int = 1) -> None:
    """Tiny full-batch nets are launch-bound: one intra-op thread is fastest (and fair on a shared box)."""
    torch.set_num_threads(n)


# --- loss ---
def sse(y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """E = 1/2 sum (y - d)^2 over everything (eq. 3), through torch_bp's mse_loss when it exists."""
    if hasattr(F, "mse_loss"):
        return 0.5 * F.mse_loss(y, d, reduction="sum")
    return 0.5 * (y - d).pow(2).sum()   # autograd built-ins, until torch_bp.functional.mse_loss lands


def band_targets(y: torch.Tensor, d: torch.Tensor, lo: float = 0.2, hi: float = 0.8) -> torch.Tensor:
    """Targets under the family-tree margin: an on-unit above ``hi`` or an off-unit below ``lo``
    has zero error (the target becomes the output itself, detached)."""
    inside = ((d > 0.5) & (y > hi)) | ((d < 0.5) & (y < lo))
    return torch.where(inside, y.detach(), d)


def per_seed_sse(y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(S,) summed squared error of each seed (no graph)."""
    return 0.5 * (y.detach() - d).pow(2).flatten(1).sum(1)


def all_correct(y: torch.Tensor, d: torch.Tensor, tol: float = 0.5) -> torch.Tensor:
    """(S,) True where every output of the seed is within ``tol`` of its 0/1 target.

    ``tol = 0.5``: every output on the right side of 0.5 (rounded outputs all correct)."""
    return ((y.detach() - d).abs() < tol).flatten(1).all(1)


# --- parameters ---
def uniform_init(model: torch.nn.Module, seeds, r: float, dtype=DTYPE) -> dict[str, torch.Tensor]:
    """Stacked parameters {name: (S, *shape)}, every weight and bias ~ U[-r, r], seed s from its own generator."""
    per_seed = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        per_seed.append({n: (torch.rand(p.shape, generator=g, dtype=dtype) * 2 - 1) * r
                         for n, p in model.named_parameters()})
    return {n: torch.stack([ps[n] for ps in per_seed]) for n in per_seed[0]}


def seed_params(params: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {n: p[i].detach().clone() for n, p in params.items()}


def ensemble_forward(model: torch.nn.Module, params: dict, x: torch.Tensor, x_batched: bool = False):
    """Outputs of all S nets: (S, N, out). ``x`` is shared (N, in) or per seed (S, N, in)."""
    def one(p, xx):
        return torch.func.functional_call(model, p, (xx,))
    return torch.func.vmap(one, in_dims=(0, 0 if x_batched else None))(params, x)


# --- training ---
@dataclass
class Schedule:
    """(eps, alpha) per sweep: ``(eps0, alpha0)`` for the first ``switch`` sweeps, then ``(eps, alpha)``.

    Each value is a float (every seed alike) or an (S,) tensor (one value per seed, so that
    several recipes run as one ensemble)."""
    eps: float | torch.Tensor
    alpha: float | torch.Tensor
    eps0: float | torch.Tensor | None = None
    alpha0: float | torch.Tensor | None = None
    switch: int = 0

    def __call__(self, t: int) -> tuple[float, float]:
        if t < self.switch:
            return self.eps0, self.alpha0
        return self.eps, self.alpha


@dataclass
class Result:
    solved_at: torch.Tensor            # (S,) sweeps (weight changes) made before the criterion held; -1 never
    params: dict                       # final (or frozen-at-solve) parameters, (S, ...)
    loss: torch.Tensor                 # (S,) error at the last forward
    outputs: torch.Tensor              # (S, N, out) at the last forward
    sweeps_run: int
    seconds: float                     # wall clock
    cpu_seconds: float = 0.0           # CPU time of this process (the box may be shared)
    history: list = field(default_factory=list)   # (sweep, median loss, solved fraction)
    milestones: dict = field(default_factory=dict)  # name -> (S,) first sweep an extra criterion held; -1 never
    at_solve: dict = field(default_factory=dict)    # without freeze_solved: parameters at the solving sweep


def _per_seed(v, idx: torch.Tensor, like: torch.Tensor):
    """A float, or an (S,) tensor's values for the seeds in the working set shaped to broadcast over ``like``."""
    if isinstance(v, torch.Tensor):
        return v.to(like.dtype)[idx].reshape(-1, *([1] * (like.dim() - 1)))
    return v


def train_ensemble(model: torch.nn.Module, params: dict, x: torch.Tensor, d: torch.Tensor, *,
                   sweeps: int, schedule: Schedule, decay: float = 0.0,
                   criterion: Callable | None = all_correct, freeze_solved: bool = True,
                   band: tuple[float, float] | None = None, x_batched: bool = False,
                   milestones: dict[str, Callable] | None = None,
                   callback: Callable | None = None, callback_every: int = 0,
                   mask: dict[str, torch.Tensor] | None = None, forward: Callable | None = None,
                   writer=None, log_every: int = 50, n_seed_curves: int = 8) -> Result:
    """Full-batch training of S nets with eq. 9; see the module docstring.

    ``d`` is (N, out) shared or (S, N, out) per seed (with ``x_batched``). Each sweep: one
    forward of all nets still training, the criterion checked on those outputs (a seed meeting
    it at sweep t has made t weight changes), one backward through torch_bp's rules, one eq.-9
    update. With ``freeze_solved`` a solved seed leaves the working set (its weights stay those
    of its solving sweep) and training stops once every seed is solved. ``band=(lo, hi)`` uses
    the family-tree margin loss. ``milestones`` are extra criteria whose first sweep is
    recorded without stopping anything (give the strictest as ``criterion``). ``decay`` and the
    schedule's values may be (S,) tensors, one per seed. Without ``freeze_solved`` training goes on
    after a seed solves, and ``Result.at_solve`` keeps its parameters of the solving sweep.
    ``callback(t, params, idx, y)`` is called every ``callback_every`` sweeps and at the last one,
    with the working set's parameters (no graph), its seed indices and its outputs at sweep t.
    ``mask`` ({name: (S, ...) 0/1}) fixes the masked weights at their initial value (zero
    connections stay absent), so a smaller net can run padded inside a larger one.
    ``forward(params, x)`` replaces the vmapped module (default ``ensemble_forward``): a batched
    twin of the net (see ``family_trees.batched_forward``) for runs too long for the vmapped rules.
    """
    S = next(iter(params.values())).shape[0]
    final = {n: p.detach().clone() for n, p in params.items()}        # (S, ...) result store
    at_solve = ({n: p.detach().clone() for n, p in params.items()}
                if not freeze_solved and criterion is not None else {})
    dd = d if x_batched else d.expand(S, *d.shape)
    outputs = torch.zeros(dd.shape, dtype=dd.dtype)
    idx = torch.arange(S)                                             # seeds in the working set
    work = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    delta = {n: torch.zeros_like(p) for n, p in work.items()}
    xw, dw = x, dd
    solved_at = torch.full((S,), -1, dtype=torch.long)
    marks = {k: torch.full((S,), -1, dtype=torch.long) for k in (milestones or {})}
    history = []
    t0, c0 = time.perf_counter(), time.process_time()
    t = 0
    while True:
        y = (forward(work, xw) if forward is not None
             else ensemble_forward(model, work, xw, x_batched))     # (S_work, N, out)
        outputs[idx] = y.detach()
        new = None
        if criterion is not None:
            new = criterion(y, dw) & (solved_at[idx] < 0)
            solved_at[idx[new]] = t
        for k, fn in (milestones or {}).items():
            hit = fn(y, dw) & (marks[k][idx] < 0)
            marks[k][idx[hit]] = t
        if new is not None and at_solve and bool(new.any()):
            for n in work:
                at_solve[n][idx[new]] = work[n].detach()[new]
        if callback is not None and callback_every and (t % callback_every == 0 or t == sweeps):
            callback(t, {n: p.detach() for n, p in work.items()}, idx, y.detach())
        if writer is not None and (t % log_every == 0 or t == sweeps):
            _log(writer, t, outputs, dd, solved_at, n_seed_curves, history)
        if freeze_solved and new is not None:
            for n in work:
                final[n][idx[new]] = work[n].detach()[new]
            if bool(new.all()):
                idx = idx[:0]
        if t == sweeps or idx.numel() == 0:
            break
        target = band_targets(y, dw, *band) if band is not None else dw
        grads = torch.autograd.grad(sse(y, target), list(work.values()))
        if freeze_solved and new is not None and bool(new.any()):    # solved seeds leave the working set
            keep = ~new
            work = {n: p.detach()[keep].requires_grad_(True) for n, p in work.items()}
            grads = [g[keep] for g in grads]
            delta = {n: v[keep] for n, v in delta.items()}
            if x_batched:
                xw = xw[keep]
            dw, idx = dw[keep], idx[keep]
        eps, alpha = schedule(t)
        with torch.no_grad():
            for (n, p), g in zip(work.items(), grads):
                a, e = _per_seed(alpha, idx, p), _per_seed(eps, idx, p)
                delta[n] = a * delta[n] - e * g                       # eq. 9
                if mask is not None and n in mask:
                    delta[n] = delta[n] * mask[n][idx]
                p.add_(delta[n])
                if isinstance(decay, torch.Tensor) or decay:
                    p.mul_(1 - _per_seed(decay, idx, p))              # w <- (1 - decay) w after each change
        t += 1
    for n in work:
        final[n][idx] = work[n].detach()
    if at_solve:
        never = solved_at < 0
        for n in at_solve:
            at_solve[n][never] = math.nan                             # no solving sweep
    return Result(solved_at, final, per_seed_sse(outputs, dd), outputs, t,
                  time.perf_counter() - t0, time.process_time() - c0, history, marks, at_solve)


def _log(writer, t, outputs, d, solved_at, n_curves, history):
    loss = per_seed_sse(outputs, d)
    med = float(loss.median())
    frac = float((solved_at >= 0).double().mean())
    history.append((t, med, frac))
    writer.add_scalar("loss/median_over_seeds", med, t)
    writer.add_scalar("solved_fraction", frac, t)
    for i in range(min(n_curves, len(loss))):
        writer.add_scalar(f"loss_per_seed/seed_{i:03d}", float(loss[i]), t)


def train_reference(model: torch.nn.Module, params: dict, x: torch.Tensor, d: torch.Tensor, *,
                    sweeps: int, schedule: Schedule, decay: float = 0.0,
                    band: tuple[float, float] | None = None, trace: list | None = None,
                    trace_every: int = 0) -> dict[str, torch.Tensor]:
    """One seed, a plain loop on the module itself (``loss.backward()``, eq. 9 by hand): the
    reference the vectorised runner is checked against. ``params`` are that seed's tensors.
    With ``trace`` (a list) and ``trace_every``, (sweep, E) is appended every ``trace_every``
    sweeps and after the last."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n])
    delta = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for t in range(sweeps):
        model.zero_grad(set_to_none=True)
        y = model(x)
        target = band_targets(y, d, *band) if band is not None else d
        loss = sse(y, target)
        if trace is not None and trace_every and t % trace_every == 0:
            trace.append((t, float(loss.detach())))
        loss.backward()
        eps, alpha = schedule(t)
        with torch.no_grad():
            for n, p in model.named_parameters():
                delta[n] = alpha * delta[n] - eps * p.grad
                p.add_(delta[n])
                if decay:
                    p.mul_(1 - decay)
    if trace is not None and trace_every:
        with torch.no_grad():
            y = model(x)
            trace.append((sweeps, float(sse(y, band_targets(y, d, *band) if band is not None else d))))
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- reporting ---
def quartiles(v: torch.Tensor) -> tuple[float, float, float]:
    if v.numel() == 0:
        return (math.nan,) * 3
    q = torch.quantile(v.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return tuple(float(a) for a in q)


def summary_row(solved_at: torch.Tensor) -> dict:
    """Success count and sweeps-to-solve statistics of the solved seeds."""
    ok = solved_at[solved_at >= 0].double()
    q1, med, q3 = quartiles(ok)
    return {"seeds": int(solved_at.numel()), "solved": int(ok.numel()),
            "success_rate": float(ok.numel() / max(1, solved_at.numel())),
            "min": float(ok.min()) if ok.numel() else math.nan, "q1": q1, "median": med, "q3": q3,
            "max": float(ok.max()) if ok.numel() else math.nan,
            "mean": float(ok.mean()) if ok.numel() else math.nan}


def writer_for(*parts: str):
    """A SummaryWriter under ``RUNS_ROOT/<parts>`` (TensorBoard imported only here)."""
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(os.path.join(RUNS_ROOT, *parts))


def fmt(v, nd=0) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:,.{nd}f}" if isinstance(v, float) else str(v)


def markdown_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
