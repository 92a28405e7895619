"""Per-example gradients from the rules' per-sample statics (torch_bp/per_sample.py).

Every case builds a small torch.nn model, converts a copy with torch_bp, and compares, in
float64 with the harness's tolerance, for a random upstream gradient u (loss = sum(out * u)):
our ``grad_sample`` against two independent oracles computed on the *torch* model (a loop over
examples, and ``torch.func.vmap(torch.func.grad(...))``); its batch sum against ``.grad``;
and the norms of mode "norms" (ghost norms where a rule has them) against the norms of the
oracle's per-example gradients.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torch_bp
from harness import tol
from torch_bp.per_sample import DPOptimizer, clip_factors, per_sample_grads

DT = torch.float64


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


class Case:
    """A model, an input and the dim of the input (and output) that holds the batch."""

    def __init__(self, name, model, x, batch_dim=0, out_dim=None, vmap=True):
        self.name, self.model, self.x, self.batch_dim = name, model, x, batch_dim
        self.out_dim = batch_dim if out_dim is None else out_dim
        # False: not vmap-able (torch's RNN/LSTM/GRU fail under vmap, and so does torch_bp's recurrent
        # Function; packing is data-dependent): the loop is the one oracle
        self.vmap = vmap

    def __repr__(self):
        return self.name


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_g(seed), dtype=DT)


class _Tied(nn.Module):
    """One linear layer applied twice (its weight gets two per-example terms)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(torch.tanh(self.lin(x)))


