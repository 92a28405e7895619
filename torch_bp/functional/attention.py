"""``torch_bp.functional``: scaled dot-product and multi-head attention. See the package docstring."""
from __future__ import annotations

import math

import torch

from .._amp import autocast_inputs
from ..ops import attention as _attn
from .linear import linear


def _attention_seed(dropout_p):
    """The seed of the dropout masks of one attention call (drawn from torch's default generator)."""
    return int(torch.randint(0, 2 ** 62, (1,)).item()) if dropout_p > 0 else 0


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    query, key, value = autocast_inputs("scaled_dot_product_attention", query, key, value)
    if attn_mask is not None and attn_mask.is_floating_point():
        (attn_mask,) = autocast_inputs("scaled_dot_product_attention", attn_mask)
    if query.dim() < 2 or key.dim() < 2 or value.dim() < 2:
        raise RuntimeError(f"Expected query, key, and value to all be at least 2 dimensional, but got query.dim: "
                           f"{query.dim()} key.dim: {key.dim()} and value.dim: {value.dim()} instead.")
    if not (query.dtype == key.dtype == value.dtype):
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: "
                           f"{query.dtype} key.dtype: {key.dtype} and value.dtype: {value.dtype} instead.")
    if not (query.device == key.device == value.device):
        raise RuntimeError("Expected query, key, and value to have the same device type, but got "
                           f"{query.device}, {key.device} and {value.device} instead.")
    if query.shape[-1] != key.shape[-1]:
        raise RuntimeError(f"scaled_dot_product_attention: query and key must have the same last dim, got "
                           f"{query.shape[-1]} and {key.shape[-1]}")
    # as torch (2.13, CPU): a key/value length mismatch passes only when there is no query row
    # (an empty batch or L = 0) or the value is empty; an empty key does not excuse it
    lenient = math.prod(query.shape[:-1]) == 0 or value.numel() == 0
    empty = query.numel() == 0 or key.numel() == 0 or value.numel() == 0
    if key.shape[-2] != value.shape[-2] and not lenient:
        raise RuntimeError(f"scaled_dot_product_attention: key and value must have the same sequence length, got "
                           f"{key.shape[-2]} and {value.shape[-2]}")
    if not 0.0 <= dropout_p <= 1.0:
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {dropout_p}")
    if attn_mask is not None:
        if attn_mask.dtype not in (torch.bool, torch.float32, query.dtype):  # as torch
            raise RuntimeError(f"Expected attn_mask dtype to be bool or float or to match query dtype, but got "
                               f"attn_mask.dtype: {attn_mask.dtype} and  query.dtype: {query.dtype} instead.")
        if is_causal and not empty:  # as torch's math kernel (its CPU flash kernel accepts both: see the docs)
            raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when "
                               "is_causal=True")
    groups = 1
    if enable_gqa and query.dim() >= 3 and key.dim() >= 3:
        hq, hk, hv = query.shape[-3], key.shape[-3], value.shape[-3]
        if hk != hv or hq % hk:
            raise RuntimeError("Number of heads in key and value must divide the number of heads in query "
                               f"(got {hq} query heads, {hk} key heads and {hv} value heads)")
        groups = hq // hk
        if groups == 0:  # no query heads: as torch, key and value repeated 0 times (zero gradients)
            key, value, groups = key.narrow(-3, 0, 0), value.narrow(-3, 0, 0), 1
    batch = [t.shape[:-2] for t in (query, key, value)]
    if groups > 1:
        batch = [b[:-1] for b in batch]
    # as torch: with an empty input the output is zeros shaped by q k^T; only query and key are matched
    try:
        if empty:
            _attn.broadcast_shape(*batch[:2])
        else:
            target = _attn.broadcast_shape(*batch) + ((query.shape[-3],) if groups > 1 else ()) \
                + (query.shape[-2], key.shape[-2])
            if attn_mask is not None and _attn.broadcast_shape(attn_mask.shape, target) != target:
                raise RuntimeError(f"attn_mask does not broadcast to {list(target)}")
    except RuntimeError as e:
        raise RuntimeError(f"scaled_dot_product_attention: shapes do not broadcast: query {list(query.shape)}, "
                           f"key {list(key.shape)}, value {list(value.shape)}"
                           + ("" if attn_mask is None else f", attn_mask {list(attn_mask.shape)}") + f" ({e})")
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    seed = _attention_seed(dropout_p)
    return _attn.ScaledDotProductAttentionFunction.apply(query, key, value, attn_mask, bool(is_causal), float(scale),
                                                         groups, float(dropout_p), seed, _out_perm(query, key, value))[0]


