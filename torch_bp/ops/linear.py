"""Linear layer: y = x W^T + b."""
from __future__ import annotations

import functools
import math

import torch

from . import _lean
from .. import backend
from . import activation as _act
from ._util import example_rows, opmath, out_buffer, own, summed_per_sample
from ._rule import Rule


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(*, n) -> (N, n), also when n == 0 (where reshape(-1, 0) is ambiguous)."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


# --- Linear ---
class LinearFunction(Rule):
    r"""Affine map over the last dim.

    Forward:   y = x W^T + b                      x: (*, in), W: (out, in), b: (out,)
    Backward:  grad_x = grad_y W
               grad_W = grad_y^T x                (rows of all leading dims summed)
               grad_b = sum of grad_y over all leading dims
    Saved:     x, W                               Double backward: yes (matmuls are differentiable)
               Lean: when x = f(h) has a recompute recipe (the output of GELU, SiLU, a layer or RMS
               norm, a SwiGLU product, a dropout of one of these: ops/_lean.py), h and the recipe's
               deps (kept by those rules anyway) are saved instead of x, and x = f(h) is recomputed
               (bit-identical) in the backward; not under torch.compile tracing or torch.func transforms
    Per example n (its rows x_n (R, in), grad_y_n (R, out); R = 1 without a sequence dim):
               grad_W[n] = grad_y_n^T x_n   (an outer product when R = 1),  grad_b[n] = sum_r grad_y_n[r]
               ||grad_W[n]||^2 = sum((grad_y_n grad_y_n^T) * (x_n x_n^T))   (ghost norm, no (out, in)
               matrix; used when R (in + out) <= in out, else the norm of grad_W[n] itself)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):
        x2 = _rows(x)  # (N, in)
        if bias is None:
            y = x2.matmul(weight.t())
        else:
            y = torch.addmm(bias, x2, weight.t())  # one rounding, as torch's addmm
        return own(y.reshape(*x.shape[:-1], weight.shape[0]))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.has_bias = bias is not None
        lean = _lean.recipe(x)
        ctx.recompute_x = None if lean is None else lean[1]
        if lean is None:
            ctx.save_for_backward(x, weight)
        else:  # the recipe's deps are saved too, so that an in-place change of them is caught in backward
            ctx.save_for_backward(lean[0], weight, *_lean.deps(x))

    @staticmethod
    def _saved(ctx):
        """(x, W), recomputing x from the activation input saved in its place (see Lean)."""
        x, weight = ctx.saved_tensors[:2]
        if ctx.recompute_x is not None:
            x = ctx.recompute_x(x)
        return x, weight

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = LinearFunction._saved(ctx)
        grad_x = grad_w = grad_b = None
        g2 = _rows(grad_y)  # (N, out)
        # conj(): complex inputs get torch's convention (grad = grad_y times the conjugate Jacobian);
        # a no-op for real tensors
        if ctx.needs_input_grad[0]:
            grad_x = grad_y.matmul(weight.conj())
        if ctx.needs_input_grad[1]:
            grad_w = summed_per_sample(ctx, 1)   # in a per_sample_grads block: the batch sum of grad_W[n]
        if ctx.needs_input_grad[1] and grad_w is None:
            grad_w = g2.t().matmul(_rows(x).conj())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, out=None):
        x, weight = LinearFunction._saved(ctx)
        xr = example_rows(x, batch_dim, x.shape[-1])             # (B, R, in)
        gr = example_rows(grad_y, batch_dim, grad_y.shape[-1])   # (B, R, out)
        res = {}
        if ctx.needs_input_grad[1]:
            buf = out_buffer(out, 1, (xr.shape[0],) + weight.shape, weight.dtype)
            if xr.shape[1] == 1:
                res[1] = torch.mul(gr.transpose(1, 2), xr, **({"out": buf} if buf is not None else {}))
            else:
                res[1] = torch.bmm(gr.transpose(1, 2), xr, **({"out": buf} if buf is not None else {}))
                # NOTE: with four or more rows per example the batch sum of these reads no more than
                # the matmul for grad_W would; with one row it would read B x more.
                ctx.grad_from_per_sample = (1,) if xr.shape[1] >= 4 else ()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            res[2] = gr.sum(1)
        return res

    @staticmethod
    def per_sample_norm_sq(ctx, batch_dim, grad_y):
        x, weight = LinearFunction._saved(ctx)
        xr = opmath(example_rows(x, batch_dim, x.shape[-1]))
        gr = opmath(example_rows(grad_y, batch_dim, grad_y.shape[-1]))
        rows, (n_out, n_in) = xr.shape[1], weight.shape
        res = {}
        g_sq = gr.square().sum((1, 2)) if rows == 1 else None   # = ||grad_b[n]||^2 too when rows == 1
        if ctx.needs_input_grad[1]:
            if rows == 1:
                res[1] = g_sq * xr.square().sum((1, 2))
            elif rows * (n_in + n_out) <= n_in * n_out:
                res[1] = (torch.bmm(gr, gr.transpose(1, 2)) * torch.bmm(xr, xr.transpose(1, 2))).sum((1, 2))
            else:
                res[1] = torch.bmm(gr.transpose(1, 2), xr).square().sum((1, 2))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            res[2] = g_sq if rows == 1 else gr.sum(1).square().sum(1)
        return res


# ======================================================================================
# --- Linear + activation: the fused epilogue --- (compiled backend)
# ======================================================================================
class BiasActivationFunction(Rule):
    r"""The epilogue of a linear layer: y = act(h + b), act one of relu, gelu, silu.

    Forward:   z = h + b   (b broadcast along the last dim; z = h without b),   y = act(z)
    Backward:  grad_z = grad_y * act'(z), the rule of ReLUFunction, GELUFunction or SiLUFunction
               (relu_grad, gelu_grad, silu_grad in ops/activation.py)
               grad_h = grad_z,   grad_b = sum of grad_z over all leading dims
    Saved:     h, b (z is recomputed: no (N, C) tensor of its own). The compiled relu saves
               its mask [not z <= 0] instead, 1 bit per element: the second output, None otherwise.
    Lean:      where h is saved, records y = act(h + b) as a recompute recipe (ops/_lean.py): a
               linear that follows saves h, kept here anyway, instead of y
    Double backward: yes (the activations' rules are differentiable in z = h + b)

    With h = x W^T from :class:`LinearFunction` (no bias), this is ``act(linear(x, W, b))`` with
    the bias add, the activation and, in backward, grad_b in one pass each (csrc/cpu/linear.cpp).
    """

    compiled = ("bias_act_fwd", "bias_act_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(h, bias, activation, approximate):
        if (bias is None or bias.shape == h.shape[-1:]) and backend.use_cpp(h, bias, op="bias_act_fwd"):  # csrc/cpu/linear.cpp
            y, mask = torch.ops.torch_bp.bias_act_fwd(h, bias, activation, approximate)
            return y, (mask if activation == "relu" else None)
        z = h if bias is None else h + bias
        if activation == "relu":
            return _act.ReLUFunction.forward(z), None
        if activation == "gelu":
            return _act.GELUFunction.forward(z, approximate), None
        return _act.SiLUFunction.forward(z), None

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, bias, ctx.activation, ctx.approximate = inputs
        _, mask = output
        ctx.packed, ctx.has_bias = mask is not None, bias is not None
        if ctx.packed:
            ctx.mark_non_differentiable(mask)
        ctx.save_for_backward(mask if ctx.packed else h, bias)
        if not ctx.packed:   # y = act(h + b): a linear that follows saves h (kept here) instead of y
            _lean.record(output[0], h, functools.partial(_bias_act_again, bias, ctx.activation, ctx.approximate),
                         bias)

    @staticmethod
    def backward(ctx, grad_y, _grad_mask):
        h, bias = ctx.saved_tensors  # h: relu's bit mask when ctx.packed
        bias_grad = ctx.has_bias and ctx.needs_input_grad[1]
        if ctx.packed and not torch.is_grad_enabled() or not ctx.packed and backend.use_cpp(h, bias, grad_y, op="bias_act_bwd"):
            grad_z, grad_b = torch.ops.torch_bp.bias_act_bwd(grad_y, h, bias, ctx.activation, ctx.approximate,
                                                             bias_grad)
            return grad_z if ctx.needs_input_grad[0] else None, grad_b, None, None
        if ctx.packed:  # double backward through relu's mask: mask_bwd is differentiable in grad_y
            grad_z = torch.ops.torch_bp.mask_bwd(grad_y, h, None)
        else:
            z = h if bias is None else h + bias
            if ctx.activation == "relu":
                grad_z = _act.relu_grad(z, grad_y)
            elif ctx.activation == "gelu":
                grad_z = _act.gelu_grad(z, grad_y, ctx.approximate)
            else:
                grad_z = _act.silu_grad(z, grad_y)
        grad_b = _rows(grad_z).sum(0) if bias_grad else None
        return grad_z if ctx.needs_input_grad[0] else None, grad_b, None, None


def _bias_act_again(bias, activation, approximate, h):
    """y = act(h + b) once more (a lean rule's recompute recipe): the forward's code, so y is
    bit-identical; through the rule (differentiable) under create_graph."""
    if torch.is_grad_enabled():
        return BiasActivationFunction.apply(h, bias, activation, approximate)[0]
    return BiasActivationFunction.forward(h, bias, activation, approximate)[0]


# --- Bilinear ---
class BilinearFunction(Rule):
    r"""Bilinear map of two inputs: x1 (*, I), x2 (*, J), A (O, I, J), b (O,) or None.

    Forward:   y_o = sum_ij x1_i A_oij x2_j + b_o                               (*, O)
    Backward:  grad_x1_i = sum_oj g_o A_oij x2_j,   grad_x2_j = sum_oi g_o A_oij x1_i
               grad_A_oij = sum over rows of g_o x1_i x2_j,   grad_b = sum over rows of g
    Saved:     x1, x2, A                 Double backward: yes (einsums of saved inputs and g)
    bfloat16/float16: each einsum in float32, rounded once.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x1, x2, weight, bias):
        y = torch.einsum("...i,oij,...j->...o", opmath(x1), opmath(weight), opmath(x2))
        return own((y if bias is None else y + opmath(bias)).to(x1.dtype))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, weight, bias = inputs
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x1, x2, weight)

    @staticmethod
    def backward(ctx, g):
        x1, x2, weight = ctx.saved_tensors
        need, dtype = ctx.needs_input_grad, x1.dtype
        gf, a, b, w = opmath(g), opmath(x1), opmath(x2), opmath(weight)
        grad_x1 = torch.einsum("...o,oij,...j->...i", gf, w, b).to(dtype) if need[0] else None
        grad_x2 = torch.einsum("...o,oij,...i->...j", gf, w, a).to(dtype) if need[1] else None
        grad_w = torch.einsum("...o,...i,...j->oij", gf, a, b).to(dtype) if need[2] else None
        grad_b = gf.reshape(-1, g.shape[-1]).sum(0).to(dtype) if ctx.has_bias and need[3] else None
        return grad_x1, grad_x2, grad_w, grad_b