class _Attention(nn.Module):
    """Self-attention (one in-projection linear over q, k, v) and its output only."""

    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class _Packed(nn.Module):
    """An LSTM over a PackedSequence; the last feature of x holds each sequence's length."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x):
        lengths = x[:, 0, -1].long()
        packed = nn.utils.rnn.pack_padded_sequence(x[..., :-1], lengths, batch_first=True, enforce_sorted=False)
        return self.lstm(packed)[1][0].transpose(0, 1)   # h_n (B, layers * directions, H)


def _lengths_last(x, lengths):
    x = x.clone()
    x[..., -1] = torch.tensor(lengths, dtype=x.dtype).unsqueeze(1)
    return x


def _cases():
    torch.manual_seed(0)
    cases = [
        Case("linear", nn.Linear(5, 3), _randn(6, 5)),
        Case("linear-nobias", nn.Linear(5, 3, bias=False), _randn(6, 5)),
        Case("linear-seq-materialised", nn.Linear(5, 6), _randn(4, 3, 5)),   # R (in + out) > in out
        Case("linear-seq-ghost", nn.Linear(8, 8), _randn(4, 2, 8)),          # R (in + out) <= in out
        Case("linear-batch-dim-1", nn.Linear(5, 3), _randn(3, 4, 5), batch_dim=1),
        Case("linear-4d", nn.Linear(4, 3), _randn(3, 2, 2, 4)),
        Case("layer_norm", nn.LayerNorm((3, 4)), _randn(5, 2, 3, 4)),
        Case("layer_norm-nobias", nn.LayerNorm(4, bias=False), _randn(5, 3, 4), batch_dim=1),
        Case("rms_norm", nn.RMSNorm(4), _randn(5, 3, 4)),
        Case("mlp", nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.LayerNorm(7), nn.Linear(7, 3)), _randn(6, 5)),
        Case("tied", _Tied(), _randn(5, 4)),
        # --- conv / group norm / batch norm (eval) ---
        Case("conv1d", nn.Conv1d(3, 4, 3, stride=2, padding=1), _randn(4, 3, 9)),
        Case("conv1d-groups-dilation", nn.Conv1d(4, 6, 2, dilation=2, groups=2, bias=False), _randn(3, 4, 8)),
        Case("conv2d", nn.Conv2d(2, 3, 3, padding=1), _randn(4, 2, 5, 6)),
        Case("conv2d-stride-dilation-groups", nn.Conv2d(4, 6, (2, 3), stride=(2, 1), dilation=(1, 2), groups=2),
             _randn(3, 4, 7, 8)),
        Case("conv2d-reflect-same", nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect"), _randn(3, 2, 6, 5)),
        Case("conv_transpose2d", nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                                    dilation=(1, 2)), _randn(3, 4, 4, 3)),
        Case("group_norm", nn.GroupNorm(2, 4), _randn(5, 4, 3, 2)),
        Case("group_norm-2d", nn.GroupNorm(2, 4), _randn(5, 4)),
        Case("batch_norm-eval", nn.BatchNorm2d(3).eval(), _randn(4, 3, 2, 2)),
        # --- embedding ---
        Case("embedding", nn.Embedding(16, 3, padding_idx=2), torch.tensor([[1, 2, 1, 5], [3, 3, 2, 6], [0, 1, 1, 1]])),
        Case("embedding-ghost-materialised", nn.Embedding(5, 3), torch.tensor([[1, 0, 1, 4], [3, 3, 2, 2]])),
        Case("embedding-batch-dim-1", nn.Embedding(9, 2), torch.tensor([[1, 2], [1, 4], [8, 0]]), batch_dim=1),
        # --- recurrent (per example: sums over its time steps) ---
        Case("rnn-tanh", nn.RNN(3, 4, batch_first=True), _randn(3, 5, 3), vmap=False),
        Case("rnn-relu-seq-first", nn.RNN(3, 4, nonlinearity="relu"), _randn(5, 3, 3), batch_dim=1, vmap=False),
        Case("lstm-2layer-bidir", nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True),
             _randn(3, 4, 3), vmap=False),
        Case("lstm-proj", nn.LSTM(3, 5, proj_size=2, batch_first=True), _randn(3, 4, 3), vmap=False),
        Case("gru-seq-first", nn.GRU(3, 4, num_layers=2), _randn(4, 3, 3), batch_dim=1, vmap=False),
        Case("lstm-packed", _Packed(), _lengths_last(_randn(4, 5, 4), [3, 5, 1, 4]), vmap=False),
        # --- attention: the projections are our linear rule ---
        Case("self-attention", _Attention(), _randn(3, 4, 8)),
        Case("transformer-layer", nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                                             norm_first=True), _randn(3, 4, 8)),
        Case("cnn", nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 1),
                                  nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(16, 3)), _randn(3, 2, 6, 6)),
    ]
    for c in cases:
        c.model = c.model.to(DT)
        with torch.no_grad():   # non-trivial affine parameters for the norms
            for p in c.model.parameters():
                if p.dim() == 1:
                    p.add_(_randn(*p.shape, seed=7) * 0.5)
    return cases


CASES = _cases()


def _upstream(model, x):
    with torch.no_grad():
        out = _first(model(x))
    return _randn(*out.shape, seed=1)


def _loop(model, x, u, bd, od):
    """Oracle 1: one example at a time, plain torch autograd."""
    names = [n for n, _ in model.named_parameters()]
    per = {n: [] for n in names}
    for b in range(x.shape[bd]):
        xb, ub = x.narrow(bd, b, 1), u.narrow(od, b, 1)
        grads = torch.autograd.grad((_first(model(xb)) * ub).sum(), list(model.parameters()))
        for n, g in zip(names, grads):
            per[n].append(g)
    return {n: torch.stack(v) for n, v in per.items()}


def _vmap(model, x, u, bd, od):
    """Oracle 2: torch.func.vmap of torch.func.grad over the examples."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, xb, ub):
        out = _first(torch.func.functional_call(model, p, (xb.unsqueeze(bd),)))
        return (out * ub.unsqueeze(od)).sum()

    return torch.func.vmap(torch.func.grad(loss), in_dims=(None, bd, od))(params, x, u)


