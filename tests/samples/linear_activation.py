"""Samples for linear_activation (the linear layer with its activation in a fused epilogue)."""
from . import Sample, samples

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
