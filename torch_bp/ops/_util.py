"""Small helpers shared by the rules in ``torch_bp.ops``."""
from __future__ import annotations

import functools

import torch

from .. import _compat
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def opmath(t: torch.Tensor) -> torch.Tensor:
    """Upcast float16/bfloat16 to float32 for intermediate math, as torch's own kernels do.

    NOTE: a chain of elementwise ops evaluated in bfloat16 rounds after every op; torch's
    fused kernels compute in float32 and round once. Computing in float32 and casting the
    result back keeps us within one rounding of torch.
    """
    return t.float() if t.dtype in _LOW_PRECISION else t


def sum_to_size(t: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient back to ``size`` (the inverse of broadcasting)."""
    return t if t.shape == size else t.sum_to_size(size)


# --- helpers of the per-sample rules (see torch_bp/per_sample.py) ---
def example_rows(t: torch.Tensor, batch_dim: int, d: int) -> torch.Tensor:
    """(B, R, d): the rows of each example of ``t`` (*lead, d...), where B = t.shape[batch_dim]
    and ``batch_dim`` is one of the leading dims; the other leading dims (R rows) stay within
    each example (a view when ``batch_dim`` is 0 and ``t`` is contiguous)."""
    if not 0 <= batch_dim < t.dim() - 1:
        raise ValueError(f"per-sample gradients: batch_dim={batch_dim} is not a leading dim of an input "
                         f"of shape {tuple(t.shape)} (unbatched inputs have no per-example gradient)")
    b = t.shape[batch_dim]
    return t.movedim(batch_dim, 0).reshape(b, -1, d)


def out_buffer(out, i: int, shape, dtype) -> torch.Tensor | None:
    """The buffer ``out[i]`` offered to a per-sample rule, if it has this shape and dtype."""
    buf = None if out is None else out.get(i)
    if buf is not None and buf.shape == tuple(shape) and buf.dtype == dtype and buf.is_contiguous():
        return buf
    return None


# What a per_sample_grads block hands a rule's backward (torch_bp/per_sample.py sets these on the
# ctx in a pre-hook of the rule's node, just before its backward, and removes them when the block
# closes; each pre-hook first removes what an earlier backward of the node was left).
def summed_per_sample(ctx, i: int) -> torch.Tensor | None:
    """Input ``i``'s ordinary gradient as the batch sum of the per-example gradients that a
    ``per_sample_grads`` block has just computed for it, if the rule chose ``i`` for this
    (``grad_from_per_sample``) and the backward builds no graph; else None (compute it as usual)."""
    stash = getattr(ctx, "per_sample_results", None)
    if not stash or i not in stash:
        return None
    g, dtype = stash[i]
    return g.sum(0).to(dtype)


def backward_from_per_sample(ctx) -> tuple | None:
    """The gradients that the rule's ``backward_per_sample`` has just returned in a
    ``per_sample_grads`` block (the same pass gave the per-example ones), else None."""
    return getattr(ctx, "per_sample_backward", None)


# --- masks as bits (the Python twin of csrc's pack_mask / mask_bwd layout) ---
_BIT_WEIGHTS: dict = {}


def plain_eager() -> bool:
    """True outside torch.compile tracing and torch.func transforms (where rules save plainly)."""
    return not torch.compiler.is_compiling() and not _compat.transforms_active()


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bits: bit i % 8 of byte i // 8 is element i of the flattened mask."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    w = _BIT_WEIGHTS.get(mask.device)
    if w is None:
        w = _BIT_WEIGHTS[mask.device] = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8,
                                                     device=mask.device)
    return (flat.view(torch.uint8).view(-1, 8) * w).sum(-1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The bool tensor of ``shape`` that :func:`pack_bits` packed."""
    n = shape.numel()
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits.unsqueeze(-1) >> shifts) & 1).view(-1)[:n].view(shape).bool()


# --- rules without a double backward ---
def first_order_only(backward):
    """Decorates the ``backward`` of a rule that has no double backward (instead of torch's
    ``once_differentiable``): the rule runs under no_grad, and under ``create_graph=True`` (grad
    mode on in the backward) it raises whenever it is to give a gradient (the gradient would not
    be differentiable) or a grad_output or a saved tensor requires grad.

    NOTE: ``once_differentiable`` raises only if the graph later reaches its error node through
    the grad_outputs; a second-order gradient that reaches the rule through a saved tensor (a
    gradient penalty differentiated with respect to an earlier layer's weight) would silently
    miss the rule's own dependence on that tensor. Raising at the first-order backward leaves no
    path by which such a number can escape.
    """
    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        if torch.is_grad_enabled() and (
                any(ctx.needs_input_grad)
                or any(isinstance(g, torch.Tensor) and g.requires_grad for g in grad_outputs)
                or any(t is not None and t.requires_grad for t in ctx.saved_tensors)):
            raise RuntimeError(
                f"{type(ctx).__name__[:-len('Backward')]}: double backward is not supported by this torch_bp "
                "rule (a backward with create_graph=True through it); see the README's layer table for "
                "the rules that support it")
        with torch.no_grad():
            return backward(ctx, *grad_outputs)
    return wrapper


# --- outputs the caller may modify in place ---
def own(t):
    """``t``, a tensor a Function's forward returns, as a tensor that is not a view.

    NOTE: autograd forbids in-place changes to a custom Function's output that is a view of a
    tensor made inside its forward (``y = f(x); y += 1`` would raise), so an output formed by
    ``reshape``/``view``/``permute`` of a forward intermediate is returned through
    ``aten::_unsafe_view``: the same memory, not marked as a view (torch's own kernels return
    reshaped results the same way; the public alternative, a copy, costs an output's worth of
    memory). Only for outputs whose base the rule keeps nowhere else: what the rule saves of an
    output must be the output itself (``setup_context``'s ``output``), so that autograd's version
    check sees an in-place change.
    """
    if isinstance(t, torch.Tensor) and t._base is not None:
        return torch.ops.aten._unsafe_view(t, t.shape)
    return t
