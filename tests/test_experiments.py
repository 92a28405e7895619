"""Smoke tests of experiments/paper1986: each experiment in a tiny mode, plus the checks that
the vectorised multi-seed runner equals a plain per-seed loop on torch_bp modules."""
from __future__ import annotations

import json
import os

import pytest
import torch

from torch_bp import datasets
from experiments.paper1986 import common as C
from experiments.paper1986 import family_trees as FT
from experiments.paper1986 import symmetry as SYM
from experiments.paper1986 import xor_parity as XP


@pytest.fixture(autouse=True)
def _one_thread_and_tmp_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "RUNS_ROOT", str(tmp_path / "runs"))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _assert_same(a: dict, b: dict):
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-12, atol=1e-12, msg=n)


# --- the runner ---
def test_ensemble_equals_per_seed_loop_symmetry():
    x, d = datasets.symmetry(dtype=C.DTYPE)
    net = SYM.make_net()
    params = C.uniform_init(net, [3, 11], 0.3)
    sched = C.Schedule(0.1, 0.9)
    res = C.train_ensemble(net, params, x, d, sweeps=15, schedule=sched, criterion=None)
    for i in range(2):
        ref = C.train_reference(SYM.make_net(), C.seed_params(params, i), x, d, sweeps=15, schedule=sched)
        _assert_same(ref, C.seed_params(res.params, i))


def test_ensemble_equals_per_seed_loop_family_trees_band_decay_schedule():
    person, relation, target, _ = datasets.family_trees(dtype=C.DTYPE)
    x = torch.cat([person, relation], 1)
    tr = torch.stack([a for a, _ in FT.splits([0, 1])])          # (2, 100), different per seed
    net = FT.make_net()
    params = C.uniform_init(net, [0, 1], 0.3)
    sched = C.Schedule(0.01, 0.9, 0.005, 0.5, switch=3)        # the schedule switch inside the run
    res = C.train_ensemble(net, params, x[tr], target[tr], sweeps=6, schedule=sched, decay=0.002,
                           criterion=None, freeze_solved=False, band=(0.2, 0.8), x_batched=True)
    for i in range(2):
        ref = C.train_reference(FT.make_net(), C.seed_params(params, i), x[tr[i]], target[tr[i]], sweeps=6,
                                schedule=sched, decay=0.002, band=(0.2, 0.8))
        _assert_same(ref, C.seed_params(res.params, i))


def test_runner_uses_torch_bp_rules():
    x, d = datasets.symmetry(dtype=C.DTYPE)
    net = SYM.make_net()
    params = {n: p.requires_grad_() for n, p in C.uniform_init(net, [0, 1], 0.3).items()}
    y = C.ensemble_forward(net, params, x)
    assert type(y.grad_fn).__name__ == "VmappedSigmoidFunctionBackward"
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "VmappedLinearFunctionBackward"


def test_frozen_seed_keeps_weights_of_its_solving_sweep():
    x, d = datasets.xor(dtype=C.DTYPE)
    net = XP.mlp(2, 2).to(C.DTYPE)
    params = C.uniform_init(net, [19, 2], 0.5)                 # seed 2 solves XOR 2-2-1 at sweep 149, 19 never
    res = C.train_ensemble(net, params, x, d, sweeps=200, schedule=C.Schedule(0.5, 0.9))
    assert res.solved_at[0] == -1 and res.solved_at[1] >= 0 and res.sweeps_run == 200
    i = 1
    k = int(res.solved_at[i])
    ref = C.train_reference(XP.mlp(2, 2).to(C.DTYPE), C.seed_params(params, i), x, d, sweeps=k,
                            schedule=C.Schedule(0.5, 0.9))
    _assert_same(ref, C.seed_params(res.params, i))
    assert C.all_correct(res.outputs[i:i + 1], d.unsqueeze(0)).item()
    if k > 0:   # one sweep earlier it was not yet solved
        prev = C.train_reference(XP.mlp(2, 2).to(C.DTYPE), C.seed_params(params, i), x, d, sweeps=k - 1,
                                 schedule=C.Schedule(0.5, 0.9))
        y = torch.func.functional_call(XP.mlp(2, 2).to(C.DTYPE), prev, (x,))
        assert not C.all_correct(y.unsqueeze(0), d.unsqueeze(0)).item()