def _ours(case, mode="grads"):
    ours = torch_bp.convert(copy.deepcopy(case.model))
    u = _upstream(case.model, case.x)
    with per_sample_grads(ours, batch_dim=case.batch_dim, mode=mode) as ps:
        (_first(ours(case.x)) * u).sum().backward()
    return ours, ps, u


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_grad_sample_matches_loop_and_vmap(case):
    ours, ps, u = _ours(case)
    loop = _loop(case.model, case.x, u, case.batch_dim, case.out_dim)
    vm = _vmap(case.model, case.x, u, case.batch_dim, case.out_dim) if case.vmap else loop
    assert ps.missing() == []
    for n, p in ours.named_parameters():
        assert p.grad_sample.shape == (case.x.shape[case.batch_dim],) + p.shape, n
        torch.testing.assert_close(p.grad_sample, loop[n], **tol(DT), msg=lambda m: f"{n} vs loop: {m}")
        torch.testing.assert_close(p.grad_sample, vm[n], **tol(DT), msg=lambda m: f"{n} vs vmap: {m}")
        # the batch sum is the ordinary gradient (our .grad, and torch's: the loop's sum)
        torch.testing.assert_close(p.grad_sample.sum(0), p.grad, **tol(DT), msg=lambda m: f"{n} sum: {m}")
        torch.testing.assert_close(p.grad, loop[n].sum(0), **tol(DT), msg=lambda m: f"{n} grad: {m}")


@pytest.mark.parametrize("case", [c for c in CASES if c.name != "tied"], ids=repr)
def test_norms_mode_matches_materialised_norms(case):
    ours, ps, u = _ours(case, mode="norms")
    loop = _loop(case.model, case.x, u, case.batch_dim, case.out_dim)
    for n, p in ours.named_parameters():
        assert getattr(p, "grad_sample", None) is None, f"{n}: norms mode materialised grad_sample"
        expected = loop[n].reshape(loop[n].shape[0], -1).square().sum(1)
        torch.testing.assert_close(p.grad_sample_norm_sq, expected, **tol(DT), msg=lambda m: f"{n}: {m}")
    total = torch.stack([v.reshape(v.shape[0], -1).square().sum(1) for v in loop.values()]).sum(0).sqrt()
    torch.testing.assert_close(ps.norms(), total, **tol(DT))


def test_norms_mode_refuses_tied_weights():
    case = next(c for c in CASES if c.name == "tied")
    with pytest.raises(RuntimeError, match="more than one layer call"):
        _ours(case, mode="norms")


def test_off_by_default_and_under_vmap():
    model = torch_bp.convert(nn.Linear(3, 2).to(DT))
    x = _randn(4, 3)
    model(x).sum().backward()
    assert getattr(model.weight, "grad_sample", None) is None
    with per_sample_grads(model):   # a torch.func transform inside the block records nothing
        torch.func.vmap(lambda xb: model(xb).sum())(x)
    assert getattr(model.weight, "grad_sample", None) is None


def test_next_block_reuses_only_unreferenced_grad_sample_memory():
    model = torch_bp.convert(nn.Linear(3, 2).to(DT))
    x = _randn(4, 3)
    with per_sample_grads(model):
        model(x).sum().backward()
    kept = model.weight.grad_sample            # referenced: the next block must not write into it
    expected = kept.clone()
    with per_sample_grads(model):
        assert getattr(model.weight, "grad_sample", None) is None
        (2 * model(x)).sum().backward()
    assert model.weight.grad_sample.data_ptr() != kept.data_ptr()
    torch.testing.assert_close(kept, expected, rtol=0, atol=0)
    torch.testing.assert_close(model.weight.grad_sample, 2 * expected, **tol(DT))
    ptr = model.weight.grad_sample.data_ptr()
    del kept
    with per_sample_grads(model):               # nothing refers to it now: its memory is reused
        (3 * model(x)).sum().backward()
    assert model.weight.grad_sample.data_ptr() == ptr
    torch.testing.assert_close(model.weight.grad_sample, 3 * expected, **tol(DT))


