"""Samples for the normalization family: layer, RMS, batch and group norm."""

import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


# --- layer_norm / rms_norm ---
@samples("layer_norm")
def _layer_norm(make):
    yield Sample("last-dim", (make(4, 6), [6], make(6), make(6)))
    yield Sample("two-dims", (make(2, 3, 4, 5), (4, 5), make(4, 5), make(4, 5)))
    yield Sample("no-affine", (make(3, 7), (7,)))
    yield Sample("weight-only", (make(3, 7), (7,), make(7)))
    yield Sample("bias-only", (make(3, 7), (7,), None, make(7)))
    yield Sample("eps-large", (make(3, 7), (7,), make(7), make(7)), {"eps": 0.5})
    yield Sample("unbatched", (make(7), (7,), make(7), make(7)))
    yield Sample("empty-batch", (make(0, 7), (7,), make(7), make(7)))
    yield Sample("noncontiguous", (make(3, 5, 6, layout="t"), (6,), make(6), make(6)))
    yield Sample("large-magnitude", (make(4, 8, low=1e4, high=1e4 + 10), (8,), make(8), make(8)), cond=1e4 / 3)
    yield Sample("input-grad-only", (make(4, 6), (6,), make(6, requires_grad=False), make(6, requires_grad=False)))
    yield Sample("zero-features", (make(3, 0), (0,), make(0), make(0)))


@module_samples("layer_norm")
def _layer_norm_mod(make):
    yield ModuleSample("affine", (6,), {}, (make(4, 6),))
    yield ModuleSample("no-bias", ((3, 6),), {"bias": False}, (make(2, 3, 6),))
    yield ModuleSample("no-affine", (6,), {"elementwise_affine": False}, (make(4, 6),))


@error_samples("layer_norm")
def _layer_norm_err(make):
    yield Sample("shape-mismatch", (make(4, 6), (5,), make(5), make(5)))
    yield Sample("weight-shape", (make(4, 6), (6,), make(5), make(6)))


@samples("rms_norm")
def _rms_norm(make):
    yield Sample("last-dim", (make(4, 6), [6], make(6)))
    yield Sample("two-dims", (make(2, 3, 4, 5), (4, 5), make(4, 5)))
    yield Sample("no-affine", (make(3, 7), (7,)))
    yield Sample("eps", (make(3, 7), (7,), make(7)), {"eps": 1e-3})
    yield Sample("unbatched", (make(7), (7,), make(7)))
    yield Sample("empty-batch", (make(0, 7), (7,), make(7)))
    yield Sample("noncontiguous", (make(3, 5, 6, layout="t"), (6,), make(6)))
    yield Sample("large-magnitude", (make(4, 8, low=1e4, high=2e4), (8,), make(8)))
    yield Sample("zero-features", (make(3, 0), (0,), make(0)))


@module_samples("rms_norm")
def _rms_norm_mod(make):
    yield ModuleSample("affine", (6,), {}, (make(4, 6),))
    yield ModuleSample("no-affine-eps", ((3, 6),), {"elementwise_affine": False, "eps": 1e-4}, (make(2, 3, 6),))


@error_samples("rms_norm")
def _rms_norm_err(make):
    yield Sample("shape-mismatch", (make(4, 6), (5,), make(5)))


def _stats(make, c):
    """running_mean, running_var (buffers: no grad; the variance positive)."""
    return make(c, requires_grad=False), make(c, low=0.5, high=1.5, requires_grad=False)


