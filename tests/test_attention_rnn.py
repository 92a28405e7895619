"""Attention and recurrent layers beyond the registry harness: converted Transformers and LSTMs,
saved memory of attention, dropout (our masks are not torch's: checked by consistency and
statistics), blocked evaluation, realistic sizes in float32, module-level bad input."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import torch_bp
import torch_bp.functional as F
from harness import assert_close, clone_args, run
from samples import get_samples
from torch_bp.ops import attention as A
from torch_bp.ops import recurrent as R
from torch_bp.registry import get

# built-in autograd nodes of the layers we replace: none may be left in a converted model's graph
_TORCH_LAYER_NODES = {
    "AddmmBackward0", "MmBackward0", "BmmBackward0", "BaddbmmBackward0", "NativeLayerNormBackward0",
    "GeluBackward0", "ReluBackward0", "SoftmaxBackward0", "NativeDropoutBackward0",
    "ScaledDotProductFlashAttentionForCpuBackward0", "ScaledDotProductEfficientAttentionBackward0",
    "ScaledDotProductAttentionMathBackward0", "MkldnnRnnLayerBackward0", "LstmMpsBackward0",
    "TanhBackward0", "SigmoidBackward0",
}


def _graph_nodes(*outs):
    seen, stack, names = set(), [o.grad_fn for o in outs if o.grad_fn is not None], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


def _compare_models(ours, ref, inputs, kwargs=None, what=""):
    kwargs = kwargs or {}
    out, rout = ours(*inputs, **kwargs), ref(*inputs, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    rout = rout[0] if isinstance(rout, tuple) else rout
    out = getattr(out, "data", out) if not isinstance(out, torch.Tensor) else out
    rout = getattr(rout, "data", rout) if not isinstance(rout, torch.Tensor) else rout
    g = torch.randn_like(out)
    out.backward(g)
    rout.backward(g)
    assert_close(out, rout, torch.float32, what=f"{what} output")
    named = dict(ref.named_parameters())
    assert set(dict(ours.named_parameters())) == set(named)
    for n, p in ours.named_parameters():
        assert_close(p.grad, named[n].grad, torch.float32, what=f"{what} grad of {n}")
    return out


# --- the converter on a Transformer encoder-decoder ---
@pytest.mark.parametrize("activation,batch_first,norm_first", [
    ("relu", False, False),                        # torch stores F.relu
    ("gelu", True, True),                           # torch stores F.gelu
    (torch.nn.functional.gelu, True, False),        # a function given directly
])
def test_transformer_converts_with_equal_outputs_and_gradients(activation, batch_first, norm_first):
    torch.manual_seed(0)
    ref = torch.nn.Transformer(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                               dim_feedforward=32, dropout=0.0, activation=activation, batch_first=batch_first,
                               norm_first=norm_first)
    ours = torch_bp.convert(ref)
    report = torch_bp.conversion_report(ours)
    assert report.share == 1.0 and not report.unconverted, str(report)
    for m in ours.modules():
        if type(m).__module__.startswith("torch.nn"):
            assert not list(m.children()) or isinstance(m, torch.nn.ModuleList), f"{type(m)} not converted"
        if "activation" in m.__dict__:
            assert m.activation.__module__.startswith("torch_bp.functional"), m.activation
    S, T, N = 7, 5, 3
    src = torch.randn((N, S, 16) if batch_first else (S, N, 16))
    tgt = torch.randn((N, T, 16) if batch_first else (T, N, 16))
    pad = torch.zeros(N, S, dtype=torch.bool)
    pad[0, -2:] = True
    kw = dict(tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(T), src_key_padding_mask=pad,
              memory_key_padding_mask=pad, tgt_is_causal=True)
    out = _compare_models(ours, ref, (src, tgt), kw, what=f"Transformer({activation})")
    names = _graph_nodes(out)
    assert not names & _TORCH_LAYER_NODES, f"torch layer nodes left: {names & _TORCH_LAYER_NODES}"
    assert {"LinearFunctionBackward", "LayerNormFunctionBackward",
            "ScaledDotProductAttentionFunctionBackward"} <= names
    back = torch_bp.revert(ours)
    assert type(back) is torch.nn.Transformer and type(back.encoder.layers[0]) is torch.nn.TransformerEncoderLayer
    assert back.encoder.layers[0].activation is ref.encoder.layers[0].activation
    assert type(back.encoder.layers[0].self_attn.out_proj).__module__.startswith("torch.nn")


def test_transformer_eval_bypasses_the_fast_path(monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
    ref = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    ours = torch_bp.convert(ref)
    x = torch.randn(3, 6, 16)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, -3:] = True
    with torch.no_grad():
        expected = ref(x, src_key_padding_mask=pad)  # torch's fused fast path

        def fused(*a, **k):
            raise AssertionError("torch's fused encoder layer ran")
        monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", fused)
        got = ours(x, src_key_padding_mask=pad)
    keep = ~pad  # the fast path leaves padded positions unspecified
    assert_close(got[keep], expected[keep], torch.float32, what="eval output")


def test_transformer_modules_built_directly_match_torch():
    kw = dict(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16, dropout=0.0)
    torch.manual_seed(0)
    ref = torch.nn.Transformer(**kw)
    torch.manual_seed(0)
    ours = torch_bp.nn.Transformer(**kw)
    assert isinstance(ours, torch.nn.Transformer) and torch_bp.conversion_report(ours).share == 1.0
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    _compare_models(ours, ref, (torch.randn(5, 2, 8), torch.randn(4, 2, 8)), what="Transformer built directly")


# --- the converter on a 2-layer bidirectional LSTM written with plain torch.nn ---
class _Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x, lengths=None):
        if lengths is not None:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, (h, c) = self.lstm(packed)
            return self.head(out.data), h, c
        out, (h, c) = self.lstm(x)
        return self.head(out), h, c


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_lstm_model_converts_with_equal_outputs_and_gradients(packed):
    torch.manual_seed(0)
    ref = _Tagger()
    ours = torch_bp.convert(ref)
    assert type(ours.lstm) is torch_bp.nn.LSTM and torch_bp.conversion_report(ours).share == 1.0
    x = torch.randn(4, 7, 6)
    lengths = torch.tensor([7, 3, 5, 1]) if packed else None
    outs, routs = ours(x, lengths), ref(x, lengths)
    ups = [torch.randn_like(o) for o in outs]
    torch.autograd.backward(outs, ups)
    torch.autograd.backward(routs, ups)
    for o, r in zip(outs, routs):
        assert_close(o, r, torch.float32, what="LSTM model output")
    assert type(outs[1].grad_fn).__name__ == "LSTMFunctionBackward"
    named = dict(ref.named_parameters())
    for n, p in ours.named_parameters():
        assert_close(p.grad, named[n].grad, torch.float32, what=f"grad of {n}")
    assert type(torch_bp.revert(ours).lstm) is torch.nn.LSTM


# --- realistic sizes in float32 (the harness samples are tiny for gradcheck) ---
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_recurrent_realistic_size_matches_torch(mode):
    torch.manual_seed(0)
    cls = {"LSTM": (torch.nn.LSTM, torch_bp.nn.LSTM), "GRU": (torch.nn.GRU, torch_bp.nn.GRU)}[mode]
    ref = cls[0](16, 32, num_layers=2, bidirectional=True)
    ours = cls[1](16, 32, num_layers=2, bidirectional=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(12, 4, 16, requires_grad=True)
    outs, grads, up = run(ours, (x,), {})
    x.grad = None
    routs, rgrads, _ = run(ref, (x,), {}, upstream=up)
    for o, r in zip(outs, routs):
        assert_close(o, r, torch.float32, what=f"{mode} output")
    for g, r in zip(grads, rgrads):
        assert_close(g, r, torch.float32, what=f"{mode} input grad")


def test_attention_realistic_size_matches_torch():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 300, 32, requires_grad=True) for _ in range(3))  # 300 > BLOCK_K: 2 key blocks
    for kw in ({"is_causal": True}, {"attn_mask": torch.randn(300, 300)}):
        args = (q, k, v)
        outs, grads, up = run(F.scaled_dot_product_attention, args, kw)
        grads = [g.clone() for g in grads]
        for t in args:
            t.grad = None
        routs, rgrads, _ = run(torch.nn.functional.scaled_dot_product_attention, args, kw, upstream=up)
        assert_close(outs[0], routs[0], torch.float32, what=f"sdpa {list(kw)} output")
        for g, r in zip(grads, rgrads):
            assert_close(g, r, torch.float32, what=f"sdpa {list(kw)} grad")
        for t in args:
            t.grad = None


# --- blocked evaluation: many key blocks give the same answer ---
def test_attention_many_blocks_match_torch(monkeypatch):
    monkeypatch.setattr(A, "BLOCK_K", 2)
    row = get("scaled_dot_product_attention")
    for s in get_samples("scaled_dot_product_attention", torch.float64):
        ours_a, ours_k = clone_args(s)
        ref_a, ref_k = clone_args(s)
        outs, grads, up = run(row.functional, ours_a, ours_k)
        routs, rgrads, _ = run(row.reference, ref_a, ref_k, upstream=up)
        for o, r in zip(outs, routs):
            assert_close(o, r, torch.float64, what=f"{s.desc} output (blocks of 2 keys)")
        for g, r in zip(grads, rgrads):
            assert_close(g, r, torch.float64, what=f"{s.desc} grad (blocks of 2 keys)")


# --- the compiled kernels (csrc/cpu/attention.cpp) against the Python rule, over several tiles ---
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_attention_compiled_tiles_match_python_rule(dtype):
    """Query blocks of 128 and key blocks of 512 in the kernels: 300 queries x 700 keys spans
    3 x 2 tiles (with a partial one of each), causal skips tiles, dropout reads the Python masks.
    Heads of one tile run in groups of heads (the last group partial; heads laid out as multi-head
    attention's (N, L, H, D) transposed, which do not flatten to one batch dim)."""
    before = torch_bp.backend_info().requested
    try:
        torch_bp.set_backend("cpp")
    except RuntimeError as e:
        pytest.skip(str(e))
    torch.manual_seed(0)
    cases = [((1, 2, 300, 8), (1, 2, 700, 8), (1, 2, 700, 4), {}),
             ((1, 2, 300, 8), (1, 2, 700, 8), (1, 2, 700, 4), {"is_causal": True}),
             ((2, 260, 8), (2, 260, 8), (2, 260, 4), {"is_causal": True, "dropout_p": 0.3}),
             ((5, 8), (7, 8), (7, 4), {"dropout_p": 0.5, "scale": 0.7}),
             ((3, 5, 128, 8), (3, 5, 100, 8), (3, 5, 100, 4), {"is_causal": True}),
             ((3, 5, 100, 8), (3, 5, 128, 8), (3, 5, 128, 4), {"dropout_p": 0.3})]
    try:
        for qs, ks, vs, kw in cases:
            args = [torch.randn(*sh, dtype=dtype) for sh in (qs, ks, vs)]
            args[0] = args[0].transpose(-1, -2).contiguous().transpose(-1, -2)  # strided q
            if len(qs) == 4:  # k as (N, S, H, E).transpose(1, 2)
                args[1] = args[1].transpose(1, 2).contiguous().transpose(1, 2)
            up = torch.randn(qs[:-1] + vs[-1:], dtype=dtype)
            res = []
            for b in ("python", "cpp"):
                torch_bp.set_backend(b)
                a = [t.clone().requires_grad_() for t in args]
                torch.manual_seed(1)  # the dropout seed
                out = F.scaled_dot_product_attention(*a, **kw)
                out.backward(up)
                res.append([out] + [t.grad for t in a])
            for c, p in zip(*res):
                assert_close(c, p, dtype, what=f"compiled sdpa {qs} {kw}")
    finally:
        torch_bp.set_backend(before)


# --- saved memory: O(T) for ours, O(T^2) for torch's math path ---
def _saved_bytes(fn, T):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, T, 16, requires_grad=True) for _ in range(3))
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(q, k, v)
    return sum(storages.values())