# --- symmetry ---
def test_symmetry_analysis_of_the_caption_solution():
    w = torch.tensor([-1.0, 2.0, -4.0, 4.0, -2.0, 1.0], dtype=C.DTYPE) * 1.9
    p = {"0.weight": torch.stack([w, -w]), "0.bias": torch.tensor([-1.5, -1.5], dtype=C.DTYPE),
         "2.weight": torch.tensor([[-6.0, -6.0]], dtype=C.DTYPE), "2.bias": torch.tensor([2.5], dtype=C.DTYPE)}
    a = SYM.analyse(p)
    assert a["antisymmetry_error"] == 0 and a["ratio_error"] < 1e-12 and a["hidden_corr"] == pytest.approx(-1)
    assert SYM.paper_like(a)
    x, d = datasets.symmetry(dtype=C.DTYPE)                  # the caption's net does detect symmetry
    y = torch.func.functional_call(SYM.make_net(), p, (x,))
    assert bool(((y > 0.5) == (d > 0.5)).all())
    p["0.weight"] = torch.stack([w, w])                        # not the caption's: units not opposite
    assert not SYM.paper_like(SYM.analyse(p))


def test_symmetry_tiny(tmp_path):
    out = SYM.run(4, 40, tag="tiny", results_dir=str(tmp_path), fig_dir=str(tmp_path))
    s = out["summary"]
    assert s["seeds"] == 4 and 0 <= s["solved"] <= 4
    assert all(-1 <= v <= 40 for v in out["solved_at"])
    saved = json.load(open(tmp_path / "symmetry_tiny.json"))
    assert saved["summary"]["solved"] == s["solved"] and saved["solved_at"] == out["solved_at"]
    assert os.listdir(tmp_path / "runs" / "symmetry" / "tiny")       # TensorBoard events
    assert "1,425" in SYM.report(out)
    p = C.uniform_init(SYM.make_net(), [0], 0.3)
    SYM.draw(C.seed_params(p, 0), str(tmp_path / "w.png"), "t")
    assert (tmp_path / "w.png").stat().st_size > 1000


# --- family trees ---
def test_family_trees_tiny(tmp_path):
    out = FT.run(2, tag="tiny", sweeps=5, results_dir=str(tmp_path), fig_dir=str(tmp_path))
    for name in ("paper", "variant"):
        r = out["results"][name]
        assert r["seeds"] == 2 and r["sweeps"] == 5
        for k in ("train_all_units_mean", "test_all_units_mean", "train_choice_mean", "test_choice_mean"):
            assert 0.0 <= r[k] <= 1.0
        assert len(r["figure_seed_code"]["nationality_corr"]) == 6
        assert (tmp_path / f"family_trees_person_units_{name}_tiny.png").exists()
    assert (tmp_path / "family_trees_tiny.json").exists()
    assert "|" in FT.report(out)


def test_family_tree_splits_hold_out_single_answer_cases():
    _, _, target, _ = datasets.family_trees()
    for tr, te in FT.splits(range(5)):
        assert len(tr) == 100 and len(te) == 4 and not set(tr.tolist()) & set(te.tolist())
        assert (target[te].sum(1) == 1).all()


def test_person_code_analysis_finds_a_nationality_unit():
    W = torch.randn(6, 24, dtype=C.DTYPE, generator=torch.Generator().manual_seed(0)) * 0.01
    W[0] = FT.NATIONALITY.to(C.DTYPE)
    W[1] = FT.GENERATION.to(C.DTYPE)
    a = FT.person_code_analysis(W)
    assert a["nationality_corr"][0] == pytest.approx(1.0) and a["generation_corr"][1] == pytest.approx(1.0)