# --- batch_norm ---
@samples("batch_norm")
def _batch_norm(make):
    yield Sample("train-4d", (make(3, 4, 3, 2), *_stats(make, 4), make(4), make(4), True))
    yield Sample("train-2d", (make(5, 3), *_stats(make, 3), make(3), make(3)), {"training": True})
    yield Sample("train-3d-momentum-eps", (make(2, 3, 4), *_stats(make, 3), make(3), make(3), True, 0.5, 1e-2))
    yield Sample("eval", (make(3, 4, 3, 2), *_stats(make, 4), make(4), make(4), False))
    yield Sample("train-5d", (make(2, 3, 2, 3, 2), *_stats(make, 3), make(3), make(3), True))
    yield Sample("eval-5d", (make(2, 3, 2, 2, 3), *_stats(make, 3), make(3), make(3), False))
    yield Sample("eval-no-affine", (make(2, 3, 4), *_stats(make, 3)))
    yield Sample("train-no-affine", (make(3, 4, 2, 2), *_stats(make, 4)), {"training": True})
    yield Sample("train-no-running-stats", (make(3, 4, 2, 2), None, None, make(4), make(4), True))
    yield Sample("weight-only", (make(4, 3, 2), *_stats(make, 3), make(3), None, True))
    yield Sample("batch-of-one", (make(1, 3, 2, 3), *_stats(make, 3), make(3), make(3), True))
    yield Sample("empty-batch", (make(0, 3, 2, 2), *_stats(make, 3), make(3), make(3), True))
    yield Sample("channels_last", (make(3, 4, 3, 2, layout="channels_last"), *_stats(make, 4), make(4), make(4),
                                   True))
    # NOTE: kept small: for strided input (neither contiguous nor channels_last) torch's bf16
    # kernel is less accurate than its own contiguous one (measured against float64: up to ~4x
    # our error, ~1e-2 relative at 36 values per channel); test_cnn checks ours against float64.
    yield Sample("noncontiguous", (make(4, 3, 2, layout="t"), *_stats(make, 3), make(3, layout="slice"),
                                   make(3), True))
    # values 10..14 per channel: x - mean cancels the leading digit, std ~1.15 -> cond ~ 12/1.15
    yield Sample("large-magnitude", (make(4, 3, 2, 2, low=10, high=14), *_stats(make, 3), make(3), make(3), True),
                 cond=10.0)


@module_samples("batch_norm")
def _batch_norm_mod(make):
    two_d = ("BatchNorm2d",)
    one_d = ("BatchNorm1d",)
    yield ModuleSample("affine", (3,), {}, (make(4, 3, 3, 3),), only=two_d)
    yield ModuleSample("momentum-none", (3,), {"momentum": None}, (make(4, 3, 2, 3),), only=two_d)
    yield ModuleSample("no-affine-eps", (3,), {"affine": False, "eps": 1e-3}, (make(2, 3, 3, 3),), only=two_d)
    yield ModuleSample("untracked", (3,), {"track_running_stats": False}, (make(2, 3, 3, 3),), only=two_d)
    yield ModuleSample("channels_last", (4,), {"momentum": 0.3}, (make(2, 4, 3, 3, layout="channels_last"),),
                       only=two_d)
    yield ModuleSample("batch-of-one", (3,), {}, (make(1, 3, 3, 2),), only=two_d)
    yield ModuleSample("2d-input", (5,), {}, (make(4, 5),), only=one_d)
    yield ModuleSample("3d-input-momentum-none", (3,), {"momentum": None}, (make(2, 3, 6),), only=one_d)
    yield ModuleSample("untracked-no-affine", (3,), {"track_running_stats": False, "affine": False},
                       (make(4, 3),), only=one_d)
    three_d = ("BatchNorm3d",)
    yield ModuleSample("5d-input", (3,), {}, (make(2, 3, 2, 3, 2),), only=three_d)
    yield ModuleSample("5d-momentum-none-no-affine", (2,), {"momentum": None, "affine": False},
                       (make(3, 2, 2, 2, 3),), only=three_d)


@error_samples("batch_norm")
def _batch_norm_err(make):
    yield Sample("one-value-per-channel", (make(1, 3), *_stats(make, 3)), {"training": True})
    yield Sample("running-mean-size", (make(2, 4, 3), *_stats(make, 3)), {"training": True})
    yield Sample("weight-size", (make(2, 3, 3), *_stats(make, 3), make(4)), {"training": True})
    yield Sample("eval-without-stats", (make(2, 3, 3), None, None), {"training": False})
    yield Sample("1d-input", (make(4), *_stats(make, 4)), {"training": True})


