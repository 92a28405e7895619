"""Per-layer argument strategies for the fuzzer: the one table, keyed by registry name.

An entry maps a parameter name of the functional (as in torch.nn.functional's signature)
to either a hypothesis strategy or a callable ``(arguments) -> strategy or None`` for options that
depend on the sample (a ``dim`` within the input's rank, an ``ignore_index`` among the
targets). A layer without an entry is fuzzed with its samples' own options. Values at the
edges of what torch accepts are listed on purpose (p=0 and p=1, eps=0, a bad string): the
fuzzer checks that we accept and reject exactly what torch does.

An entry whose name is not (yet) in the registry is ignored; ``test_fuzz`` checks that
every entry names a registry row once all families have landed.
"""
from __future__ import annotations

import torch
from hypothesis import strategies as st

# eps at its edges: 0 (a zero-variance row divides by zero), denormal-tiny, huge.
_EPS = st.sampled_from([1e-5, 0.0, 1e-30, 1e-45, 1.0, 1e10])
_REDUCTION = st.sampled_from(["mean", "sum", "none"] * 2 + ["bogus"])  # a bad string 1 draw in 7
_P = st.sampled_from([0.5, 0.0, 1.0, 0.999, 1e-7, -0.1, 1.5])


def _dim(a):
    """Any valid dim of the input, plus one out of range on each side."""
    x = a.get("input")
    if not isinstance(x, torch.Tensor):
        return None
    n = max(x.dim(), 1)
    return st.integers(-n - 1, n)


def _class_dim_target(a):
    """ignore_index: the default, a class some targets hold, or the class every target holds."""
    t = a.get("target")
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.numel() == 0:
        return st.sampled_from([-100, 0, 1])
    present = sorted(set(t.reshape(-1).tolist()))
    return st.sampled_from([-100] + present + [-1])