def test_unconverted_layer_is_reported_missing():
    model = nn.Sequential(torch_bp.nn.Linear(3, 4), nn.Linear(4, 2)).to(DT)   # second: plain torch
    with per_sample_grads(model) as ps:
        model(_randn(5, 3)).sum().backward()
    assert ps.missing() == ["1.weight", "1.bias"]


def test_training_batch_norm_is_refused():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="batch normalization mixes the examples"):
        with per_sample_grads(model):
            pass
    with per_sample_grads(model.eval()):   # eval mode: an affine map per example, allowed
        pass


class _FunctionalBatchNorm(nn.Module):
    """Batch statistics through the functional API (no BatchNorm module for the entry check)."""

    def __init__(self):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(3, dtype=DT)), nn.Parameter(torch.zeros(3, dtype=DT))

    def forward(self, x):
        return torch_bp.functional.batch_norm(x, None, None, self.weight, self.bias, training=True)


def test_training_batch_norm_rule_refuses_per_sample():
    model = _FunctionalBatchNorm()
    with pytest.raises(RuntimeError, match="batch statistics .* are not defined"):
        with per_sample_grads(model):
            model(_randn(4, 3, 2)).square().sum().backward()


def test_conv_weight_grad_from_per_sample_keeps_double_backward():
    """In per-sample mode the conv's ordinary weight gradient is the per-example sum; with
    create_graph it stays the rule's own differentiable one (gradgrad equals torch's)."""
    torch_model = nn.Conv2d(2, 3, 3).to(DT)
    ours = torch_bp.convert(copy.deepcopy(torch_model))
    x = _randn(2, 2, 5, 5)
    grads = []
    for m in (torch_model, ours):
        with per_sample_grads(m):
            (gw,) = torch.autograd.grad(m(x).square().sum(), [m.weight], create_graph=True)
            grads.append(torch.autograd.grad(gw.square().sum(), [m.weight])[0])
    torch.testing.assert_close(grads[1], grads[0], **tol(DT))


def test_sequence_first_attention_is_refused():
    model = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)   # batch_first=False
    with pytest.raises(ValueError, match="batch_first=False"):
        with per_sample_grads(torch_bp.convert(model), batch_dim=1):
            pass


def test_batch_dim_not_leading_is_an_error():
    model = torch_bp.convert(nn.Linear(3, 2).to(DT))
    with pytest.raises(ValueError, match="batch_dim=1 is not a leading dim"):
        with per_sample_grads(model, batch_dim=1):
            model(_randn(4, 3)).sum().backward()


def test_nested_blocks_are_refused():
    model = torch_bp.convert(nn.Linear(3, 2))
    with per_sample_grads(model):
        with pytest.raises(RuntimeError, match="nested"):
            with per_sample_grads(model):
                pass


# --- DP-SGD ---
def _dp_model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)


def _reference_clipped_mean(model, x, y, max_norm):
    """(1/B) sum_n clip(g_n) with g_n from a loop over examples (per-example cross-entropy)."""
    per = []
    for b in range(x.shape[0]):
        loss = nn.functional.cross_entropy(model(x[b:b + 1]), y[b:b + 1])
        per.append(torch.autograd.grad(loss, list(model.parameters())))
    flat = torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in per])
    c = clip_factors(flat.norm(dim=1), max_norm)
    clipped = flat * c[:, None]
    return flat.norm(dim=1), clipped.norm(dim=1), clipped.mean(0)


