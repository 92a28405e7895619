r"""Embedding: a lookup of rows of a weight matrix by index.

Compiled (csrc/cpu/embedding.cpp): the lookup, and the backward as one write of each row of
grad_W (the positions grouped by index first) instead of zeros plus an index_add.
"""
from __future__ import annotations

import torch

from .. import backend
from ._util import example_rows, opmath, out_buffer, own, plain_eager
from ._rule import Rule


# --- Embedding ---
class EmbeddingFunction(Rule):
    r"""Rows of W selected by integer indices.

    Forward:   y[..., :] = W[i[...], :]                    i: (*) integer, W: (V, D), y: (*, D)
    Backward:  grad_W[v] = sum over positions n with i[n] = v of c_n * grad_y[n]
               with c_n = 0 where i[n] = padding_idx, else 1 / count(i[n]) under
               scale_grad_by_freq (count over this batch), else 1. No gradient for i.
               sparse: the same numbers as torch's sparse COO tensor: indices i[n] and values grad_y[n]
               for the positions n with i[n] != padding_idx, in input order, uncoalesced (size (V, D));
               with scale_grad_by_freq the backward raises, as torch's
    Saved:     i (W itself is not needed: the gradient is a scatter of grad_y rows)
    Per example n: grad_W[n] = the scatter of example n's rows only (B x V x D numbers);
               ||grad_W[n]||^2 = sum over its positions t, s with i_t = i_s of c_t c_s grad_y_t . grad_y_s
               (ghost norm, no (V, D) matrix, when R^2 <= V for R positions per example).
               The weights c use this batch's counts under scale_grad_by_freq, so that the
               per-example terms sum to grad_W (they are not the gradients of single examples then).
    Double backward: yes (the backward is an index_add, linear in grad_y)
    """

    compiled = ("embedding_fwd", "embedding_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(indices, weight, padding_idx, scale_grad_by_freq, sparse):
        if backend.use_cpp(weight):  # the same lookup, compiled (csrc/cpu/embedding.cpp)
            return torch.ops.torch_bp.embedding_fwd(indices, weight)
        flat = indices.reshape(-1)
        return own(weight.index_select(0, flat).reshape(*indices.shape, weight.shape[1]))

    @staticmethod
    def setup_context(ctx, inputs, output):
        indices, weight, ctx.padding_idx, ctx.scale_grad_by_freq, ctx.sparse = inputs
        ctx.grad_dtype = weight.dtype
        ctx.num_weights = weight.shape[0]
        ctx.save_for_backward(indices)

    @staticmethod
    def backward(ctx, grad_y):
        (indices,) = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None, None, None
        if ctx.sparse:
            flat = indices.reshape(-1)
            return None, _sparse_rows(ctx, flat, grad_y.reshape(flat.shape[0], grad_y.shape[-1])), None, None, None
        if backend.use_cpp(grad_y):  # the same rule, compiled (csrc/cpu/embedding.cpp)
            grad_w = torch.ops.torch_bp.embedding_bwd(grad_y, indices, ctx.num_weights, ctx.padding_idx,
                                                      ctx.scale_grad_by_freq)
            return None, grad_w, None, None, None
        flat = indices.reshape(-1)  # (n,)
        rows = opmath(grad_y.reshape(flat.shape[0], grad_y.shape[-1]))  # (n, D)
        if ctx.scale_grad_by_freq:
            counts = torch.bincount(flat, minlength=ctx.num_weights)  # (V,)
            rows = rows / counts.index_select(0, flat).unsqueeze(1).to(rows.dtype)
        if ctx.padding_idx is not None:
            rows = torch.where((flat == ctx.padding_idx).unsqueeze(1), 0, rows)
        grad_w = rows.new_zeros(ctx.num_weights, rows.shape[1])
        # in place into the zeros (index_add would copy them first), except where rows may be
        # batched by a torch.func transform and the zeros are not
        grad_w = grad_w.index_add_(0, flat, rows) if plain_eager() else grad_w.index_add(0, flat, rows)
        return None, grad_w.to(grad_y.dtype), None, None, None

    @staticmethod
    def per_sample(ctx, batch_dim, grad_y, out=None):
        if not ctx.needs_input_grad[1]:
            return {}
        idx, rows = _example_rows(ctx, batch_dim, grad_y)        # (B, R), (B, R, D)
        (b, r, d), v = rows.shape, ctx.num_weights
        flat = (idx + torch.arange(b, device=idx.device).unsqueeze(1) * v).reshape(-1)   # row of (B*V, D)
        buf = out_buffer(out, 1, (b, v, d), rows.dtype)
        acc = buf.zero_() if buf is not None else rows.new_zeros(b, v, d)
        acc.view(b * v, d).index_add_(0, flat, rows.reshape(b * r, d))
        return {1: acc.to(grad_y.dtype)}

    @staticmethod
    def per_sample_norm_sq(ctx, batch_dim, grad_y):
        if not ctx.needs_input_grad[1]:
            return {}
        idx, rows = _example_rows(ctx, batch_dim, grad_y)
        if idx.shape[1] ** 2 > ctx.num_weights:   # the R x R ghost costs more than the (V, D) gradient
            g = EmbeddingFunction.per_sample(ctx, batch_dim, grad_y)[1]
            return {1: opmath(g).reshape(g.shape[0], -1).square().sum(1)}
        same = idx.unsqueeze(2) == idx.unsqueeze(1)              # (B, R, R): positions with one index
        return {1: (torch.bmm(rows, rows.transpose(1, 2)) * same).sum((1, 2))}


def _sparse_rows(ctx, flat, rows):
    """grad_W as torch's sparse COO tensor: the rows (n, D) of the index positions ``flat`` (n,), the padding_idx
    positions dropped; input order, uncoalesced, size (V, D). scale_grad_by_freq raises here, as torch's backward."""
    if ctx.scale_grad_by_freq:
        raise RuntimeError("embedding_backward: scale_grad_by_freq not supported with sparse gradients")
    if ctx.padding_idx is not None:
        keep = flat != ctx.padding_idx
        flat, rows = flat[keep], rows[keep]
    # indices in [0, V) by construction (the forward's lookup checked them): no invariant check
    return torch.sparse_coo_tensor(flat.unsqueeze(0), rows.to(ctx.grad_dtype), (ctx.num_weights, rows.shape[1]),
                                   check_invariants=False)


def _example_rows(ctx, batch_dim, grad_y):
    """Per example: its indices (B, R) and its rows of grad_y (B, R, D), weighted as in backward."""
    (indices,) = ctx.saved_tensors
    flat = indices.reshape(-1)
    rows = opmath(grad_y.reshape(flat.shape[0], grad_y.shape[-1]))
    if ctx.scale_grad_by_freq:
        counts = torch.bincount(flat, minlength=ctx.num_weights)
        rows = rows / counts.index_select(0, flat).unsqueeze(1).to(rows.dtype)
    if ctx.padding_idx is not None:
        rows = torch.where((flat == ctx.padding_idx).unsqueeze(1), 0, rows)
    idx = example_rows(indices.unsqueeze(-1), batch_dim, 1).squeeze(2)
    return idx, example_rows(rows.reshape(*indices.shape, rows.shape[1]), batch_dim, rows.shape[1])


# --- EmbeddingBag ---
_MODES = {"sum": 0, "mean": 1, "max": 2}


def bag_of_each_index(n: int, offsets: torch.Tensor, bags: int) -> torch.Tensor:
    """(n,): the bag of every index position: the last b with offsets[b] <= i (offsets of the ``bags`` bags)."""
    i = torch.arange(n, device=offsets.device)
    return torch.searchsorted(offsets[:bags].contiguous(), i, right=True) - 1


def _keep(input, padding_idx):
    """[input[i] != padding_idx] (all True without a padding index)."""
    return torch.ones_like(input, dtype=torch.bool) if padding_idx is None else input != padding_idx


class EmbeddingBagFunction(Rule):
    r"""Bags of embeddings reduced by sum, mean or max (``F.embedding_bag`` with 1-d indices and offsets).

    Forward:   bag b holds the index positions i with bag(i) = b (from offsets), minus those with
               input[i] = padding_idx;   sum: y[b] = sum_i s_i W[input[i]]  (s: per_sample_weights, or 1);
               mean: the sum / |bag|;   max: y[b, d] = max_i W[input[i], d] (torch's index m[b, d]);
               an empty bag gives 0
    Backward:  sum/mean: grad_W[input[i]] += grad_y[bag(i)] s_i / (mean: |bag(i)|);
               max: grad_W[m[b, d], d] += grad_y[b, d] over non-empty bags;
               grad_s[i] = <grad_y[bag(i)], W[input[i]]>   (sum mode; 0 at padding_idx)
               scale_grad_by_freq (sum/mean): grad_W's term of position i divided by count(input[i]), the
               number of positions of that index in ``input`` (this mini-batch), as torch.embedding's
               sparse (sum/mean): grad_W as torch's sparse COO tensor: indices input[i] and values the terms above,
               for the positions i outside padding_idx, in input order, uncoalesced (size (V, D)); with
               scale_grad_by_freq the backward raises, as torch's
    Saved:     indices, bag of each index, bag sizes, max indices (max mode only), weight and per_sample_weights
               (the padding mask input != padding_idx is recomputed from the indices)
    Double backward: yes (index_add / scatter_add / gathers of saved tensors, linear in grad_y)

    NOTE: torch's CPU kernel (torch 2.13, dense gradient) divides the term of the k-th distinct index (in sorted
    order) by the count of the k-th entry of the sorted indices, not of that index: with repeated indices its
    gradient is not the inverse-frequency scaling it documents. Ours is (tests/test_embedding_options.py checks it
    against torch.embedding's scale_grad_by_freq; the harness compares with torch where every index has one count).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(weight, input, offsets, per_sample_weights, mode, padding_idx, include_last_offset,
                scale_grad_by_freq, sparse):
        # NOTE: the ATen op, for torch's max indices (torch.embedding_bag returns them only when it records a
        # gradient, which a Function's forward does not); the other outputs are recomputed in setup_context
        if weight.shape[1] == 0:  # no columns: the ATen op reads out of bounds here; the result is empty anyway
            bags = offsets.shape[0] - int(include_last_offset)
            return weight.new_zeros(bags, 0), offsets.new_zeros(bags, 0, dtype=torch.int64)
        # (contiguous indices and offsets: the ATen op reads their storage as if they were)
        out, _, _, max_idx = torch.ops.aten._embedding_bag(weight, input.contiguous(), offsets.contiguous(),
                                                           scale_grad_by_freq, _MODES[mode], False, per_sample_weights,
                                                           include_last_offset,
                                                           -1 if padding_idx is None else padding_idx)
        return out, max_idx

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, input, offsets, psw, ctx.mode, padding_idx, _, ctx.scale_grad_by_freq, ctx.sparse = inputs
        ctx.num_weights, ctx.padding_idx, ctx.grad_dtype = weight.shape[0], padding_idx, weight.dtype
        out, max_idx = output
        ctx.mark_non_differentiable(max_idx)
        bags = out.shape[0]
        bag = bag_of_each_index(input.shape[0], offsets, bags)
        ctx.padding_idx = padding_idx
        size = torch.zeros(bags, dtype=weight.dtype, device=weight.device).index_add(
            0, bag, _keep(input, padding_idx).to(weight.dtype))
        ctx.has_psw = psw is not None
        # the padding mask is recomputed from the indices; torch's max indices are needed in max mode only
        ctx.save_for_backward(weight, input, bag, size, max_idx if ctx.mode == "max" else None, psw)

    @staticmethod
    def backward(ctx, grad_y, _grad_idx):
        weight, input, bag, size, max_idx, psw = ctx.saved_tensors
        grad_w = grad_psw = None
        keep = _keep(input, ctx.padding_idx)
        g = grad_y.index_select(0, bag) * keep.unsqueeze(1).to(grad_y.dtype)  # (n, D): each index's bag gradient
        if ctx.needs_input_grad[0]:
            if ctx.mode == "max":
                nonempty = (size > 0).to(grad_y.dtype).unsqueeze(1)
                d = weight.shape[1]
                flat = (max_idx * d + torch.arange(d, device=weight.device)).reshape(-1)
                grad_w = weight.new_zeros(weight.numel()).scatter_add(0, flat, (grad_y * nonempty).reshape(-1))
                grad_w = grad_w.view(weight.shape)
            else:
                rows = g
                if ctx.has_psw:
                    rows = rows * psw.unsqueeze(1)
                if ctx.mode == "mean":
                    rows = rows / size.clamp(min=1).index_select(0, bag).unsqueeze(1)
                if ctx.sparse:
                    grad_w = _sparse_rows(ctx, input, rows)
                else:
                    if ctx.scale_grad_by_freq:
                        idx = input.long()
                        counts = torch.bincount(idx, minlength=weight.shape[0])
                        rows = rows / counts.index_select(0, idx).unsqueeze(1).to(rows.dtype)
                    grad_w = weight.new_zeros(weight.shape).index_add(0, input, rows)
        if ctx.has_psw and ctx.needs_input_grad[3]:
            grad_psw = (g * weight.index_select(0, input)).sum(1)
        return grad_w, None, None, grad_psw, None, None, None, None, None