# --- XOR and parity ---
def test_xor_parity_tiny(tmp_path):
    out = XP.run(3, tag="tiny", quick=True, max_sweeps=30, results_dir=str(tmp_path), fig_dir=str(tmp_path))
    assert set(out["results"]) == set(XP.TASKS)
    for r in out["results"].values():
        assert r["side"]["seeds"] == 3
        # every seed within 0.1 of its targets is also on the right side of 0.5, no later
        for s, t in zip(r["solved_side_at"], r["solved_0.1_at"]):
            assert t == -1 or 0 <= s <= t
    assert (tmp_path / "xor_parity_sweeps_tiny.png").exists()


def test_skip_net_has_direct_connections():
    net = XP.SkipNet(2, 1)
    assert net.output.weight.shape == (1, 3) and net.hidden.weight.shape == (1, 2)


# --- vanishing gradients ---
def test_vanishing_tiny(tmp_path):
    pytest.importorskip("lightning")
    pytest.importorskip("torch_bp.lightning")
    from experiments.paper1986 import vanishing as V
    out = V.run(2, 1, tag="tiny", configs=[("sigmoid", "standard"), ("relu", "he")], results_dir=str(tmp_path),
                fig_dir=str(tmp_path), log_root=str(tmp_path / "runs"), histograms=False,
                n_jacobian=16)
    sig, relu = out["results"]
    for r in (sig, relu):
        assert len(r["history"]) == 2 and len(r["history"][0]["error_signal"]) == V.DEPTH
        assert os.listdir(r["tensorboard"])
    # sigmoid with the standard init: the error signal shrinks by orders of magnitude towards the input
    assert V._ratio(sig["history"][0]["error_signal"]) < 1e-3
    assert 0.1 < V._ratio(relu["history"][0]["error_signal"]) < 10
    assert (tmp_path / "vanishing_gradient_by_depth_tiny.png").exists()


# --- the runner's per-seed rates, masks and weights at the solving sweep ---
def test_per_seed_rates_and_decay_equal_separate_runs():
    person, relation, target, _ = datasets.family_trees(dtype=C.DTYPE)
    x = torch.cat([person, relation], 1)
    tr = torch.stack([a for a, _ in FT.splits([0, 1])])
    net = FT.make_net()
    params = C.uniform_init(net, [0, 1], 0.3)
    eps, decay = torch.tensor([0.01, 0.001], dtype=C.DTYPE), torch.tensor([0.002, 0.0], dtype=C.DTYPE)
    sched = C.Schedule(eps, 0.9, 0.005, 0.5, switch=2)
    res = C.train_ensemble(net, params, x[tr], target[tr], sweeps=5, schedule=sched, decay=decay, criterion=None,
                           freeze_solved=False, band=(0.2, 0.8), x_batched=True)
    for i in range(2):
        ref = C.train_reference(FT.make_net(), C.seed_params(params, i), x[tr[i]], target[tr[i]], sweeps=5,
                                schedule=C.Schedule(float(eps[i]), 0.9, 0.005, 0.5, switch=2), decay=float(decay[i]),
                                band=(0.2, 0.8))
        _assert_same(ref, C.seed_params(res.params, i))


def test_masked_padding_leaves_the_small_net_exact():
    x, d = datasets.symmetry(dtype=C.DTYPE)
    small = C.uniform_init(SYM.make_net(2), [5], 0.3)
    big = {n: torch.zeros((1, *p.shape), dtype=C.DTYPE) for n, p in SYM.make_net(4).named_parameters()}
    mask = {n: torch.zeros_like(v) for n, v in big.items()}
    for n, v in small.items():
        sl = (slice(None),) + tuple(slice(0, k) for k in v.shape[1:])
        big[n][sl], mask[n][sl] = v, 1.0
    a = C.train_ensemble(SYM.make_net(2), small, x, d, sweeps=20, schedule=C.Schedule(0.1, 0.9), criterion=None)
    b = C.train_ensemble(SYM.make_net(4), big, x, d, sweeps=20, schedule=C.Schedule(0.1, 0.9), criterion=None,
                         mask=mask)
    torch.testing.assert_close(a.outputs, b.outputs, rtol=1e-12, atol=1e-12)
    assert (b.params["0.weight"][0, 2:] == 0).all() and (b.params["2.weight"][0, :, 2:] == 0).all()