@pytest.mark.parametrize("mode", ["grads", "ghost"])
def test_dp_clipping_bounds_every_example(mode):
    torch_model = _dp_model()
    x, y = _randn(7, 6, seed=4) * 3, torch.randint(0, 3, (7,), generator=_g(5))
    max_norm = 0.3
    norms, clipped_norms, expected = _reference_clipped_mean(torch_model, x, y, max_norm)
    assert (norms > max_norm).sum() >= 3, "the sample must exercise clipping"
    assert (clipped_norms <= max_norm * (1 + 1e-12)).all()

    model = torch_bp.convert(copy.deepcopy(torch_model))
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    dp = DPOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), model, max_grad_norm=max_norm,
                     noise_multiplier=0.0, mode=mode)
    dp.zero_grad()
    with dp.per_sample():
        out = model(x)
        if mode == "grads":
            nn.functional.cross_entropy(out, y).backward()
        else:
            dp.backward(nn.functional.cross_entropy(out, y, reduction="none"))
    dp.step()
    torch.testing.assert_close(dp.last_norms, norms, **tol(DT))
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(before - after, expected, **tol(DT))


def test_dp_noise_has_the_stated_scale():
    model = torch_bp.convert(nn.Linear(40, 50).to(DT))
    x = _randn(4, 40)
    sigma, max_norm = 2.0, 0.5
    dp = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.0), model, max_grad_norm=max_norm,
                     noise_multiplier=sigma, loss_reduction="sum", generator=_g(9))
    with dp.per_sample():
        model(x).sum().backward()
    gs = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    dp.step()
    c = clip_factors(dp.last_norms, max_norm)
    noise = torch.cat([(p.grad * 4 - torch.einsum("n,n...->...", c, gs[n])).reshape(-1)
                       for n, p in model.named_parameters()]) / (sigma * max_norm)
    assert noise.numel() == 2050
    assert abs(noise.mean().item()) < 0.1 and abs(noise.std().item() - 1) < 0.1


def test_dp_refuses_parameters_without_per_example_grads():
    model = nn.Sequential(torch_bp.nn.Linear(3, 4), nn.Linear(4, 2)).to(DT)
    dp = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, max_grad_norm=1.0)
    with dp.per_sample():
        model(_randn(5, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="no per-example gradient for"):
        dp.step()


# --- gradient statistics (torch_bp/lightning/grad_stats.py) ---
def test_gradient_statistics_match_materialised_per_example_grads():
    pytest.importorskip("lightning")
    from torch_bp.lightning.grad_stats import batch_gradient_stats
    torch_model = _dp_model()
    x, y = _randn(9, 6, seed=4), torch.randint(0, 3, (9,), generator=_g(5))
    loop = [torch.autograd.grad(nn.functional.cross_entropy(torch_model(x[b:b + 1]), y[b:b + 1]),
                                list(torch_model.parameters())) for b in range(9)]
    model = torch_bp.convert(copy.deepcopy(torch_model))
    with per_sample_grads(model, mode="norms") as ps:
        nn.functional.cross_entropy(model(x), y).backward()
    stats = batch_gradient_stats(ps.named, ps.norm_sq(), 9, "mean")
    for layer, idx in (("0", [0, 1]), ("2", [2, 3]), ("total", [0, 1, 2, 3])):
        g = torch.stack([torch.cat([gs[i].reshape(-1) for i in idx]) for gs in loop])   # (B, P_layer)
        var = g.var(0, unbiased=True).sum().item()
        mean_sq = g.mean(0).square().sum().item()
        assert stats[layer][0] == pytest.approx(var, rel=1e-10), layer
        assert stats[layer][1] == pytest.approx(mean_sq, rel=1e-10), layer


def test_gradient_statistics_callback_logs_to_tensorboard(tmp_path):
    pytest.importorskip("lightning")
    import lightning.pytorch as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader, TensorDataset

    from torch_bp.lightning import BPModule
    from torch_bp.lightning.grad_stats import GradientStatistics

    g = _g(0)
    data = DataLoader(TensorDataset(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)),
                      batch_size=16)
    cb = GradientStatistics(every_n_steps=1)
    trainer = L.Trainer(max_steps=2, logger=TensorBoardLogger(str(tmp_path), name="t", default_hp_metric=False),
                        callbacks=[cb], accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(BPModule(nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)), convert=True), data)
    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    layers = {t.split("/", 2)[2] for t in tags if t.startswith("bp/grad_var/")}
    assert {"total"} < layers and len(layers) == 3, tags    # two linear layers (named by BPModule) and the total
    for kind in ("grad_var", "grad_snr"):
        events = acc.Scalars(f"bp/{kind}/total")
        assert [e.step for e in events] == [0, 1]
        assert events[-1].value == pytest.approx(cb.last_metrics[f"{kind}/total"], rel=1e-6)
    assert all(v > 0 for k, v in cb.last_metrics.items() if k.startswith("grad_var/"))