OPTIONS: dict[str, dict] = {
    # --- core (activations, norms) ---
    "leaky_relu": {"negative_slope": st.sampled_from([0.01, 0.0, -1.0, 1.0, 1e3, 1e-30])},
    "elu": {"alpha": st.sampled_from([1.0, 0.0, 0.5, -1.0, 1e3])},
    "gelu": {"approximate": st.sampled_from(["none", "tanh", "fast"])},
    "softplus": {"beta": st.sampled_from([1.0, 2.0, 0.5, 1e-3, 1e3, -1.0]),
                 "threshold": st.sampled_from([20.0, 0.0, -5.0, 1e3, 1e-3])},
    "layer_norm": {"eps": _EPS},
    "rms_norm": {"eps": st.sampled_from([None, 1e-5, 0.0, 1e-30, 1e-45, 1.0, 1e10])},
    # --- softmax, dropout, embedding, losses ---
    "softmax": {"dim": _dim, "dtype": st.sampled_from([None, torch.float64, torch.float32, torch.bfloat16])},
    "log_softmax": {"dim": _dim, "dtype": st.sampled_from([None, torch.float64, torch.float32, torch.bfloat16])},
    "dropout": {"p": _P, "training": st.booleans()},
    "embedding": {"padding_idx": st.sampled_from([None, 0, 1, -1]),
                  "max_norm": st.sampled_from([None, 1.0, 1e-3, 0.0]),
                  "norm_type": st.sampled_from([2.0, 1.0, float("inf")]),
                  "scale_grad_by_freq": st.booleans()},
    "mse_loss": {"reduction": _REDUCTION},
    "l1_loss": {"reduction": _REDUCTION},
    "huber_loss": {"reduction": _REDUCTION, "delta": st.sampled_from([1.0, 0.5, 1e-6, 1e6, 0.0])},
    "smooth_l1_loss": {"reduction": _REDUCTION, "beta": st.sampled_from([1.0, 0.0, 0.5, 1e-6, 1e6])},
    "cross_entropy": {"reduction": _REDUCTION, "ignore_index": _class_dim_target,
                      "label_smoothing": st.sampled_from([0.0, 0.1, 1.0, 0.999])},
    "nll_loss": {"reduction": _REDUCTION, "ignore_index": _class_dim_target},
    "binary_cross_entropy_with_logits": {"reduction": _REDUCTION},
    # --- more activations, dropout variants, losses, distances ---
    "hardtanh": {"min_val": st.sampled_from([-1.0, 0.0, -1e3]), "max_val": st.sampled_from([1.0, 0.0, 1e3])},
    "hardshrink": {"lambd": st.sampled_from([0.5, 0.0, 1e3])},
    "softshrink": {"lambd": st.sampled_from([0.5, 0.0, 1e3, -1.0])},
    "celu": {"alpha": st.sampled_from([1.0, 0.5, 1e3, 0.0, -1.0])},
    "glu": {"dim": _dim},
    "rrelu": {"lower": st.sampled_from([0.125, 0.0, 0.3]), "upper": st.sampled_from([1 / 3, 0.3, 1.0]),
              "training": st.booleans()},
    "softmin": {"dim": _dim},
    **{name: {"p": _P, "training": st.booleans()}
       for name in ("dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")},
    "binary_cross_entropy": {"reduction": _REDUCTION},
    "kl_div": {"reduction": st.sampled_from(["mean", "sum", "none", "batchmean", "bogus"]),
               "log_target": st.booleans()},
    "poisson_nll_loss": {"reduction": _REDUCTION, "log_input": st.booleans(), "full": st.booleans(),
                         "eps": st.sampled_from([1e-8, 0.0, 1.0])},
    "gaussian_nll_loss": {"reduction": _REDUCTION, "full": st.booleans(), "eps": st.sampled_from([1e-6, 0.0, 1.0])},
    "soft_margin_loss": {"reduction": _REDUCTION},
    "hinge_embedding_loss": {"reduction": _REDUCTION, "margin": st.sampled_from([1.0, 0.0, -1.0, 1e3])},
    "margin_ranking_loss": {"reduction": _REDUCTION, "margin": st.sampled_from([0.0, 0.5, -1.0])},
    "multilabel_soft_margin_loss": {"reduction": _REDUCTION},
    "cosine_embedding_loss": {"reduction": _REDUCTION, "margin": st.sampled_from([0.0, 0.5, -1.0])},
    "triplet_margin_loss": {"reduction": _REDUCTION, "margin": st.sampled_from([1.0, 1e-3, 0.0]),
                            "p": st.sampled_from([2.0, 1.0, 3.0]), "swap": st.booleans()},
    "multi_margin_loss": {"reduction": _REDUCTION, "p": st.sampled_from([1, 2, 3]),
                          "margin": st.sampled_from([1.0, 0.0, -1.0])},
    "multilabel_margin_loss": {"reduction": _REDUCTION},
    "pairwise_distance": {"p": st.sampled_from([2.0, 1.0, 0.0, 0.5, 3.0, float("inf")]),
                          "eps": st.sampled_from([1e-6, 0.0]), "keepdim": st.booleans()},
    "cosine_similarity": {"dim": _dim, "eps": st.sampled_from([1e-8, 0.0, 1.0])},
    # --- conv, pool, batch/group norm ---
    "batch_norm": {"eps": _EPS, "momentum": st.sampled_from([0.1, 0.0, 1.0])},
    "group_norm": {"eps": _EPS},
    "instance_norm": {"eps": _EPS},
    # --- attention ---
    "scaled_dot_product_attention": {"is_causal": st.booleans(),
                                     "scale": st.sampled_from([None, 1.0, 1e-3, 1e3])},
}

# Layers taking class-index targets with an ignore_index.
EVERY_TARGET_IGNORED = ("cross_entropy", "nll_loss")


def _every_target_ignored(draw, a):
    """Half the time with index targets: every target is the ignore_index (mean -> 0/0)."""
    t = a.get("target")
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.numel() == 0:
        return None
    if not draw(st.booleans()):
        return None
    a["target"] = torch.full_like(t, a.get("ignore_index", -100))
    return f"every target = ignore_index {a.get('ignore_index', -100)}"


# Edits of the arguments beyond single option values, applied after OPTIONS:
# ``fn(draw, arguments) -> description or None``, editing ``arguments`` in place.
ARG_EDITS = {name: _every_target_ignored for name in EVERY_TARGET_IGNORED}
