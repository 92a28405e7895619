"""Samples for interpolate (and Upsample*), pixel_shuffle, pixel_unshuffle, channel_shuffle, fold and unfold."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples

# (mode, spatial dims) pairs torch accepts
_MODES = (("nearest", 1), ("nearest", 2), ("nearest", 3), ("nearest-exact", 1), ("nearest-exact", 2),
          ("linear", 1), ("bilinear", 2), ("bicubic", 2), ("trilinear", 3), ("area", 1), ("area", 2), ("area", 3))
_SIZES = {1: (5,), 2: (4, 3), 3: (3, 2, 3)}


@samples("interpolate")
def _interpolate(make):
    for mode, nd in _MODES:
        sp = _SIZES[nd]
        linear = mode in ("linear", "bilinear", "bicubic", "trilinear")
        corners = (False, True) if linear else (None,)
        for ac in corners:
            tag = f"{mode}-{nd}d" + ("" if ac is None else f"-align{int(ac)}")
            # NOTE: torch's bfloat16 adaptive_avg_pool3d backward (area, 3d) accumulates in bfloat16 (27
            # terms per element at 3 -> 7; ~4x our error against float64): that bf16 run takes 2x (8 terms)
            up = 2 * (make.dtype == torch.bfloat16 and (mode, nd) == ("area", 3))
            yield Sample(f"{tag}-scale", (make(1, 2, *sp),), {"scale_factor": 1.7, "mode": mode, "align_corners": ac})
            if ac:  # (align_corners=True: one sample per mode keeps gradcheck's time in bounds)
                continue
            yield Sample(f"{tag}-up-size", (make(2, 2, *sp),), {"size": tuple(2 * s + 1 - up // 2 for s in sp),
                                                               "mode": mode, "align_corners": ac})
            yield Sample(f"{tag}-down-size", (make(1, 2, *(2 * s + 1 for s in sp)),),
                         {"size": sp, "mode": mode, "align_corners": ac})
    # a scale factor whose 1/scale differs from in/out: torch reads with 1/scale unless recomputed
    for rec in (None, True):
        yield Sample(f"nearest-scale-2.3-recompute{rec}", (make(1, 2, 5, 4),),
                     {"scale_factor": (2.3, 0.6), "mode": "nearest", "recompute_scale_factor": rec})
        yield Sample(f"bilinear-scale-0.7-recompute{rec}", (make(1, 2, 7, 6),),
                     {"scale_factor": (0.7, 1.45), "mode": "bilinear", "recompute_scale_factor": rec})
    if make.dtype != torch.bfloat16:  # torch's antialias kernels: float32/float64 only on CPU
        yield from _antialias(make)
    yield Sample("nearest-exact-down", (make(1, 2, 9),), {"size": 4, "mode": "nearest-exact"})
    yield Sample("nearest-twice", (make(2, 3, 3, 4),), {"scale_factor": 2})
    yield Sample("bilinear-empty-batch", (make(0, 2, 3, 3),), {"size": 5, "mode": "bilinear"})
    yield Sample("bilinear-channels_last", (make(2, 3, 4, 3, layout="channels_last"),),
                 {"scale_factor": 2, "mode": "bilinear"})
    yield Sample("bicubic-noncontiguous", (make(1, 2, 4, 5, layout="t"),), {"size": (6, 7), "mode": "bicubic"})


def _antialias(make):
    yield Sample("bilinear-antialias-down", (make(1, 2, 9, 8),), {"size": (4, 3), "mode": "bilinear",
                                                                  "antialias": True})
    yield Sample("bicubic-antialias-down", (make(1, 2, 9, 8),), {"size": (4, 5), "mode": "bicubic",
                                                                 "antialias": True, "align_corners": True})
    yield Sample("bilinear-antialias-scale", (make(1, 2, 9, 8),), {"scale_factor": 0.45, "mode": "bilinear",
                                                                   "antialias": True})


@module_samples("interpolate")
def _interpolate_mod(make):
    yield ModuleSample("upsample-nearest", (), {"scale_factor": 2}, (make(1, 2, 3, 4),), only=("Upsample",))
    yield ModuleSample("upsample-bilinear", (), {"size": (5, 7), "mode": "bilinear"}, (make(1, 2, 3, 4),),
                       only=("Upsample",))
    yield ModuleSample("upsample-trilinear-corners", (), {"scale_factor": 1.5, "mode": "trilinear",
                                                         "align_corners": True}, (make(1, 2, 2, 3, 2),),
                       only=("Upsample",))
    yield ModuleSample("nearest2d", (), {"scale_factor": 3}, (make(1, 2, 3, 2),), only=("UpsamplingNearest2d",))
    yield ModuleSample("bilinear2d", (), {"size": (5, 4)}, (make(1, 2, 3, 2),), only=("UpsamplingBilinear2d",))


@error_samples("interpolate")
def _interpolate_err(make):
    yield Sample("bad-mode", (make(1, 2, 4),), {"size": 5, "mode": "cubic"})
    yield Sample("bilinear-3d-input", (make(1, 2, 4),), {"size": 5, "mode": "bilinear"})
    yield Sample("size-and-scale", (make(1, 2, 4),), {"size": 5, "scale_factor": 2.0})
    yield Sample("neither", (make(1, 2, 4),), {})
    yield Sample("align-corners-nearest", (make(1, 2, 4),), {"size": 5, "align_corners": True})
    yield Sample("size-length", (make(1, 2, 4, 4),), {"size": (5, 5, 5)})
    yield Sample("antialias-nearest", (make(1, 2, 4, 4),), {"size": 3, "antialias": True})


# --- pixel_shuffle / pixel_unshuffle / channel_shuffle ---
@samples("pixel_shuffle")
def _pixel_shuffle(make):
    yield Sample("basic", (make(2, 8, 3, 2), 2))
    yield Sample("factor-3", (make(1, 18, 2, 3), 3))
    yield Sample("unbatched", (make(4, 3, 3), 2))
    yield Sample("extra-batch-dims", (make(2, 1, 4, 2, 2), 2))
    yield Sample("channels_last", (make(2, 8, 3, 2, layout="channels_last"), 2))


@module_samples("pixel_shuffle")
def _pixel_shuffle_mod(make):
    yield ModuleSample("basic", (2,), {}, (make(2, 8, 3, 2),))


@error_samples("pixel_shuffle")
def _pixel_shuffle_err(make):
    yield Sample("channels-not-divisible", (make(1, 6, 2, 2), 2))
    yield Sample("2d-input", (make(4, 4), 2))


@samples("pixel_unshuffle")
def _pixel_unshuffle(make):
    yield Sample("basic", (make(2, 2, 6, 4), 2))
    yield Sample("factor-3", (make(1, 2, 3, 6), 3))
    yield Sample("unbatched", (make(3, 4, 2), 2))
    yield Sample("noncontiguous", (make(1, 2, 4, 6, layout="t"), 2))


@module_samples("pixel_unshuffle")
def _pixel_unshuffle_mod(make):
    yield ModuleSample("basic", (2,), {}, (make(2, 2, 4, 6),))


@error_samples("pixel_unshuffle")
def _pixel_unshuffle_err(make):
    yield Sample("size-not-divisible", (make(1, 2, 5, 4), 2))


@samples("channel_shuffle")
def _channel_shuffle(make):
    yield Sample("basic", (make(2, 6, 3, 2), 3))
    yield Sample("1d", (make(2, 4, 5), 2))
    yield Sample("3d", (make(1, 6, 2, 2, 2), 2))
    yield Sample("noncontiguous", (make(2, 4, 3, 3, layout="t"), 4))


@module_samples("channel_shuffle")
def _channel_shuffle_mod(make):
    yield ModuleSample("basic", (2,), {}, (make(2, 6, 3, 2),))


@error_samples("channel_shuffle")
def _channel_shuffle_err(make):
    yield Sample("channels-not-divisible", (make(1, 5, 2, 2), 2))


# --- unfold / fold ---
@samples("unfold")
def _unfold(make):
    yield Sample("basic", (make(2, 3, 4, 5), 2))
    yield Sample("dilation-padding-stride", (make(1, 2, 6, 5), (2, 3)), {"dilation": (2, 1), "padding": 1,
                                                                         "stride": (2, 1)})
    yield Sample("unbatched", (make(2, 4, 4), 3), {"padding": 1})
    yield Sample("noncontiguous", (make(1, 2, 4, 5, layout="t"), 2), {"stride": 2})


@module_samples("unfold")
def _unfold_mod(make):
    yield ModuleSample("basic", ((2, 3),), {"padding": 1, "stride": 2}, (make(2, 2, 5, 5),))


@error_samples("unfold")
def _unfold_err(make):
    yield Sample("5d-input", (make(1, 2, 3, 4, 4), 2))
    yield Sample("kernel-too-large", (make(1, 2, 3, 3), 4))


@samples("fold")
def _fold(make):
    yield Sample("basic", (make(2, 12, 12), (4, 5), 2))
    yield Sample("dilation-padding-stride", (make(1, 12, 9), (6, 5), (2, 3)),
                 {"dilation": (2, 1), "padding": 1, "stride": (2, 2)})
    yield Sample("unbatched", (make(18, 16), (4, 4), 3), {"padding": 1})
    yield Sample("noncontiguous", (make(1, 8, 4, layout="t"), (4, 4), 2), {"stride": 2})


@module_samples("fold")
def _fold_mod(make):
    yield ModuleSample("basic", ((4, 5), 2), {}, (make(2, 12, 12),))


@error_samples("fold")
def _fold_err(make):
    yield Sample("blocks-mismatch", (make(2, 12, 11), (4, 5), 2))
    yield Sample("channels-not-divisible", (make(2, 10, 12), (4, 5), 2))
