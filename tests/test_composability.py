"""torch.func, torch.compile, autocast and the converter work through our rules."""
from __future__ import annotations

import pytest
import torch

import torch_bp
import torch_bp.functional as F
from harness import assert_close


def _mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = F.gelu(F.linear(x, w1, b1))
    out = F.linear(h, w2, b2)
    return ((out - y) ** 2).sum()


def test_vmap_grad_gives_per_sample_gradients():
    torch.manual_seed(0)
    params = [torch.randn(8, 5, dtype=torch.float64), torch.randn(8, dtype=torch.float64),
              torch.randn(3, 8, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    per_sample = torch.func.vmap(torch.func.grad(_mlp_loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(x.shape[0]):
        ps = [p.clone().requires_grad_() for p in params]
        grads = torch.autograd.grad(_mlp_loss(ps, x[i], y[i]), ps)
        for g, v in zip(grads, per_sample):
            assert_close(v[i], g, torch.float64, what="per-sample grad")


def _torch_twin():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.SiLU(),
                               torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def test_compile_fullgraph_aot_eager():
    model = torch_bp.convert(_torch_twin())
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 6)
    out = compiled(x)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = model(x)
    ref.square().sum().backward()
    assert_close(out, ref, torch.float32, what="compiled output")
    for g, p in zip(grads, model.parameters()):
        assert_close(g, p.grad, torch.float32, what="compiled grad")


def test_autocast_bf16_matches_torch():
    ref = _torch_twin()
    ours = torch_bp.convert(ref)
    x = torch.randn(5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, rout = ours(x), ref(x)
    assert out.dtype == rout.dtype
    assert type(out.grad_fn).__name__ == "LinearFunctionBackward"
    out.float().square().sum().backward()
    rout.float().square().sum().backward()
    assert_close(out, rout, torch.bfloat16, what="autocast output")
    for p, rp in zip(ours.parameters(), ref.parameters()):
        assert p.grad.dtype == rp.grad.dtype == torch.float32
        # a bf16 forward/backward chain through 3 layers: a few bf16 roundings per layer
        torch.testing.assert_close(p.grad, rp.grad, rtol=8 * 2.0 ** -7, atol=8 * 2.0 ** -7 * rp.grad.abs().max())


class _OtherLibraryModel(torch.nn.Module):
    """A model 'from another library': plain torch.nn layers plus functional calls."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.fc1 = torch.nn.Linear(8, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.drop = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, tokens):
        h = self.emb(tokens).mean(1)
        h = torch.nn.functional.relu(self.fc1(h))
        return self.head(self.drop(self.norm(h)))


def test_convert_model_from_another_library():
    torch.manual_seed(0)
    ref = _OtherLibraryModel()
    ours = torch_bp.convert(ref)
    assert ours is not ref and isinstance(ours.fc1, torch_bp.nn.Linear)
    assert isinstance(ref.fc1, torch.nn.Linear) and type(ref.fc1) is torch.nn.Linear
    tokens = torch.randint(0, 20, (4, 7))
    target = torch.randint(0, 5, (4,))
    for m in (ours, ref):
        torch.manual_seed(1)
        torch.nn.functional.cross_entropy(m(tokens), target).backward()
    for (n, p), rp in zip(ours.named_parameters(), ref.parameters()):
        assert_close(p.grad, rp.grad, torch.float32, what=n)
    report = torch_bp.conversion_report(ours)
    assert report.converted["Linear"] == 2 and report.converted["LayerNorm"] == 1
    back = torch_bp.revert(ours)
    assert type(back.fc1) is torch.nn.Linear and not torch_bp.conversion_report(back).converted


def test_convert_keeps_mode_device_dtype_and_inplace():
    model = _torch_twin().double().eval()
    out = torch_bp.convert(model, inplace=True)
    assert out is model and not out.training
    assert all(p.dtype == torch.float64 for p in out.parameters())
    assert type(out[0]) is torch_bp.nn.Linear


# --- core: softmax, dropout, embedding, losses ---
def _mlp_ce_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = F.silu(F.linear(x, w1, b1))
    return F.cross_entropy(F.linear(h, w2, b2), y, label_smoothing=0.1)


def _mlp_mse_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = F.tanh(F.linear(x, w1, b1))
    return F.mse_loss(F.log_softmax(F.linear(h, w2, b2), dim=-1), y)


@pytest.mark.parametrize("loss_fn, target", [(_mlp_ce_loss, "index"), (_mlp_mse_loss, "float")],
                         ids=["cross_entropy", "mse_loss"])
def test_vmap_grad_per_sample_gradients_through_our_losses(loss_fn, target):
    """Linear-activation-loss, all ours: vmap(grad) equals a loop over single samples."""
    torch.manual_seed(0)
    params = [torch.randn(8, 5, dtype=torch.float64), torch.randn(8, dtype=torch.float64),
              torch.randn(3, 8, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (6,)) if target == "index" else torch.randn(6, 3, dtype=torch.float64)
    per_sample = torch.func.vmap(torch.func.grad(loss_fn), in_dims=(None, 0, 0))(params, x, y)
    for i in range(x.shape[0]):
        ps = [p.clone().requires_grad_() for p in params]
        loss = loss_fn(ps, x[i], y[i])
        assert type(loss.grad_fn).__name__ in ("CrossEntropyFunctionBackward", "MSELossFunctionBackward")
        for g, v in zip(torch.autograd.grad(loss, ps), per_sample):
            assert_close(v[i], g, torch.float64, what="per-sample grad")


def test_autocast_bf16_cross_entropy_matches_torch():
    """Under CPU autocast the loss runs in float32 on bf16 logits, as torch's cross_entropy."""
    ref = _torch_twin()
    ours = torch_bp.convert(ref)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, rlogits = ours(x), ref(x)
        loss = F.cross_entropy(logits, y, label_smoothing=0.1)
        rloss = torch.nn.functional.cross_entropy(rlogits, y, label_smoothing=0.1)
    assert logits.dtype == torch.bfloat16 and loss.dtype == rloss.dtype == torch.float32
    assert type(loss.grad_fn).__name__ == "CrossEntropyFunctionBackward"
    loss.backward()
    rloss.backward()
    assert_close(loss, rloss, torch.bfloat16, what="autocast loss")
    for p, rp in zip(ours.parameters(), ref.parameters()):
        # as test_autocast_bf16_matches_torch: a few bf16 roundings per layer
        torch.testing.assert_close(p.grad, rp.grad, rtol=8 * 2.0 ** -7, atol=8 * 2.0 ** -7 * rp.grad.abs().max())


def test_convert_other_library_model_runs_our_dropout_embedding_and_loss():
    """The converted model's Embedding and Dropout are ours (same mask for the same seed),
    and so is its loss module: loss and every parameter gradient equal the original's."""
    torch.manual_seed(0)
    ref = _OtherLibraryModel()
    ref_loss = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    ours, our_loss = torch_bp.convert(ref), torch_bp.convert(ref_loss)
    assert type(ours.emb) is torch_bp.nn.Embedding and type(ours.drop) is torch_bp.nn.Dropout
    assert type(our_loss) is torch_bp.nn.CrossEntropyLoss
    tokens, target = torch.randint(0, 20, (4, 7)), torch.randint(0, 5, (4,))
    losses = []
    for m, crit in ((ours, our_loss), (ref, ref_loss)):
        torch.manual_seed(1)
        loss = crit(m(tokens), target)
        loss.backward()
        losses.append(loss)
    assert type(losses[0].grad_fn).__name__ == "CrossEntropyFunctionBackward"
    assert_close(losses[0], losses[1], torch.float32, what="loss")
    for (n, p), rp in zip(ours.named_parameters(), ref.parameters()):
        assert_close(p.grad, rp.grad, torch.float32, what=n)
    report = torch_bp.conversion_report(ours)
    assert report.converted["Embedding"] == 1 and report.converted["Dropout"] == 1 and report.share == 1.0


@pytest.mark.parametrize("name, args, kwargs", [
    ("cross_entropy", lambda: (torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True),
                               torch.softmax(torch.randn(3, 4, 2, dtype=torch.float64), 1).requires_grad_(),
                               torch.rand(4, dtype=torch.float64, requires_grad=True) + 0.5),
     {"label_smoothing": 0.2, "reduction": "sum"}),
    ("cross_entropy", lambda: (torch.randn(5, 4, dtype=torch.float64, requires_grad=True),
                               torch.tensor([0, 3, -100, 1, 3]), torch.rand(4, dtype=torch.float64) + 0.5),
     {"label_smoothing": 0.3}),
    ("mse_loss", lambda: (torch.randn(3, 4, dtype=torch.float64, requires_grad=True),
                          torch.randn(3, 4, dtype=torch.float64, requires_grad=True)),
     {"weight": torch.rand(3, 4, dtype=torch.float64, requires_grad=True)}),
], ids=["cross_entropy-probabilities", "cross_entropy-indices-smoothing", "mse_loss-weight"])
def test_loss_double_backward_all_variants(name, args, kwargs):
    """gradgradcheck beyond the registry's first sample: every input of the fused rules."""
    fn = getattr(F, name)
    inputs = args()
    diff = [t for t in inputs + tuple(v for v in kwargs.values() if isinstance(v, torch.Tensor))
            if t.requires_grad]

    def call(*xs):
        it = iter(xs)
        a = [next(it) if t.requires_grad else t for t in inputs]
        k = {key: next(it) if isinstance(v, torch.Tensor) and v.requires_grad else v for key, v in kwargs.items()}
        return fn(*a, **k)

    assert torch.autograd.gradgradcheck(call, tuple(diff))


def test_embedding_sparse_and_from_pretrained():
    emb = torch_bp.nn.Embedding.from_pretrained(torch.randn(6, 3), freeze=False, padding_idx=0)
    assert type(emb) is torch_bp.nn.Embedding and emb.padding_idx == 0 and emb.weight.requires_grad
    out = emb(torch.tensor([0, 2, 2]))
    assert type(out.grad_fn).__name__ == "EmbeddingFunctionBackward"
    out.sum().backward()
    assert emb.weight.grad[0].abs().sum() == 0 and torch.equal(emb.weight.grad[2], torch.full((3,), 2.0))
    sparse = torch_bp.nn.Embedding(6, 3, sparse=True)
    sparse(torch.tensor([1, 1])).sum().backward()
    assert sparse.weight.grad.layout == torch.sparse_coo
    assert torch.equal(sparse.weight.grad.to_dense()[1], torch.full((3,), 2.0))


def test_dropout_identity_output_can_be_modified_in_place():
    """p=0 or eval: the output is ours (a copy) when grad is recorded, so `y += r` works as in
    torch; without grad the input itself comes back, as torch returns it."""
    x = torch.randn(4, 3, requires_grad=True)
    for kw in ({"p": 0.0}, {"p": 0.5, "training": False}):
        h = x * 2
        y = F.dropout(h, **kw)
        assert type(y.grad_fn).__name__ == "DropoutFunctionBackward"
        y += 1
        x.grad = None
        y.sum().backward()
        assert torch.equal(x.grad, torch.full_like(x, 2.0))
        with torch.no_grad():
            assert F.dropout(h, **kw) is h


def test_autocast_leaves_float64_alone():
    x, w = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.linear(x, w).dtype == torch.nn.functional.linear(x, w).dtype == torch.float64
        assert F.linear(x.float(), w.float()).dtype == torch.bfloat16


def test_conversion_report_counts_layers_not_containers():
    """The built-in SmallCNN is a torch_bp class but a container: the report lists its layers only."""
    from torch_bp.lightning import SmallCNN

    report = torch_bp.conversion_report(SmallCNN())
    assert "SmallCNN" not in report.converted and report.converted and report.share == 1.0
    assert all(name in {c.__name__ for c in _layer_classes()} for name in report.converted)


def _layer_classes():
    from torch_bp.registry import module_pairs
    return [ours for ours, _ in module_pairs()]
