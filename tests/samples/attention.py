"""Samples for scaled_dot_product_attention and multi_head_attention_forward / MultiheadAttention.

Dropout is not sampled here: our masks are not torch's (tests/test_attention_rnn.py checks
dropout by consistency and statistics instead).
"""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


# --- scaled_dot_product_attention ---
@samples("scaled_dot_product_attention")
def _sdpa(make):
    yield Sample("4d", (make(1, 2, 3, 4), make(1, 2, 4, 4), make(1, 2, 4, 3)))
    yield Sample("causal", (make(1, 2, 5, 4), make(1, 2, 5, 4), make(1, 2, 5, 3)), {"is_causal": True})
    yield Sample("causal-L>S", (make(1, 2, 6, 4), make(1, 2, 4, 4), make(1, 2, 4, 3)), {"is_causal": True})
    mask = torch.rand(1, 1, 3, 4) > 0.4
    mask[..., 0] = True  # every row keeps a key
    yield Sample("bool-mask", (make(1, 2, 3, 4), make(1, 2, 4, 4), make(1, 2, 4, 3), mask))
    full = mask.clone()
    full[0, 0, 1] = False
    yield Sample("bool-mask-fully-masked-row", (make(1, 2, 3, 4), make(1, 2, 4, 4), make(1, 2, 4, 3), full))
    yield Sample("float-mask", (make(1, 2, 3, 4), make(1, 2, 4, 4), make(1, 2, 4, 3), make(3, 4)))
    yield Sample("float-mask-per-head", (make(1, 2, 3, 4), make(1, 2, 4, 4), make(1, 2, 4, 3), make(1, 2, 3, 4)))
    yield Sample("gqa", (make(1, 4, 3, 4), make(1, 2, 4, 4), make(1, 2, 4, 3)), {"enable_gqa": True})
    yield Sample("gqa-mask-per-query-head", (make(1, 4, 3, 4), make(1, 1, 4, 4), make(1, 1, 4, 3), make(4, 3, 4)),
                 {"enable_gqa": True})
    yield Sample("scale", (make(1, 2, 3, 4), make(1, 2, 4, 4), make(1, 2, 4, 3)), {"scale": 0.3})
    yield Sample("3d", (make(2, 3, 4), make(2, 4, 4), make(2, 4, 3)))
    yield Sample("2d", (make(3, 4), make(4, 4), make(4, 3)))
    yield Sample("broadcast-batch", (make(2, 2, 3, 4), make(1, 1, 4, 4), make(2, 1, 4, 3)))
    yield Sample("noncontiguous", (make(1, 2, 3, 4, layout="t"), make(1, 2, 4, 4, layout="slice"),
                                   make(1, 2, 4, 3, layout="t")))
    yield Sample("dropout-p-1", (make(1, 2, 3, 4), make(1, 2, 4, 4), make(1, 2, 4, 3)), {"dropout_p": 1.0})  # all dropped
    yield Sample("empty-batch", (make(0, 2, 3, 4), make(0, 2, 4, 4), make(0, 2, 4, 3)))
    yield Sample("key-grad-only", (make(1, 2, 3, 4, requires_grad=False), make(1, 2, 4, 4),
                                   make(1, 2, 4, 3, requires_grad=False)))


@error_samples("scaled_dot_product_attention")
def _sdpa_err(make):
    q, k, v = make(2, 3, 4, 8), make(2, 3, 5, 8), make(2, 3, 5, 6)
    yield Sample("mask-and-causal", (q, k, v, torch.ones(4, 5, dtype=torch.bool)), {"is_causal": True})
    yield Sample("head-dim-mismatch", (q, make(2, 3, 5, 7), v))
    yield Sample("kv-length-mismatch", (q, k, make(2, 3, 4, 6)))
    yield Sample("dtype-mismatch", (q, k, make(2, 3, 5, 6, dtype=torch.float64)))
    yield Sample("1d-query", (make(8), k[0, 0], v[0, 0]))
    yield Sample("gqa-heads", (q, make(2, 2, 5, 8), make(2, 2, 5, 6)), {"enable_gqa": True})
    yield Sample("mask-shape", (q, k, v, make(3, 5)))
    yield Sample("mask-dtype", (q, k, v, torch.ones(4, 5, dtype=torch.int64)))
    yield Sample("dropout-p", (q, k, v), {"dropout_p": 1.5})


# --- multi_head_attention_forward ---
E, H = 4, 2


