"""Samples for pad (F.pad) and the padding modules (Constant/Zero/Reflection/Replication/CircularPad 1d-3d)."""

from . import ModuleSample, Sample, error_samples, module_samples, samples

# spatial sizes per number of padded dims, and a padding (torch's order: last dim first) for each
_SIZES = {1: (5,), 2: (4, 5), 3: (3, 4, 3)}
_PADS = {1: (2, 1), 2: (1, 2, 2, 0), 3: (1, 0, 2, 1, 0, 2)}


@samples("pad")
def _pad(make):
    for nd in (1, 2, 3):
        for mode in ("constant", "reflect", "replicate", "circular"):
            value = {"value": 1.5} if mode == "constant" else {}
            yield Sample(f"{mode}-{nd}d", (make(2, 2, *_SIZES[nd]), _PADS[nd]), {"mode": mode, **value})
    yield Sample("constant-default", (make(2, 3, 4), (1, 1)))
    yield Sample("constant-negative-crop", (make(2, 3, 4, 5), (-1, 2, 1, -2)))
    yield Sample("constant-4-dims", (make(2, 3, 2, 3), (1, 0, 0, 1, 1, 1, 0, 1)), {"value": -1.0})
    yield Sample("reflect-negative-crop", (make(1, 2, 6), (-2, 3)), {"mode": "reflect"})
    yield Sample("circular-negative-crop", (make(1, 2, 4, 5), (-1, 2, 3, -1)), {"mode": "circular"})
    yield Sample("circular-full-size", (make(1, 2, 4), (4, 4)), {"mode": "circular"})
    yield Sample("replicate-wide", (make(1, 2, 3), (5, 4)), {"mode": "replicate"})
    yield Sample("reflect-unbatched-2d", (make(2, 4, 5), (3, 3, 2, 3)), {"mode": "reflect"})
    yield Sample("replicate-empty-batch", (make(0, 2, 4, 5), (1, 1, 1, 1)), {"mode": "replicate"})
    yield Sample("reflect-noncontiguous", (make(2, 3, 5, 4, layout="t"), (1, 2, 3, 1)), {"mode": "reflect"})
    yield Sample("replicate-channels_last", (make(2, 3, 4, 5, layout="channels_last"), (1, 2, 2, 1)),
                 {"mode": "replicate"})


@module_samples("pad")
def _pad_mod(make):
    for nd in (1, 2, 3):
        pad = _PADS[nd]
        x = (make(2, 2, *_SIZES[nd]),)
        yield ModuleSample(f"constant-{nd}d", (pad, 0.5), {}, x, only=(f"ConstantPad{nd}d",))
        yield ModuleSample(f"zero-{nd}d", (pad,), {}, x, only=(f"ZeroPad{nd}d",))
        for cls in ("Reflection", "Replication", "Circular"):
            yield ModuleSample(f"{cls.lower()}-{nd}d", (pad,), {}, x, only=(f"{cls}Pad{nd}d",))
        yield ModuleSample(f"int-padding-{nd}d", (1,), {}, x, only=tuple(f"{c}Pad{nd}d" for c in (
            "Zero", "Reflection", "Replication", "Circular")))


@error_samples("pad")
def _pad_err(make):
    yield Sample("odd-length", (make(1, 2, 4), (1, 2, 3)))
    yield Sample("too-many-dims", (make(2, 4), (1, 1, 1, 1, 1, 1)))
    yield Sample("bad-mode", (make(1, 2, 4), (1, 1)), {"mode": "mirror"})
    yield Sample("reflect-too-wide", (make(1, 2, 4), (4, 0)), {"mode": "reflect"})
    yield Sample("circular-too-wide", (make(1, 2, 4), (5, 0)), {"mode": "circular"})
    yield Sample("value-with-reflect", (make(1, 2, 4), (1, 1)), {"mode": "reflect", "value": 1.0})
    yield Sample("reflect-wrong-rank", (make(4), (1, 1)), {"mode": "reflect"})
    yield Sample("constant-crop-to-negative", (make(1, 2, 4), (-3, -2)))