def _torch_math(q, k, v):
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_attention_saved_bytes_grow_linearly_while_torch_math_grows_quadratically():
    sizes = (256, 512, 1024)  # up to 4 key blocks
    ours = [_saved_bytes(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), T) for T in sizes]
    theirs = [_saved_bytes(_torch_math, T) for T in sizes]
    explicit = [_saved_bytes(lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1) @ v, T) for T in sizes]
    for i in range(1, len(sizes)):
        assert ours[i] == 2 * ours[i - 1], f"ours not linear in T: {ours}"
        assert theirs[i] > 3.5 * theirs[i - 1], f"torch's math path not quadratic: {theirs}"
        assert explicit[i] > 3.5 * explicit[i - 1], f"explicit softmax not quadratic: {explicit}"
    # q, k, v, the output (B, H, T, 16) floats and the row log-sum-exp (B, H, T): 5 * 16 + 1 floats per row
    assert ours[-1] == (4 * 16 + 1) * 4 * 2 * sizes[-1]


# --- dropout: consistent gradients, unbiased output, masks shared by both attention rules ---
def _sdpa_dropout_reference(q, k, v, p, seed):
    """softmax(q k^T / sqrt(E)) with our per-block masks, differentiated by torch's autograd."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    prob = torch.softmax(s, -1)
    shape5 = prob.shape[:-2] + (1,) + prob.shape[-2:-1]
    keep = torch.cat([A.keep_mask(seed, j, shape5 + (min(j0 + A.BLOCK_K, k.shape[-2]) - j0,), p, q.device)
                      for j, j0 in enumerate(range(0, k.shape[-2], A.BLOCK_K))], -1).squeeze(-3)
    return (prob * keep / (1 - p)) @ v


def test_attention_dropout_gradients_use_the_forward_mask(monkeypatch):
    monkeypatch.setattr(A, "BLOCK_K", 3)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    p, seed = 0.4, 1234
    out = A.ScaledDotProductAttentionFunction.apply(q, k, v, None, False, 0.5, 1, p, seed)[0]
    ref = _sdpa_dropout_reference(q, k, v, p, seed)
    g = torch.randn_like(out)
    assert_close(out, ref, torch.float64, what="dropout output")
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        assert_close(a, b, torch.float64, what="dropout grad")
    assert (out != F.scaled_dot_product_attention(q, k, v)).any()

    def fn(q, k, v):  # the functional draws its seed from torch's generator: fixed per call here
        torch.manual_seed(7)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_attention_dropout_is_unbiased_and_drops_p():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 4, 8) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v)
    n, p = 1000, 0.25
    outs = torch.stack([F.scaled_dot_product_attention(q, k, v, dropout_p=p) for _ in range(n)])
    mean, std = outs.mean(0), outs.std(0)
    assert ((mean - exact).abs() <= 5 * std / math.sqrt(n) + 1e-6).all()
    w = torch.stack([A.AttentionWeightsFunction.apply(q, k, v, None, False, 0.3, p, s, False)[1]
                     for s in range(200)])
    dropped = (w == 0).double().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / w.numel())


def test_mha_weights_and_no_weights_paths_share_dropout_masks():
    torch.manual_seed(0)
    mha = torch_bp.nn.MultiheadAttention(8, 2, dropout=0.5)
    x = torch.randn(5, 3, 8)
    torch.manual_seed(3)
    a, w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    torch.manual_seed(3)
    b, _ = mha(x, x, x, need_weights=False)
    assert_close(a, b, torch.float32, what="same seed, both attention rules")
    assert (w == 0).any()


def test_recurrent_dropout_gradients_use_the_forward_mask():
    torch.manual_seed(0)
    m = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.5).double()
    params = [p.detach().clone().requires_grad_() for p in m._flat_weights]
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)

    def fn(x, *ps):
        torch.manual_seed(11)
        out, h, c = F.lstm(x, None, list(ps), True, 2, 0.5, True, False, False)
        return out, h, c
    assert torch.autograd.gradcheck(fn, (x, *params))
    # the same as layer 1, our mask regenerated from the seed, layer 2
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2 ** 62, (1,)).item())
    out, _, _ = fn(x, *params)
    y1, _, _ = F.lstm(x, None, params[:4], True, 1, 0.0, True, False, False)
    keep = R._dropout_keep(seed, 1, (5 * 2, 4), 0.5, x.device).reshape(5, 2, 4)
    y2, _, _ = F.lstm(y1 * keep / 0.5, None, params[4:], True, 1, 0.0, True, False, False)
    assert_close(out, y2, torch.float64, what="2-layer LSTM with dropout")


# --- bad input through the modules: torch's exception types ---
def _same_error(ours_call, ref_call):
    with pytest.raises(Exception) as ref_exc:
        ref_call()
    with pytest.raises(ref_exc.type) as exc:
        ours_call()
    assert str(exc.value)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_recurrent_module_bad_input(mode):
    torch.manual_seed(0)
    ref = getattr(torch.nn, mode)(3, 4, batch_first=True)
    ours = getattr(torch_bp.nn, mode)(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)  # (B, T, I)

    def hx(*shape):
        h = torch.zeros(*shape)
        return (h, torch.zeros(*shape)) if mode == "LSTM" else h
    cases = [
        (x, hx(1, 5, 4)),                  # hidden state laid out for batch_first=False (batch 5 = T)
        (x, hx(2, 2, 4)),                  # wrong number of layers
        (x, hx(1, 2, 5)),                  # wrong hidden size
        (x[0], hx(1, 2, 4)),               # unbatched input, batched state
        (x.transpose(0, 1)[..., :2], None),  # wrong input size
        (x[0, 0], None),                   # 1-d input
    ]
    if mode == "LSTM":
        cases.append((x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 5))))  # wrong cell size
    for inp, h in cases:
        _same_error(lambda: ours(inp, h), lambda: ref(inp, h))


def test_multihead_attention_module_bad_input():
    ref, ours = torch.nn.MultiheadAttention(8, 2), torch_bp.nn.MultiheadAttention(8, 2)
    q = torch.randn(4, 3, 8)
    for kw in ({"attn_mask": torch.zeros(4, 5)}, {"attn_mask": torch.zeros(3, 4, 4)},
               {"key_padding_mask": torch.zeros(3, 5, dtype=torch.bool)},
               {"attn_mask": torch.zeros(1, 1, 4, 4)}, {"is_causal": True}):
        _same_error(lambda: ours(q, q, q, **kw), lambda: ref(q, q, q, **kw))
    _same_error(lambda: ours(q, q[..., :6], q), lambda: ref(q, q[..., :6], q))


# --- gradients when only some outputs are used (unused ones send no gradient) ---
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_recurrent_gradients_through_one_output(mode):
    torch.manual_seed(0)
    ref = getattr(torch.nn, mode)(3, 4, 2, bidirectional=True).double()
    ours = getattr(torch_bp.nn, mode)(3, 4, 2, bidirectional=True).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    picks = [lambda o: o[0].sum(), lambda o: (o[1][0] if mode == "LSTM" else o[1]).sum()]
    if mode == "LSTM":
        picks.append(lambda o: o[1][1].sum())
    for pick in picks:
        got = torch.autograd.grad(pick(ours(x)), [x, *ours.parameters()])
        expected = torch.autograd.grad(pick(ref(x)), [x, *ref.parameters()])
        for g, e in zip(got, expected):
            assert_close(g, e, torch.float64, what=f"{mode} one output")


def test_mha_gradients_through_the_weights_only():
    torch.manual_seed(0)
    ref, ours = torch.nn.MultiheadAttention(8, 2), torch_bp.nn.MultiheadAttention(8, 2)
    ours.load_state_dict(ref.state_dict())
    q = torch.randn(4, 3, 8, requires_grad=True)
    got = torch.autograd.grad(ours(q, q, q)[1].pow(2).sum(), [q, ours.in_proj_weight])
    expected = torch.autograd.grad(ref(q, q, q)[1].pow(2).sum(), [q, ref.in_proj_weight])
    for g, e in zip(got, expected):
        assert_close(g, e, torch.float32, what="MHA weights-only grad")


def test_mha_weights_need_no_grad_without_query_key_grads():
    """The attention weights depend on the query, key and mask only: with none of them (nor their projections)
    requiring grad, they do not require grad, as torch's; the output still does (through the value)."""
    import torch_bp.functional as F
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 4, generator=g) for _ in range(3))
    w_in, w_out = torch.randn(12, 4, generator=g), torch.randn(4, 4, generator=g).requires_grad_()
    v.requires_grad_()
    for fn in (torch.nn.functional.multi_head_attention_forward, F.multi_head_attention_forward):
        out, weights = fn(q, k, v, 4, 2, w_in, None, None, None, False, 0.0, w_out, None)
        assert out.requires_grad and not weights.requires_grad, fn.__module__
