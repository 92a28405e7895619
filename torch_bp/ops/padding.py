r"""Padding: constant (zeros), reflect, replicate and circular, over the last 1, 2 or 3 dims.

Notation for one padded dim: input size H, padding (lo, hi) (negative: a crop), output size
``Ho = lo + H + hi``; output position o sits at input coordinate ``i = o - lo``. Every mode is
a gather along each padded dim: the value at i is ``x[src(i)]`` where

    constant:   src(i) = i for 0 <= i < H, otherwise the constant (no source)
    reflect:    src(i) = |i| reflected at both ends without repeating the edge:
                |i| for i < H, 2 (H - 1) - |i| beyond   (needs lo, hi < H)
    replicate:  src(i) = clamp(i, 0, H - 1)
    circular:   src(i) = i mod H                        (needs lo, hi <= H; with a negative lo or hi,
                torch crops first and wraps around the kept range [a, b): a + (i - a) mod (b - a))

so the adjoint of each is a scatter-add with the same indices: every copy's gradient goes back
to the one element it was copied from (a reflection pad folds the border's gradient back onto
the inside, a replicate pad piles it onto the edge, a circular pad wraps it around).
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF

from ._rule import Rule
from ._util import opmath


def pad_index(size: int, lo: int, hi: int, mode: str, device) -> torch.Tensor:
    """``src(i)`` of the module docstring for every output position of one ``reflect``/``replicate``/
    ``circular`` padded dim (a crop, lo or hi negative, drops the first or last positions)."""
    i = torch.arange(-lo, size + hi, device=device)
    if mode == "reflect":
        i = i.abs()
        return torch.where(i >= size, 2 * (size - 1) - i, i)
    if mode == "replicate":
        return i.clamp(0, size - 1)
    # circular: torch crops first (a negative lo or hi), then wraps around what is left, [a, b)
    a, b = max(-lo, 0), size - max(-hi, 0)
    return a + (i - a).remainder(b - a)


def unpad(grad_y: torch.Tensor, sizes, pad, mode: str) -> torch.Tensor:
    r"""Adjoint of padding the trailing ``len(sizes)`` dims by ``pad = ((lo, hi), ...)`` (first dim first).

    constant: ``pad(grad_y, -lo, -hi)``, a crop where the forward padded and zeros where it cropped;
    reflect/replicate/circular: ``zeros(H).index_add(src, grad_y)`` along each dim (:func:`pad_index`).
    """
    nd = len(sizes)
    g = grad_y
    if mode in ("constant", "zeros"):
        return TF.pad(g, [-v for lo_hi in reversed(pad) for v in lo_hi])
    for i, ((lo, hi), size) in enumerate(zip(pad, sizes)):
        dim = g.dim() - nd + i
        if lo or hi:
            shape = list(g.shape)
            shape[dim] = size
            g = g.new_zeros(shape).index_add(dim, pad_index(size, lo, hi, mode, g.device), g)
    return g


# --- ConstantPad / ZeroPad / ReflectionPad / ReplicationPad / CircularPad (1d, 2d, 3d) ---
class PadFunction(Rule):
    r"""``F.pad(x, pad, mode, value)``: a gather along each padded dim (see the module docstring).

    Forward:   y[o] = x[src(o - lo)] on each padded dim (or ``value`` where constant mode has no source)
    Backward:  grad_x = unpad(grad_y): constant: grad_y cropped by (lo, hi) (zero-extended where
               the forward cropped); other modes: grad_x[src(i)] += grad_y[i + lo], dim by dim
    Saved:     nothing but the input sizes (ints)
    Double backward: yes (crop and index_add are differentiable, and linear in grad_y)

    ``pad`` is torch's flat list, last dim first: (lo_last, hi_last, lo_prev, hi_prev, ...).
    Reflect/replicate/circular accumulate in float32 for bfloat16/float16 (rounded once).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, pad, mode, value):
        return TF.pad(x, pad, mode, value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, pad, ctx.mode, _ = inputs
        nd = len(pad) // 2
        ctx.sizes = tuple(x.shape[x.dim() - nd:])
        ctx.pairs = tuple((pad[2 * (nd - 1 - i)], pad[2 * (nd - 1 - i) + 1]) for i in range(nd))  # first dim first

    @staticmethod
    def backward(ctx, grad_y):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        if ctx.mode == "constant":
            return unpad(grad_y, ctx.sizes, ctx.pairs, "constant"), None, None, None
        return unpad(opmath(grad_y), ctx.sizes, ctx.pairs, ctx.mode).to(grad_y.dtype), None, None, None