def test_unfrozen_run_keeps_weights_of_the_solving_sweep():
    x, d = datasets.xor(dtype=C.DTYPE)
    net = XP.mlp(2, 2).to(C.DTYPE)
    params = C.uniform_init(net, [19, 2], 0.5)                 # seed 2 solves at sweep 149, 19 never (see above)
    res = C.train_ensemble(net, params, x, d, sweeps=200, schedule=C.Schedule(0.5, 0.9), freeze_solved=False)
    frozen = C.train_ensemble(net, params, x, d, sweeps=200, schedule=C.Schedule(0.5, 0.9))
    assert torch.equal(res.solved_at, frozen.solved_at)
    _assert_same(C.seed_params(frozen.params, 1), C.seed_params(res.at_solve, 1))
    assert torch.isnan(res.at_solve["0.weight"][0]).all()     # never solved: no solving sweep


# --- family-tree studies ---
def test_family_tree_studies_tiny(tmp_path):
    from experiments.paper1986 import family_trees_studies as FS
    out = FS.run_long(2, 40, tag="tiny", every=10, save_every=20, fig_dir=str(tmp_path), results_dir=str(tmp_path))
    assert set(out["recipes"]) == set(FS.LONG) and out["sweeps_reached"] == 40
    r = out["recipes"]["paper_eps0.001_nodecay"]
    assert r["eps"] == 0.001 and r["decay"] == 0.0 and len(r["first_sweep_train_90"]) == 2
    assert (tmp_path / "family_trees_long_tiny.png").exists() and "|" in FS.report_long(out)
    sel = FS.run_select(2, (10, 20), tag="tiny", results_dir=str(tmp_path))
    assert sel["chosen"] in sel["candidates"] and len(sel["candidates"]) == 2 * len(FS.CANDIDATES)
    assert sel["tuning_seeds"] == "1000-1001" and "chosen" in FS.report_select(sel)
    ho = FS.run_heldout(2, 2, tag="tiny", recipe=("variant", dict(FT.RECIPES["variant"])), sweeps=10,
                        fig_dir=str(tmp_path), results_dir=str(tmp_path))
    assert ho["nets"] == 4 and sum(ho["heldout_score_counts"].values()) == 4
    assert sum(v["tested"] for v in ho["per_relation"].values()) == 16
    assert ho["per_relation"]["uncle"]["tested"] == 0           # two-answer cases are never held out
    assert "relation held out" in FS.report_heldout(ho)


def test_unit_analysis_reads_twins_and_nationality():
    from experiments.paper1986 import family_trees_studies as FS
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 24, dtype=C.DTYPE, generator=g)
    W[1, 12:] = W[1, :12]                                      # unit 1 gives every twin the same weight
    W[0] = FT.NATIONALITY.to(C.DTYPE) + 0.01 * torch.randn(24, dtype=C.DTYPE, generator=g)
    units = FS.unit_analysis(W)
    assert units[1]["twin_r"] == pytest.approx(1.0) and FS.unit_kind(units[0]) == "nationality"
    W2 = W.clone()
    W2[:, 12:] = W2[:, :12]                                    # the whole code isomorphic: every twin nearest
    W2[0] = FT.NATIONALITY.to(C.DTYPE)
    assert FS.twin_nearest(W2) == 1.0


def test_censored_counts_unsolved_seeds_at_the_cap():
    c = XP.censored([10, 20, -1, -1, 30], cap=100, ks=(15, 100))
    assert c["median_all"] == 30 and c["fraction_by"] == {"15": 0.2, "100": 0.6}
    assert XP.censored([10, -1, -1], cap=100)["median_all"] is None


# --- symmetry with more hidden units ---
def test_symmetry_hidden_tiny(tmp_path):
    out = SYM.run_hidden(3, 30, (2, 4), tag="tiny", results_dir=str(tmp_path), fig_dir=str(tmp_path))
    assert set(out["results"]) == {"2", "4"} and out["results"]["2"]["summary"]["seeds"] == 3
    assert (tmp_path / "symmetry_hidden_tiny.json").exists() and "6-4-1" in SYM.report_hidden(out)


