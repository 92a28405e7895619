"""Samples for the linear family: linear and the fused linear + activation."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples


# --- linear ---
@samples("linear")
def _linear(make):
    yield Sample("2d", (make(5, 4), make(3, 4), make(3)))
    yield Sample("3d-no-bias", (make(2, 5, 4), make(3, 4)), {"bias": None})
    yield Sample("unbatched", (make(4), make(3, 4), make(3)))
    yield Sample("empty-batch", (make(0, 4), make(3, 4), make(3)))
    yield Sample("noncontiguous", (make(5, 4, layout="t"), make(3, 4, layout="slice"), make(3)))
    yield Sample("weight-only-grad", (make(5, 4, requires_grad=False), make(3, 4), make(3, requires_grad=False)))


@module_samples("linear")
def _linear_mod(make):
    yield ModuleSample("bias", (4, 3), {}, (make(5, 4),))
    yield ModuleSample("no-bias", (4, 3), {"bias": False}, (make(2, 5, 4),))


@error_samples("linear")
def _linear_err(make):
    yield Sample("shape-mismatch", (make(5, 4), make(3, 6), make(3)))
    yield Sample("dtype-mismatch", (make(5, 4), make(3, 4, dtype=torch.float64), None))
    yield Sample("bias-shape", (make(5, 4), make(3, 4), make(5)))


# --- linear_activation ---
_ACTS = (("relu", "none"), ("gelu", "none"), ("gelu", "tanh"), ("silu", "none"))


@samples("linear_activation")
def _linear_activation(make):
    for act, approx in _ACTS:
        kw = {"activation": act, "approximate": approx}
        yield Sample(f"2d {act}-{approx}", (make(5, 4), make(3, 4), make(3)), kw)
        yield Sample(f"3d-no-bias {act}-{approx}", (make(2, 5, 4), make(3, 4)), {"bias": None, **kw})
    yield Sample("unbatched gelu", (make(4), make(3, 4), make(3)), {"activation": "gelu"})
    yield Sample("empty-batch relu", (make(0, 4), make(3, 4), make(3)), {"activation": "relu"})
    yield Sample("noncontiguous silu", (make(5, 4, layout="t"), make(3, 4, layout="slice"), make(3)),
                 {"activation": "silu"})
    # 13 outputs: rows of the 1-bit mask straddle bytes
    yield Sample("odd-width relu", (make(3, 4), make(13, 4), make(13)), {"activation": "relu"})
    yield Sample("bias-grad-only gelu", (make(6, 4, requires_grad=False), make(5, 4, requires_grad=False), make(5)),
                 {"activation": "gelu", "approximate": "tanh"})


# --- bilinear ---
# torch's bilinear (_trilinear) and its backward contract in two steps and round the
# intermediate to bfloat16; each gradient entry sums 6-10 products of O(1) terms that cancel,
# so torch's own bfloat16 result is off by up to ~4x the table's 2 ulp of the result (measured
# against torch in float64 on these samples; ours, in float32 rounded once, is not): cond 4.
_BILINEAR_COND = 4.0


@samples("bilinear")
def _bilinear(make):
    for s in _bilinear_plain(make):
        s.cond = _BILINEAR_COND
        yield s


def _bilinear_plain(make):
    yield Sample("2d bias", (make(4, 3), make(4, 2), make(5, 3, 2), make(5)))
    yield Sample("2d no-bias", (make(4, 3), make(4, 2), make(5, 3, 2)))
    yield Sample("3d", (make(2, 3, 3), make(2, 3, 2), make(4, 3, 2), make(4)))
    yield Sample("1d (unbatched)", (make(3), make(2), make(4, 3, 2), make(4)))
    yield Sample("weight-no-grad", (make(4, 3), make(4, 2), make(5, 3, 2, requires_grad=False), make(5)))
    yield Sample("inputs-no-grad", (make(4, 3, requires_grad=False), make(4, 2, requires_grad=False),
                                    make(5, 3, 2), make(5)))
    yield Sample("empty-batch", (make(0, 3), make(0, 2), make(5, 3, 2), make(5)))
    yield Sample("noncontiguous", (make(4, 3, layout="t"), make(4, 2, layout="slice"), make(5, 3, 2), make(5)))


@module_samples("bilinear")
def _bilinear_mod(make):
    yield ModuleSample("(3, 2, 4)", (3, 2, 4), {}, (make(5, 3), make(5, 2)))
    yield ModuleSample("no bias", (3, 2, 4), {"bias": False}, (make(2, 5, 3), make(2, 5, 2)))


@error_samples("bilinear")
def _bilinear_err(make):
    yield Sample("dims differ", (make(4, 3), make(2), make(5, 3, 2)))
    yield Sample("batch differs", (make(4, 3), make(3, 2), make(5, 3, 2)))
    yield Sample("in1 size", (make(4, 2), make(4, 2), make(5, 3, 2)))
    yield Sample("bias size", (make(4, 3), make(4, 2), make(5, 3, 2), make(4)))
    yield Sample("dtype", (make(4, 3), make(4, 2, dtype=torch.float64), make(5, 3, 2)))
