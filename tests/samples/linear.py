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