# --- XOR failures and the parity code ---
def test_xor_failures_rerun_unsolved_seeds(tmp_path):
    XP.run(3, tag="tiny", quick=True, tasks=("xor_2-2-1",), max_sweeps=20, results_dir=str(tmp_path))
    out = XP.run_failures(str(tmp_path / "xor_parity_tiny.json"), tasks=("xor_2-2-1",), tag="tiny",
                          results_dir=str(tmp_path))
    f = out["results"]["xor_2-2-1"]["failures"]
    assert len(f) == 3 and len(f[0]["hessian_eigenvalues"]) == 9 and f[0]["error_trace"][-1][0] == 20
    # the rerun ends where the ensemble ended (same seeds, same sweeps)
    res = C.train_ensemble(XP.mlp(2, 2).to(C.DTYPE), C.uniform_init(XP.mlp(2, 2), [0], 0.3, C.DTYPE),
                           *datasets.xor(C.DTYPE), sweeps=20, schedule=C.Schedule(0.5, 0.9))
    assert f[0]["error"] == pytest.approx(float(res.loss[0]), rel=1e-9)
    assert "Hessian" in XP.report_failures(out)


def test_hidden_code_recognises_a_thermometer():
    x, _ = datasets.parity(4, C.DTYPE)
    net = XP.mlp(4, 4).to(C.DTYPE)
    p = {"0.weight": torch.full((4, 4), 10.0, dtype=C.DTYPE),
         "0.bias": -10.0 * (torch.arange(1, 5, dtype=C.DTYPE) - 0.5)}   # unit k on iff count >= k
    c = XP.hidden_code(net, p, x)
    assert c["thermometer"] and c["all_thresholds"] and all(u["weights_one_sign"] for u in c["units"])
    p["0.weight"] = p["0.weight"] * torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=C.DTYPE)
    assert not XP.hidden_code(net, p, x)["all_functions_of_count"]


def test_parity_codes_tiny(tmp_path):
    out = XP.run_codes(3, 30, tag="tiny", results_dir=str(tmp_path))
    assert out["seeds"] == 3 and (tmp_path / "parity_codes_tiny.json").exists() and "hidden code" in XP.report_codes(out)


# --- vanishing gradients by depth ---
def test_vanishing_depth_tiny(tmp_path):
    from experiments.paper1986 import vanishing_depth as VD
    out = VD.run(depths=(2, 3), configs=[("sigmoid", "standard"), ("softsign", "normalized")], seeds=2, width=8,
                 steps=3, tag="tiny", results_dir=str(tmp_path), fig_dir=str(tmp_path))
    assert len(out["results"]) == 4
    for r in out["results"]:
        assert len(r["grad_init"]["error_signal"]) == r["depth"] and len(r["test_error"]) == 2
        assert len(r["activations"][-1]["histogram"]) == r["depth"]
    sig = next(r for r in out["results"] if r["activation"] == "sigmoid" and r["depth"] == 3)
    assert all(v < 1 for v in sig["grad_init"]["signal_ratio_per_seed"])   # sigmoid: shrinks towards the input
    assert (tmp_path / "vanishing_depth_tiny.png").exists() and "Glorot" in VD.report(out)


def test_batched_family_tree_net_equals_the_torch_bp_ensemble():
    person, relation, target, _ = datasets.family_trees(dtype=C.DTYPE)
    x = torch.cat([person, relation], 1)
    tr = torch.stack([a for a, _ in FT.splits([0, 1, 2])])
    net = FT.make_net()
    params = C.uniform_init(net, [0, 1, 2], 1.0)
    kw = dict(sweeps=25, schedule=C.Schedule(0.05, 0.9, 0.005, 0.5, switch=20), decay=0.0002, criterion=None,
              freeze_solved=False, band=(0.2, 0.8), x_batched=True)
    a = C.train_ensemble(net, params, x[tr], target[tr], **kw)
    b = C.train_ensemble(net, params, x[tr], target[tr], forward=FT.batched_forward, **kw)
    for n in a.params:
        torch.testing.assert_close(a.params[n], b.params[n], rtol=1e-12, atol=1e-12, msg=n)
