"""Samples for the pointwise family: elementwise products."""

from . import Sample, samples


@samples("mul")
def _mul(make):
    yield Sample("same-shape", (make(3, 4), make(3, 4)))
    yield Sample("gate", (make(2, 3, 5), make(2, 3, 5)))
    yield Sample("layer-scale", (make(6), make(2, 3, 3, 6)))
    yield Sample("broadcast-both", (make(2, 1, 4), make(3, 1)))
    yield Sample("number", (make(3, 4), 0.125))
    yield Sample("number-first", (-2.5, make(3, 4)))
    yield Sample("one-needs-grad", (make(3, 4), make(3, 4, requires_grad=False)))
    yield Sample("noncontiguous", (make(3, 4, layout="t"), make(3, 4)))
    yield Sample("empty-batch", (make(0, 4), make(4)))


@samples("where")
def _where(make):
    def cond(*shape):
        return make(*shape, requires_grad=False) > 0
    yield Sample("same-shape", (cond(3, 4), make(3, 4), make(3, 4)))
    yield Sample("causal-mask-on-bias", (cond(1, 1, 4, 4), make(1, 2, 4, 4), make(2, 1, 4, 4)))
    yield Sample("number-other", (cond(3, 4), make(3, 4), -1e4))
    yield Sample("number-input", (cond(3, 4), 0.5, make(4)))
    yield Sample("one-needs-grad", (cond(3, 4), make(3, 4), make(3, 4, requires_grad=False)))
    yield Sample("empty-batch", (cond(0, 4), make(0, 4), make(4)))