def _mha_args(make, q, k, v, bias=True, bias_kv=False, zero_attn=False, separate=False):
    kdim, vdim = k.shape[-1], v.shape[-1]
    in_w = None if separate else make(3 * E, E, low=-0.6, high=0.6)
    in_b = make(3 * E) if bias else None
    bk, bv = (make(1, 1, E), make(1, 1, E)) if bias_kv else (None, None)
    args = (q, k, v, E, H, in_w, in_b, bk, bv, zero_attn, 0.0, make(E, E, low=-0.6, high=0.6),
            make(E) if bias else None)
    kw = {}
    if separate:
        kw = {"use_separate_proj_weight": True, "q_proj_weight": make(E, E, low=-0.6, high=0.6),
              "k_proj_weight": make(E, kdim, low=-0.6, high=0.6), "v_proj_weight": make(E, vdim, low=-0.6, high=0.6)}
    return args, kw


@samples("multi_head_attention_forward")
def _mha(make):
    L, S, N = 3, 4, 2
    args, kw = _mha_args(make, make(L, N, E), make(S, N, E), make(S, N, E))
    yield Sample("cross-attention-weights", args, kw)
    x = make(L, N, E)
    args, kw = _mha_args(make, x, x, x)
    yield Sample("self-attention-no-weights", args, {**kw, "need_weights": False})
    args, kw = _mha_args(make, make(L, N, E), make(S, N, E), make(S, N, E))
    kpm = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    yield Sample("key-padding-per-head-weights", args, {**kw, "key_padding_mask": kpm, "average_attn_weights": False})
    args, kw = _mha_args(make, make(L, N, E), make(S, N, E), make(S, N, E))
    yield Sample("float-mask-and-padding-no-weights", args,
                 {**kw, "need_weights": False, "key_padding_mask": kpm, "attn_mask": make(L, S, requires_grad=False)})
    args, kw = _mha_args(make, make(L, N, E), make(S, N, E), make(S, N, E), bias_kv=True, zero_attn=True)
    mask3 = torch.rand(N * H, L, S) > 0.3
    mask3[..., 0] = False  # bool attn_mask: True = not allowed; every row keeps key 0
    yield Sample("bias-kv-zero-attn-3d-mask", args, {**kw, "attn_mask": mask3})
    x = make(L, E)
    args, kw = _mha_args(make, x, x, x)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=make.dtype)
    yield Sample("unbatched-causal-hint", args, {**kw, "need_weights": False, "attn_mask": causal, "is_causal": True})
    args, kw = _mha_args(make, make(L, N, E), make(S, N, 5), make(S, N, 3), separate=True, bias=False)
    args = args[:10] + (0.5,) + args[11:]
    yield Sample("kdim-vdim-no-bias-dropout-not-training", args, {**kw, "training": False})
    args, kw = _mha_args(make, make(L, E), make(S, E), make(S, E))
    yield Sample("unbatched", args, {**kw, "average_attn_weights": False, "key_padding_mask": kpm[0]})


@module_samples("multi_head_attention_forward")
def _mha_mod(make):
    yield ModuleSample("weights", (8, 2), {}, (make(4, 3, 8), make(5, 3, 8), make(5, 3, 8)))
    x = make(3, 4, 8)
    kpm = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    yield ModuleSample("batch-first-self-padding", (8, 2), {"batch_first": True}, (x, x, x),
                       {"need_weights": False, "key_padding_mask": kpm})
    yield ModuleSample("kdim-vdim-no-bias", (8, 4), {"kdim": 5, "vdim": 3, "bias": False},
                       (make(4, 2, 8), make(6, 2, 5), make(6, 2, 3)), {"average_attn_weights": False})
    yield ModuleSample("bias-kv-zero-attn", (8, 2), {"add_bias_kv": True, "add_zero_attn": True, "batch_first": True},
                       (make(2, 4, 8), make(2, 5, 8), make(2, 5, 8)))
    yield ModuleSample("dropout-eval", (8, 2), {"dropout": 0.3}, (make(4, 3, 8), make(5, 3, 8), make(5, 3, 8)),
                       train=False)
    yield ModuleSample("unbatched-causal-mask", (8, 2), {}, (make(4, 8), make(4, 8), make(4, 8)),
                       {"attn_mask": torch.nn.Transformer.generate_square_subsequent_mask(4), "is_causal": True,
                        "need_weights": False})


@error_samples("multi_head_attention_forward")
def _mha_err(make):
    L, S, N = 3, 4, 2
    args, kw = _mha_args(make, make(L, N, E), make(S, N, E), make(S, N, E))
    yield Sample("embed-dim", args[:3] + (6,) + args[4:], kw)
    yield Sample("padding-mask-shape", args, {"key_padding_mask": torch.zeros(N, S + 1, dtype=torch.bool)})
    yield Sample("attn-mask-shape", args, {"attn_mask": torch.zeros(L, S + 1)})
    yield Sample("attn-mask-3d-shape", args, {"attn_mask": torch.zeros(N, L, S)})
    yield Sample("causal-without-mask", args, {"is_causal": True})
    yield Sample("query-4d", (make(L, N, 1, E),) + args[1:], kw)
    yield Sample("key-value-shape", args[:2] + (make(S + 1, N, E),) + args[3:], kw)