# --- group_norm ---
@samples("group_norm")
def _group_norm(make):
    yield Sample("4d", (make(2, 4, 3, 3), 2, make(4), make(4)))
    # 8 values per group: with 2 xh is pinned to +-1; with 4, a group of close values (cancellation
    # in x - mean) is likely enough to make the sample ill-conditioned
    yield Sample("2d", (make(3, 16), 2, make(16), make(16)))
    yield Sample("3d-eps", (make(2, 6, 4), 3, make(6), make(6)), {"eps": 1e-2})
    yield Sample("one-group", (make(2, 3, 2, 3), 1, make(3), make(3)))
    yield Sample("group-per-channel", (make(2, 3, 4, 2), 3, make(3), make(3)))
    yield Sample("no-affine", (make(2, 4, 3), 2))
    # (no bias-only sample: torch's own group_norm backward fails with weight=None and a bias,
    # "tensor does not have a device"; test_cnn checks ours against a composition instead)
    yield Sample("batch-of-one", (make(1, 4, 2, 3), 2, make(4), make(4)))
    yield Sample("empty-batch", (make(0, 4, 2, 2), 2, make(4), make(4)))
    yield Sample("channels_last", (make(2, 4, 3, 2, layout="channels_last"), 2, make(4), make(4)))
    yield Sample("noncontiguous", (make(2, 4, 3, 4, layout="t"), 4, make(4, layout="slice"), make(4)))


@module_samples("group_norm")
def _group_norm_mod(make):
    yield ModuleSample("affine", (2, 4), {}, (make(2, 4, 3, 3),))
    yield ModuleSample("no-affine-eps", (3, 6), {"affine": False, "eps": 1e-3}, (make(2, 6, 5),))


@error_samples("group_norm")
def _group_norm_err(make):
    yield Sample("not-divisible", (make(2, 4, 3), 3))
    yield Sample("1d-input", (make(4), 2))
    yield Sample("weight-size", (make(2, 4, 3), 2, make(3)))
    yield Sample("one-value-per-group", (make(1, 2), 2))


# --- instance_norm ---
@samples("instance_norm")
def _instance_norm(make):
    yield Sample("2d-affine", (make(2, 3, 3, 4), None, None, make(3), make(3)))
    yield Sample("1d-no-affine", (make(3, 2, 5),))
    yield Sample("3d-running-stats", (make(2, 2, 2, 3, 2), *_stats(make, 2), make(2), None), {"momentum": 0.3})
    yield Sample("eval-running-stats", (make(2, 3, 4), *_stats(make, 3), make(3), make(3)), {"use_input_stats": False})
    yield Sample("eps", (make(2, 3, 4), None, None, make(3), make(3)), {"eps": 1e-2})
    yield Sample("empty-batch", (make(0, 3, 4),))
    yield Sample("no-channels", (make(2, 0, 3, 4),))
    yield Sample("channels_last", (make(2, 3, 3, 2, layout="channels_last"), None, None, make(3), make(3)))


@module_samples("instance_norm")
def _instance_norm_mod(make):
    yield ModuleSample("1d", (3,), {}, (make(2, 3, 5),), only=("InstanceNorm1d",))
    yield ModuleSample("1d-unbatched-affine", (3,), {"affine": True}, (make(3, 5),), only=("InstanceNorm1d",))
    yield ModuleSample("2d-tracked", (3,), {"track_running_stats": True, "affine": True}, (make(2, 3, 3, 4),),
                       only=("InstanceNorm2d",))
    yield ModuleSample("3d-tracked-momentum-none", (2,), {"track_running_stats": True, "momentum": None},
                       (make(2, 2, 2, 3, 2),), only=("InstanceNorm3d",))


@error_samples("instance_norm")
def _instance_norm_err(make):
    yield Sample("one-spatial-element", (make(2, 3, 1),))
    yield Sample("eval-without-stats", (make(2, 3, 4),), {"use_input_stats": False})
    yield Sample("weight-size", (make(2, 3, 4), None, None, make(4)))