# --- DPOptimizer misuse: each is refused before a parameter changes ---
def _dp_setup(**kw):
    model = torch_bp.convert(_dp_model())
    x, y = _randn(6, 6, seed=4), torch.randint(0, 3, (6,), generator=_g(5))
    dp = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, max_grad_norm=1.0, **kw)
    return model, x, y, dp


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_dp_refuses_a_step_without_a_fresh_per_sample_backward():
    model, x, y, dp = _dp_setup()
    with dp.per_sample():
        nn.functional.cross_entropy(model(x), y).backward()
    dp.step()
    dp.zero_grad()
    nn.functional.cross_entropy(model(x[:3]), y[:3]).backward()     # outside the block: grad_sample is stale
    before = _params(model)
    with pytest.raises(RuntimeError, match="previous batch"):
        dp.step()
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    with dp.per_sample():                                             # a fresh block steps again
        nn.functional.cross_entropy(model(x), y).backward()
    dp.step()


def test_dp_step_with_closure_runs_it_in_the_block():
    model, x, y, dp = _dp_setup()

    def closure():
        dp.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    dp.step(closure)
    first = dp.last_norms.clone()
    dp.step(closure)                                                  # each closure call is a fresh block
    assert first.shape == (6,) and not torch.equal(first, dp.last_norms)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_dp_refuses_a_noise_multiplier_that_is_not_a_number_above_zero(bad):
    with pytest.raises(ValueError, match="noise_multiplier"):
        _dp_setup(noise_multiplier=bad)
    with pytest.raises(ValueError, match="max_grad_norm"):
        DPOptimizer(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), nn.Linear(1, 1), max_grad_norm=bad)


@pytest.mark.parametrize("mode", ["grads", "ghost"])
def test_dp_refuses_a_nan_example_before_anything_changes(mode):
    model, x, y, dp = _dp_setup(mode=mode)
    x[2, 0] = float("nan")
    before = _params(model)
    with pytest.raises(RuntimeError, match=r"example\(s\) \[2\]"):
        with dp.per_sample():
            out = model(x)
            if mode == "grads":
                nn.functional.cross_entropy(out, y).backward()
            else:
                dp.backward(nn.functional.cross_entropy(out, y, reduction="none"))
        dp.step()
    assert all(torch.equal(a, b) and a.isfinite().all() for a, b in zip(before, _params(model)))


def test_dp_check_loss_reduction_catches_a_mismatch():
    model, x, y, dp = _dp_setup(loss_reduction="sum")
    with pytest.raises(ValueError, match="loss_reduction='mean'"):
        dp.check_loss_reduction(lambda b: nn.functional.cross_entropy(model(b[0]), b[1]), (x, y))
    assert dp.check_loss_reduction(lambda b: nn.functional.cross_entropy(model(b[0]), b[1], reduction="sum"),
                                   (x, y)) == "sum"
    big_reg = lambda b: nn.functional.cross_entropy(model(b[0]), b[1], reduction="sum") + 1e3  # noqa: E731
    assert dp.check_loss_reduction(big_reg, (x, y)) == "unknown"    # neither ratio: no verdict, no error
    assert model.training                                           # the check restores the mode