def _out_perm(query, key, value):
    """(0, 2, 1, 3) when a 4-d query is laid out in memory as (N, L, H, E) (the heads split off a
    projection by ``view`` and ``transpose(1, 2)``): the output (N, H, L, Ev) then takes that layout
    too, as torch's CPU kernel lays its output out as the query, so that the usual
    ``out.transpose(1, 2).reshape(N, L, H * Ev)`` is a view and the out-projection saves the
    attention output itself, not a copy of it. None otherwise (a contiguous output)."""
    if query.dim() != 4 or key.dim() > 4 or value.dim() > 4 or query.shape[1] == 1 or query.shape[2] == 1:
        return None
    st = query.stride()
    return (0, 2, 1, 3) if st[0] >= st[2] >= st[1] >= st[3] and st[1] > st[3] else None


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
                                 training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
                                 v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                                 is_causal=False):
    return _multi_head_attention(
        query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
        add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training, key_padding_mask, need_weights,
        attn_mask, use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight, static_k, static_v,
        average_attn_weights, is_causal, batch_first=False)


def _multi_head_attention(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k,
                          bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training,
                          key_padding_mask, need_weights, attn_mask, use_separate_proj_weight, q_proj_weight,
                          k_proj_weight, v_proj_weight, static_k, static_v, average_attn_weights, is_causal,
                          batch_first):
    """multi_head_attention_forward for (L, N, E) inputs, or (N, L, E) with ``batch_first`` (the module's).

    The in- and out-projections are our linear rule, the attention our attention rules; the
    outputs come straight out of them (no transpose after the last rule) in the layout asked for.
    """
    import torch.nn.functional as TF  # torch's argument checks, for the same errors and messages

    is_batched = TF._mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    key_padding_mask = TF._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                          other_type=TF._none_or_dtype(attn_mask), other_name="attn_mask",
                                          target_type=query.dtype)
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer module "
                           "method `generate_square_subsequent_mask` to create this mask.")
    causal = is_causal and key_padding_mask is None and not need_weights
    if causal:
        attn_mask = None  # the hint says the mask is causal: our rule applies causality by position
    else:
        attn_mask = TF._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                       target_type=query.dtype, check_other=False)
    # to (N, L, E) views: the inputs of our linear rule
    if not is_batched:
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    elif not batch_first:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    bsz, tgt_len, embed_dim = query.shape
    src_len = key.shape[1]
    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if use_separate_proj_weight:
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's "
                                 f"{value.shape[:2]}")
    elif key.shape != value.shape:
        raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")

    # in-projection (one linear for self-attention, as torch)
    b_q = b_k = b_v = None
    if in_proj_bias is not None:
        b_q, b_k, b_v = in_proj_bias.chunk(3)
    if not use_separate_proj_weight:
        if in_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is False but in_proj_weight is None")
        if query is key and key is value:
            q, k, v = linear(query, in_proj_weight, in_proj_bias).chunk(3, -1)
        else:
            w_q, w_k, w_v = in_proj_weight.chunk(3)
            q, k, v = linear(query, w_q, b_q), linear(key, w_k, b_k), linear(value, w_v, b_v)
    else:
        for w, n in ((q_proj_weight, "q"), (k_proj_weight, "k"), (v_proj_weight, "v")):
            if w is None:
                raise AssertionError(f"use_separate_proj_weight is True but {n}_proj_weight is None")
        eq, ek, ev = query.shape[-1], key.shape[-1], value.shape[-1]  # torch's _in_projection checks
        for w, want, n in ((q_proj_weight, (eq, eq), "query"), (k_proj_weight, (eq, ek), "key"),
                           (v_proj_weight, (eq, ev), "value")):
            if tuple(w.shape) != want:
                raise AssertionError(f"expecting {n} weights shape of {want}, but got {w.shape}")
        for b, n in ((b_q, "query"), (b_k, "key"), (b_v, "value")):
            if b is not None and tuple(b.shape) != (eq,):
                raise AssertionError(f"expecting {n} bias shape of {(eq,)}, but got {b.shape}")
        q, k, v = linear(query, q_proj_weight, b_q), linear(key, k_proj_weight, b_k), linear(value, v_proj_weight, b_v)

    # masks -> one additive float mask broadcastable to (N, H, L, S)
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            if attn_mask.shape != (tgt_len, src_len):
                raise RuntimeError(f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be "
                                   f"{(tgt_len, src_len)}.")
            attn_mask = attn_mask.reshape(1, 1, tgt_len, src_len)
        elif attn_mask.dim() == 3:
            if is_batched and attn_mask.shape != (bsz * num_heads, tgt_len, src_len):
                raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                                   f"{(bsz * num_heads, tgt_len, src_len)}.")
            attn_mask = attn_mask.reshape(bsz, num_heads, tgt_len, src_len)
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")

    q = q.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)   # (N, H, L, D)
    if bias_k is not None and bias_v is not None:
        if static_k is not None:
            raise AssertionError("bias cannot be added to static key.")
        if static_v is not None:
            raise AssertionError("bias cannot be added to static value.")
        k = torch.cat([k, bias_k.reshape(1, 1, embed_dim).expand(bsz, 1, embed_dim)], 1)
        v = torch.cat([v, bias_v.reshape(1, 1, embed_dim).expand(bsz, 1, embed_dim)], 1)
        if attn_mask is not None:
            attn_mask = torch.nn.functional.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = torch.nn.functional.pad(key_padding_mask, (0, 1))
    elif bias_k is not None:
        raise AssertionError("bias_k is set but bias_v is None")
    elif bias_v is not None:
        raise AssertionError("bias_v is set but bias_k is None")
    k = k.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)   # (N, H, S, D)
    v = v.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)
    for name, static in (("k", static_k), ("v", static_v)):
        if static is not None:
            if static.size(0) != bsz * num_heads:
                raise AssertionError(f"expecting static_{name}.size(0) of {bsz * num_heads}, but got {static.size(0)}")
            if static.size(2) != head_dim:
                raise AssertionError(f"expecting static_{name}.size(2) of {head_dim}, but got {static.size(2)}")
    if static_k is not None:
        k = static_k.reshape(bsz, num_heads, -1, head_dim)
    if static_v is not None:
        v = static_v.reshape(bsz, num_heads, -1, head_dim)
    if add_zero_attn:
        k = torch.cat([k, k.new_zeros(bsz, num_heads, 1, head_dim)], 2)
        v = torch.cat([v, v.new_zeros(bsz, num_heads, 1, head_dim)], 2)
        if attn_mask is not None:
            attn_mask = torch.nn.functional.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = torch.nn.functional.pad(key_padding_mask, (0, 1))
    src_len = k.shape[2]
    if key_padding_mask is not None:
        TF._check_key_padding_mask(key_padding_mask, src_len, bsz)
        kpm = key_padding_mask.reshape(bsz, 1, 1, src_len)
        attn_mask = kpm if attn_mask is None else attn_mask + kpm
    if not training:
        dropout_p = 0.0
    seed = _attention_seed(dropout_p)
    scale = math.sqrt(1.0 / float(head_dim))  # as torch's
    if not is_batched:  # attention on (H, L, D): the weights come out as (H, L, S) or (L, S)
        q, k, v = q[0], k[0], v[0]
        attn_mask = None if attn_mask is None else attn_mask[0]
    if need_weights:
        o, weights, _ = _attn.AttentionWeightsFunction.apply(q, k, v, attn_mask, False, scale, float(dropout_p),
                                                             seed, bool(average_attn_weights))
    else:
        # o in the memory order of the out-projection's input below, which is then a view of it
        perm = (1, 0, 2) if not is_batched else (0, 2, 1, 3) if batch_first else (2, 0, 1, 3)
        o, _ = _attn.ScaledDotProductAttentionFunction.apply(q, k, v, attn_mask, causal, scale, 1,
                                                             float(dropout_p), seed, perm)
        weights = None
    # (N, H, L, D) -> the output layout, then the out-projection (its output is the result)
    if not is_batched:
        o = o.transpose(0, 1).reshape(tgt_len, embed_dim)
    elif batch_first:
        o = o.transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
    else:
        o = o.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
    return linear(o, out_proj_weight, out_proj_bias), weights