# --- local_response_norm ---
@samples("local_response_norm")
def _lrn(make):
    yield Sample("3d-odd-size", (make(2, 5, 4), 3))
    yield Sample("3d-even-size", (make(2, 6, 3), 4), {"alpha": 0.1, "beta": 0.5, "k": 1.5})
    if make.dtype != torch.bfloat16:  # torch runs avg_pool3d for >= 4-d inputs: no bfloat16 CPU kernel
        yield Sample("4d-even-size", (make(2, 6, 2, 3), 4), {"alpha": 0.1, "beta": 0.5, "k": 1.5})
        yield Sample("5d", (make(1, 4, 2, 2, 2), 2), {"alpha": 1.0, "k": 2.0})
    yield Sample("size-over-channels", (make(2, 3, 3), 7), {"alpha": 0.5})
    yield Sample("noncontiguous", (make(2, 4, 3, layout="t"), 3), {"alpha": 0.2})


@module_samples("local_response_norm")
def _lrn_mod(make):
    yield ModuleSample("basic", (3,), {"alpha": 0.1}, (make(2, 5, 3, 3),))


@error_samples("local_response_norm")
def _lrn_err(make):
    yield Sample("2d-input", (make(4, 5), 3))
    yield Sample("4d-bfloat16", (make(1, 3, 2, 2, dtype=torch.bfloat16), 2))


# --- sync_batch_norm (one process: the statistics of this batch; two processes: tests/test_sync_batchnorm.py) ---
@samples("sync_batch_norm")
def _sync_batch_norm(make):
    yield Sample("train-4d", (make(3, 4, 3, 2), *_stats(make, 4), make(4), make(4), True))
    yield Sample("train-2d", (make(5, 3), *_stats(make, 3), make(3), make(3)), {"training": True})
    yield Sample("train-3d-momentum-eps", (make(2, 3, 4), *_stats(make, 3), make(3), make(3), True, 0.5, 1e-2))
    yield Sample("eval", (make(3, 4, 3, 2), *_stats(make, 4), make(4), make(4), False))
    yield Sample("train-no-affine", (make(3, 4, 2, 2), *_stats(make, 4)), {"training": True})
    yield Sample("train-no-running-stats", (make(3, 4, 2, 2), None, None, make(4), make(4), True))
    yield Sample("weight-only", (make(4, 3, 2), *_stats(make, 3), make(3), None, True))
    yield Sample("empty-batch", (make(0, 3, 2, 2), *_stats(make, 3), make(3), make(3), True))
    yield Sample("channels_last", (make(3, 4, 3, 2, layout="channels_last"), *_stats(make, 4), make(4), make(4),
                                   True))
    # values 10..14 per channel: x - mean cancels the leading digit, std ~1.15 -> cond ~ 12/1.15
    yield Sample("large-magnitude", (make(4, 3, 2, 2, low=10, high=14), *_stats(make, 3), make(3), make(3), True),
                 cond=10.0)


@module_samples("sync_batch_norm")
def _sync_batch_norm_mod(make):
    yield ModuleSample("affine", (3,), {}, (make(4, 3, 3, 3),))
    yield ModuleSample("momentum-none", (3,), {"momentum": None}, (make(4, 3, 2, 3),))
    yield ModuleSample("untracked-no-affine", (3,), {"track_running_stats": False, "affine": False},
                       (make(4, 3),))
    yield ModuleSample("2d-input", (5,), {}, (make(4, 5),))


@error_samples("sync_batch_norm")
def _sync_batch_norm_err(make):
    yield Sample("one-value-per-channel", (make(1, 3), *_stats(make, 3)), {"training": True})
    yield Sample("running-mean-size", (make(2, 4, 3), *_stats(make, 3)), {"training": True})
    yield Sample("weight-size", (make(2, 3, 3), *_stats(make, 3), make(4)), {"training": True})
    yield Sample("eval-without-stats", (make(2, 3, 3), None, None), {"training": False})
