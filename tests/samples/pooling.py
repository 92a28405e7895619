"""Samples for max_pool2d, avg_pool2d and adaptive_avg_pool2d (and their modules)."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


def _distinct(make, *shape, layout=None):
    """Distinct values (a random permutation of a grid with step 0.1): no ties, so finite
    differences of the max are well defined, at any dtype with >= 8 bits of mantissa."""
    n = 1
    for s in shape:
        n *= s
    values = (torch.randperm(n, dtype=torch.float64) - n / 2) * (4.0 / max(n, 1))
    t = values.reshape(shape).to(make.dtype)
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "t":
        t = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t.requires_grad_()


# --- max_pool2d ---
@samples("max_pool2d")
def _max_pool(make):
    # bf16 has 8 significant bits: keep <= 128 elements so the grid values stay distinct
    yield Sample("basic", (_distinct(make, 2, 3, 4, 4), 2))
    yield Sample("overlap-stride-padding", (_distinct(make, 1, 2, 5, 6), 3), {"stride": 2, "padding": 1})
    yield Sample("ceil-odd-size", (_distinct(make, 2, 2, 5, 5), 2), {"stride": 2, "ceil_mode": True})
    yield Sample("ceil-padding-tuple", (_distinct(make, 1, 2, 7, 6), (3, 2)),
                 {"stride": (2, 3), "padding": (1, 1), "ceil_mode": True})
    yield Sample("dilation", (_distinct(make, 1, 2, 7, 7), 2), {"stride": 1, "dilation": (2, 3)})
    yield Sample("return-indices", (_distinct(make, 1, 3, 5, 4), 2), {"return_indices": True})
    # a window of more than 256 elements: the saved window argmax is int32, not uint8
    yield Sample("window-over-256", (_distinct(make, 1, 1, 17, 18), (17, 16)), {"stride": 1, "return_indices": True})
    yield Sample("batch-of-one", (_distinct(make, 1, 2, 4, 6), (2, 3)))
    yield Sample("empty-batch", (make(0, 2, 4, 4), 2))
    yield Sample("unbatched", (_distinct(make, 3, 5, 5), 3, 1, 1))
    yield Sample("channels_last", (_distinct(make, 2, 3, 4, 5, layout="channels_last"), 2), {"ceil_mode": True})
    yield Sample("noncontiguous", (_distinct(make, 2, 2, 5, 4, layout="t"), 2), {"stride": 1})
    # ties: the gradient goes whole to the first maximum of each window (torch's index)
    ties = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 2.0], [2.0, 0.0, 2.0]], dtype=make.dtype)
    yield Sample("ties", (ties.reshape(1, 1, 3, 3).requires_grad_(), 2), {"stride": 1}, gradcheck=False)


@module_samples("max_pool2d")
def _max_pool_mod(make):
    yield ModuleSample("basic", (2,), {}, (_distinct(make, 2, 3, 4, 4),))
    yield ModuleSample("ceil-padding-dilation", (3,), {"stride": 2, "padding": 1, "dilation": 2, "ceil_mode": True},
                       (_distinct(make, 1, 2, 7, 8),))
    yield ModuleSample("return-indices", (2,), {"return_indices": True}, (_distinct(make, 1, 2, 4, 4),))


@error_samples("max_pool2d")
def _max_pool_err(make):
    yield Sample("padding-too-large", (make(1, 2, 5, 5), 2), {"padding": 2})
    yield Sample("2d-input", (make(5, 5), 2))
    yield Sample("output-too-small", (make(1, 3, 1, 1), 2))
    yield Sample("kernel-size-length", (make(1, 3, 5, 5), (2, 2, 2)))
    yield Sample("zero-stride", (make(1, 3, 5, 5), 2), {"stride": 0})


# --- avg_pool2d ---
@samples("avg_pool2d")
def _avg_pool(make):
    yield Sample("basic", (make(2, 3, 4, 4), 2))
    yield Sample("overlap-padding", (make(1, 2, 5, 6), 3), {"stride": 2, "padding": 1})
    yield Sample("exclude-pad", (make(1, 2, 5, 6), 3), {"stride": 2, "padding": 1, "count_include_pad": False})
    yield Sample("ceil-odd-size", (make(2, 2, 5, 5), 2), {"ceil_mode": True})
    yield Sample("ceil-padding-include", (make(1, 2, 7, 6), (3, 2)),
                 {"stride": (2, 3), "padding": 1, "ceil_mode": True})
    yield Sample("ceil-padding-exclude", (make(1, 2, 7, 6), (3, 2)),
                 {"stride": (2, 3), "padding": 1, "ceil_mode": True, "count_include_pad": False})
    yield Sample("divisor-override", (make(1, 2, 5, 5), 3), {"stride": 2, "padding": 1, "divisor_override": 4})
    yield Sample("floor-drops-tail", (make(1, 2, 7, 6), 2), {"stride": 3})
    yield Sample("batch-of-one", (make(1, 2, 4, 6), (2, 3)))
    yield Sample("empty-batch", (make(0, 2, 4, 4), 2))
    yield Sample("unbatched", (make(3, 5, 5), 3, 1, 1))
    yield Sample("channels_last", (make(2, 3, 4, 5, layout="channels_last"), 2), {"ceil_mode": True})
    yield Sample("noncontiguous", (make(2, 2, 5, 4, layout="t"), 2), {"stride": 1})


@module_samples("avg_pool2d")
def _avg_pool_mod(make):
    yield ModuleSample("basic", (2,), {}, (make(2, 3, 4, 4),))
    yield ModuleSample("ceil-exclude-pad", (3,), {"stride": 2, "padding": 1, "ceil_mode": True,
                                                  "count_include_pad": False}, (make(1, 2, 6, 7),))
    yield ModuleSample("divisor-override", ((2, 3),), {"divisor_override": 5}, (make(1, 2, 6, 7),))


@error_samples("avg_pool2d")
def _avg_pool_err(make):
    yield Sample("padding-too-large", (make(1, 2, 5, 5), 2), {"padding": 2})
    yield Sample("zero-divisor", (make(1, 2, 5, 5), 2), {"divisor_override": 0})
    yield Sample("2d-input", (make(5, 5), 2))
    yield Sample("kernel-size-length", (make(1, 3, 5, 5), (2, 2, 2)))


# --- adaptive_avg_pool2d ---
@samples("adaptive_avg_pool2d")
def _adaptive(make):
    yield Sample("global", (make(2, 3, 4, 5), 1))
    yield Sample("overlapping-windows", (make(2, 2, 5, 7), (3, 4)))
    yield Sample("upsampling", (make(1, 2, 3, 2), (4, 5)))
    yield Sample("none-keeps-size", (make(1, 2, 5, 4), (None, 3)))
    yield Sample("batch-of-one", (make(1, 2, 6, 6), 4))
    yield Sample("empty-batch", (make(0, 2, 4, 4), 2))
    yield Sample("unbatched", (make(3, 5, 5), (2, 3)))
    yield Sample("channels_last", (make(2, 3, 5, 6, layout="channels_last"), (2, 4)))
    yield Sample("noncontiguous", (make(2, 2, 5, 4, layout="t"), 3))


@module_samples("adaptive_avg_pool2d")
def _adaptive_mod(make):
    yield ModuleSample("global", (1,), {}, (make(2, 3, 4, 4),))
    yield ModuleSample("odd", ((3, None),), {}, (make(1, 2, 7, 5),))


@error_samples("adaptive_avg_pool2d")
def _adaptive_err(make):
    yield Sample("2d-input", (make(3, 5), 2))
    yield Sample("negative-size", (make(1, 2, 5, 5), -1))
    yield Sample("three-sizes", (make(1, 2, 5, 5), (1, 2, 3)))
