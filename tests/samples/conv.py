"""Samples for conv1d, conv2d and conv_transpose2d (and their modules)."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


# --- conv2d ---
@samples("conv2d")
def _conv2d(make):
    yield Sample("basic", (make(2, 4, 6, 5), make(3, 4, 3, 3), make(3)))
    yield Sample("stride-padding-tuples", (make(2, 3, 7, 6), make(4, 3, 3, 2), make(4)),
                 {"stride": (2, 1), "padding": (1, 2)})
    yield Sample("dilation", (make(1, 2, 7, 7), make(3, 2, 2, 3), make(3)), {"dilation": (2, 1), "padding": 1})
    yield Sample("odd-size-stride", (make(2, 2, 7, 5), make(3, 2, 2, 2), make(3)), {"stride": 2})
    yield Sample("stride-dilation", (make(1, 2, 9, 8), make(2, 2, 3, 3), None),
                 {"stride": (3, 2), "dilation": 2, "padding": (2, 1)})
    yield Sample("same-odd-kernel", (make(2, 3, 5, 6), make(4, 3, 3, 3), make(4)), {"padding": "same"})
    yield Sample("same-even-kernel", (make(2, 3, 5, 6), make(4, 3, 2, 4), make(4)), {"padding": "same"})
    yield Sample("same-dilated", (make(1, 2, 6, 6), make(2, 2, 2, 3), make(2)), {"padding": "same", "dilation": 3})
    yield Sample("valid", (make(2, 3, 5, 6), make(4, 3, 3, 3), make(4)), {"padding": "valid"})
    yield Sample("groups", (make(2, 4, 5, 5), make(6, 2, 3, 3), make(6)), {"groups": 2, "padding": 1})
    yield Sample("depthwise", (make(2, 3, 6, 5), make(6, 1, 3, 3), make(6)), {"groups": 3, "stride": 2})
    yield Sample("no-bias", (make(2, 3, 5, 5), make(4, 3, 1, 1)))
    yield Sample("batch-of-one", (make(1, 3, 5, 4), make(2, 3, 3, 3), make(2)))
    yield Sample("empty-batch", (make(0, 3, 5, 4), make(2, 3, 3, 3), make(2)))
    yield Sample("unbatched", (make(3, 5, 4), make(2, 3, 3, 3), make(2)), {"padding": 1})
    yield Sample("channels_last", (make(2, 4, 5, 6, layout="channels_last"),
                                   make(3, 4, 3, 3, layout="channels_last"), make(3)), {"padding": 1})
    yield Sample("noncontiguous", (make(2, 3, 5, 6, layout="t"), make(2, 3, 3, 2, layout="slice"), make(2)))
    yield Sample("weight-grad-only", (make(2, 3, 5, 4, requires_grad=False), make(2, 3, 3, 3), None))
    yield Sample("input-grad-only", (make(2, 3, 5, 4), make(2, 3, 3, 3, requires_grad=False),
                                     make(2, requires_grad=False)), {"stride": 2, "padding": 1})


@module_samples("conv2d")
def _conv2d_mod(make):
    yield ModuleSample("zeros", (4, 6, 3), {"padding": 1}, (make(2, 4, 7, 6),))
    yield ModuleSample("reflect-same", (4, 2, (2, 3)), {"padding": "same", "padding_mode": "reflect"},
                       (make(2, 4, 5, 6),))
    yield ModuleSample("replicate-stride", (4, 3, 3), {"padding": (1, 2), "padding_mode": "replicate", "stride": 2},
                       (make(2, 4, 7, 6),))
    yield ModuleSample("circular-groups", (4, 4, 3), {"padding": 2, "padding_mode": "circular", "groups": 2,
                                                      "bias": False}, (make(1, 4, 5, 5),))
    yield ModuleSample("unbatched-reflect", (2, 3, 3), {"padding": 1, "padding_mode": "reflect", "dilation": 2},
                       (make(2, 6, 5),))


@error_samples("conv2d")
def _conv2d_err(make):
    yield Sample("channel-mismatch", (make(2, 4, 5, 5), make(3, 3, 3, 3)))
    yield Sample("groups-channels", (make(2, 4, 5, 5), make(6, 2, 3, 3)), {"groups": 3})
    yield Sample("out-channels-not-divisible", (make(2, 4, 5, 5), make(5, 2, 3, 3)), {"groups": 2})
    yield Sample("bias-shape", (make(2, 4, 5, 5), make(3, 4, 3, 3), make(4)))
    yield Sample("kernel-too-large", (make(1, 4, 2, 2), make(3, 4, 3, 3)))
    yield Sample("bad-padding-string", (make(1, 4, 5, 5), make(3, 4, 3, 3)), {"padding": "full"})
    yield Sample("same-strided", (make(1, 4, 5, 5), make(3, 4, 3, 3)), {"padding": "same", "stride": 2})
    yield Sample("negative-padding", (make(1, 4, 5, 5), make(3, 4, 3, 3)), {"padding": -1})
    yield Sample("zero-stride", (make(1, 4, 5, 5), make(3, 4, 3, 3)), {"stride": 0})
    yield Sample("stride-length", (make(1, 4, 5, 5), make(3, 4, 3, 3)), {"stride": (1, 1, 1)})
    yield Sample("5d-input", (make(1, 1, 4, 5, 5), make(3, 4, 3, 3)))
    yield Sample("dtype-mismatch", (make(1, 4, 5, 5), make(3, 4, 3, 3, dtype=torch.float64)))


# --- conv1d ---
@samples("conv1d")
def _conv1d(make):
    yield Sample("basic", (make(2, 4, 9), make(3, 4, 3), make(3)))
    yield Sample("stride-padding-dilation", (make(2, 3, 10), make(4, 3, 3), make(4)),
                 {"stride": 2, "padding": 2, "dilation": 2})
    yield Sample("same-even-kernel", (make(2, 3, 7), make(2, 3, 4), make(2)), {"padding": "same"})
    yield Sample("valid-odd-stride", (make(1, 2, 8), make(2, 2, 3), None), {"padding": "valid", "stride": 3})
    yield Sample("depthwise", (make(2, 4, 7), make(4, 1, 3), make(4)), {"groups": 4, "padding": 1})
    yield Sample("groups", (make(2, 4, 7), make(6, 2, 2), None), {"groups": 2})
    yield Sample("empty-batch", (make(0, 3, 6), make(2, 3, 3), make(2)))
    yield Sample("unbatched", (make(3, 6), make(2, 3, 3), make(2)), {"padding": (1,)})
    yield Sample("noncontiguous", (make(2, 3, 7, layout="slice"), make(2, 3, 3, layout="t"), make(2)))


@module_samples("conv1d")
def _conv1d_mod(make):
    for mode in ("zeros", "reflect", "replicate", "circular"):
        yield ModuleSample(mode, (4, 3, 3), {"padding": 2, "padding_mode": mode, "stride": 2}, (make(2, 4, 9),))
    yield ModuleSample("same-circular", (4, 2, 4), {"padding": "same", "padding_mode": "circular"}, (make(4, 7),))


@error_samples("conv1d")
def _conv1d_err(make):
    yield Sample("4d-input", (make(1, 4, 5, 5), make(3, 4, 3)))
    yield Sample("channel-mismatch", (make(2, 4, 5), make(3, 3, 3)))
    yield Sample("kernel-too-large", (make(2, 4, 2), make(3, 4, 3)), {"dilation": 2})


# --- conv_transpose2d ---
@samples("conv_transpose2d")
def _conv_t(make):
    yield Sample("basic", (make(2, 4, 4, 3), make(4, 3, 3, 3), make(3)))
    yield Sample("stride-padding-output-padding", (make(2, 3, 4, 5), make(3, 2, 3, 2), make(2)),
                 {"stride": (2, 3), "padding": 1, "output_padding": (1, 2)})
    yield Sample("groups", (make(2, 4, 3, 3), make(4, 3, 2, 2), make(6)), {"groups": 2, "stride": 2})
    yield Sample("dilation-output-padding", (make(1, 2, 3, 4), make(2, 2, 3, 3), None),
                 {"dilation": 3, "output_padding": 2})
    yield Sample("depthwise", (make(2, 3, 4, 4), make(3, 1, 3, 3), make(3)), {"groups": 3, "padding": 1})
    yield Sample("no-bias", (make(2, 3, 4, 4), make(3, 2, 2, 2)), {"stride": 2})
    yield Sample("batch-of-one", (make(1, 3, 3, 3), make(3, 2, 3, 3), make(2)))
    yield Sample("empty-batch", (make(0, 3, 3, 3), make(3, 2, 3, 3), make(2)))
    yield Sample("unbatched", (make(3, 3, 4), make(3, 2, 3, 3), make(2)), {"stride": 2})
    yield Sample("channels_last", (make(2, 4, 3, 4, layout="channels_last"),
                                   make(4, 3, 3, 3, layout="channels_last"), make(3)), {"stride": 2, "padding": 1})
    yield Sample("noncontiguous", (make(2, 3, 4, 3, layout="t"), make(3, 2, 3, 2, layout="slice"), make(2)))


@module_samples("conv_transpose2d")
def _conv_t_mod(make):
    yield ModuleSample("basic", (4, 3, 3), {"stride": 2, "padding": 1}, (make(2, 4, 4, 4),))
    yield ModuleSample("output-size", (4, 3, 3), {"stride": 2, "padding": 1}, (make(2, 4, 4, 4),),
                       {"output_size": [8, 8]})
    yield ModuleSample("groups-dilation", (4, 6, 2), {"groups": 2, "dilation": 2, "stride": 3, "bias": False},
                       (make(2, 4, 3, 3),), {"output_size": (9, 11)})


@error_samples("conv_transpose2d")
def _conv_t_err(make):
    yield Sample("output-padding-too-large", (make(2, 4, 5, 5), make(4, 3, 3, 3)),
                 {"stride": 2, "output_padding": 2})
    yield Sample("channel-mismatch", (make(2, 4, 5, 5), make(3, 3, 3, 3)))
    yield Sample("padding-string", (make(2, 4, 5, 5), make(4, 3, 3, 3)), {"padding": "same"})
    yield Sample("bias-shape", (make(2, 2, 5, 5), make(2, 1, 3, 3), make(3)))
    yield Sample("output-too-small", (make(1, 2, 1, 1), make(2, 1, 1, 1)), {"padding": 1})


# --- conv3d, conv_transpose1d, conv_transpose3d: one generator over the number of spatial dims ---
def _nd_conv_samples(make, nd, transposed):
    """Samples of an nd (transposed) convolution; sizes shrink with nd to keep gradcheck fast."""
    sp = {1: (7,), 2: (5, 4), 3: (3, 2, 4)}[nd]
    k = {1: (3,), 2: (3, 2), 3: (2, 1, 2)}[nd]

    def w(c_in, c_out, groups=1):  # (C_out, C_in/G, *k) for a convolution, (C_in, C_out/G, *k) transposed
        return make(c_in, c_out // groups, *k) if transposed else make(c_out, c_in // groups, *k)

    # the first sample is the one gradgradcheck runs: kept small in 3-d
    yield Sample("basic", (make(2, 3, *sp), w(3, 2), make(2)) if nd < 3 else (make(1, 2, *sp), w(2, 2), make(2)))
    opts = {"stride": 2, "padding": 1, "dilation": (1,) * (nd - 1) + (2,)}
    if transposed:
        opts["output_padding"] = 1
    yield Sample("stride-padding-dilation", (make(1, 2, *sp), w(2, 3), make(3)), opts)
    yield Sample("groups-no-bias", (make(2, 4, *sp), w(4, 2, groups=2), None), {"groups": 2})
    yield Sample("empty-batch", (make(0, 2, *sp), w(2, 2), make(2)))
    yield Sample("unbatched", (make(2, *sp), w(2, 3), make(3)), {"padding": tuple(int(kk > 1) for kk in k)})
    yield Sample("noncontiguous", (make(2, 2, *sp, layout="slice"), w(2, 2), make(2)))
    if not transposed:
        yield Sample("same", (make(1, 2, *sp), w(2, 3), make(3)), {"padding": "same"})


def _nd_conv_modules(make, nd, transposed):
    sp = {1: (7,), 3: (4, 3, 5)}[nd]
    yield ModuleSample("basic", (2, 4, 3), {"stride": 2, "padding": 1}, (make(2, 2, *sp),))
    if transposed:
        yield ModuleSample("output-size", (2, 3, 2), {"stride": 2, "groups": 1, "bias": False}, (make(1, 2, *sp),),
                           {"output_size": [2 * s + 1 for s in sp]})
    else:
        for mode in ("reflect", "replicate", "circular"):
            yield ModuleSample(mode, (2, 3, 2), {"padding": 1, "padding_mode": mode}, (make(1, 2, *sp),))


def _nd_conv_errors(make, nd, transposed):
    sp = (4,) * nd
    yield Sample("wrong-rank", (make(1, 2, 1, *sp), make(2, 2, *(2,) * nd)))
    yield Sample("channel-mismatch", (make(1, 3, *sp), make(2, 2, *(2,) * nd)))
    yield Sample("zero-stride", (make(1, 2, *sp), make(2, 2, *(2,) * nd)), {"stride": 0})


for _name, _nd, _t in (("conv3d", 3, False), ("conv_transpose1d", 1, True), ("conv_transpose3d", 3, True)):
    samples(_name)(lambda make, nd=_nd, t=_t: _nd_conv_samples(make, nd, t))
    module_samples(_name)(lambda make, nd=_nd, t=_t: _nd_conv_modules(make, nd, t))
    error_samples(_name)(lambda make, nd=_nd, t=_t: _nd_conv_errors(make, nd, t))
