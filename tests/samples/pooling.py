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


# --- 1-d and 3-d pooling, adaptive max, fractional max, unpooling: one generator per kind, over nd ---
_SP = {1: (9,), 2: (5, 6), 3: (3, 4, 3)}  # small: gradcheck of every sample runs in CI


def _nd_pool_samples(make, kind, nd):
    """Samples of {max,avg}_pool{nd}d: ``kind`` is "max" or "avg"; sizes shrink with nd."""
    sp = _SP[nd]
    x = _distinct if kind == "max" else (lambda mk, *shape, layout=None: mk(*shape, layout=layout))
    yield Sample("basic", (x(make, 2, 2, *sp), 2))
    yield Sample("overlap-stride-padding", (x(make, 1, 2, *sp), 3), {"stride": 2, "padding": 1})
    yield Sample("ceil-mode", (x(make, 2, 1, *sp), 2), {"stride": 2, "ceil_mode": True})
    yield Sample("kernel-tuple", (x(make, 1, 2, *sp), (2,) * (nd - 1) + (3,)), {"stride": 1})
    yield Sample("empty-batch", (make(0, 2, *sp), 2))
    yield Sample("unbatched", (x(make, 2, *sp), 2))
    yield Sample("noncontiguous", (x(make, 2, 2, *sp[:-1], 2 * sp[-1])[..., ::2].detach().requires_grad_(), 2))
    if kind == "max":
        yield Sample("dilation", (x(make, 1, 2, *sp), 2), {"dilation": 2, "stride": 1})
        yield Sample("return-indices", (x(make, 1, 2, *sp), 2), {"return_indices": True})
    else:
        yield Sample("exclude-pad-ceil", (x(make, 1, 2, *sp), 3), {"stride": 2, "padding": 1, "ceil_mode": True,
                                                                   "count_include_pad": False})
        if nd == 3:
            yield Sample("divisor-override", (x(make, 1, 2, *sp), 2), {"divisor_override": 3})


def _adaptive_samples(make, kind, nd):
    sp = _SP[nd]
    x = _distinct if kind == "max" else (lambda mk, *shape: mk(*shape))
    yield Sample("global", (x(make, 2, 2, *sp), 1))
    yield Sample("overlapping-windows", (x(make, 1, 2, *sp), tuple(s - 2 for s in sp)))
    yield Sample("upsampling", (x(make, 1, 2, *sp), tuple(s + 1 for s in sp)))
    yield Sample("divides", (x(make, 2, 1, *(2 * s for s in sp[:2]), *sp[2:]), sp[:2] + sp[2:]))
    yield Sample("unbatched", (x(make, 2, *sp), 2))
    yield Sample("empty-batch", (make(0, 2, *sp), 2))
    if nd > 1:
        yield Sample("none-keeps-size", (x(make, 1, 2, *sp), (None,) + (2,) * (nd - 1)))
    if kind == "max":
        yield Sample("return-indices", (x(make, 1, 2, *sp), 3), {"return_indices": True})


def _fractional_samples(make, nd):
    sp = {2: (7, 6), 3: (5, 6, 5)}[nd]
    yield Sample("output-size", (_distinct(make, 2, 2, *sp), 2), {"output_size": 3})
    # a tuple: torch's F.fractional_max_pool*d fails on a float output_ratio (len() of a float)
    yield Sample("output-ratio", (_distinct(make, 1, 2, *sp), (2,) * nd), {"output_ratio": (0.5,) * nd})
    yield Sample("return-indices", (_distinct(make, 1, 2, *sp), 3), {"output_size": 2, "return_indices": True})
    yield Sample("unbatched", (_distinct(make, 2, *sp), 2), {"output_size": 3})
    samples_ = torch.rand(1, 2, nd, dtype=make.dtype)
    yield Sample("given-samples", (_distinct(make, 1, 2, *sp), 2), {"output_size": 3, "_random_samples": samples_})


def _unpool_samples(make, nd):
    sp = _SP[nd]
    even = tuple(2 * (s // 2) for s in sp)  # sizes the default output size of unpooling gets back
    pool = (torch.nn.functional.max_pool1d, torch.nn.functional.max_pool2d, torch.nn.functional.max_pool3d)[nd - 1]
    for desc, shape, k, kw in (("basic", (2, 2, *even), 2, {}), ("stride-padding", (1, 2, *sp), 3,
                                                                    {"stride": 2, "padding": 1}),
                               ("unbatched", (2, *even), 2, {})):
        y, idx = pool(torch.randn(shape), k, return_indices=True, **kw)
        # overlapping windows (stride-padding) may pick one index twice: torch's forward keeps one of the written
        # values, its gradient (and ours) gathers that position for both: a convention, not a derivative
        yield Sample(desc, (make(*y.shape), idx, k), {**kw, "output_size": shape[-nd:]} if kw else kw,
                     gradcheck=not kw)
    y, idx = pool(torch.randn(1, 2, *sp), 2, return_indices=True)
    yield Sample("output-size", (make(*y.shape), idx, 2), {"output_size": sp})
    y, idx = pool(torch.randn(0, 2, *even), 2, return_indices=True)
    yield Sample("empty-batch", (make(*y.shape), idx, 2))


def _nd_pool_modules(make, kind, nd):
    sp = _SP[nd]
    if kind == "max":
        yield ModuleSample("ceil-padding-dilation", (3,), {"stride": 2, "padding": 1, "dilation": 2, "ceil_mode": True},
                           (_distinct(make, 1, 2, *sp),))
        yield ModuleSample("return-indices", (2,), {"return_indices": True}, (_distinct(make, 1, 2, *sp),))
    elif kind == "avg":
        yield ModuleSample("ceil-exclude-pad", (3,), {"stride": 2, "padding": 1, "ceil_mode": True,
                                                      "count_include_pad": False}, (make(1, 2, *sp),))
    elif kind == "adaptive_avg":
        yield ModuleSample("odd", (3,), {}, (make(1, 2, *sp),))
    elif kind == "adaptive_max":
        yield ModuleSample("odd", (3,), {"return_indices": True}, (_distinct(make, 1, 2, *sp),))
    elif kind == "fractional":
        sp = {2: (7, 6), 3: (5, 6, 5)}[nd]
        yield ModuleSample("output-ratio", (2,), {"output_ratio": 0.5}, (_distinct(make, 1, 2, *sp),))
        yield ModuleSample("output-size-indices", (2,), {"output_size": 3, "return_indices": True},
                           (_distinct(make, 1, 2, *sp),))
    elif kind == "lp":
        yield ModuleSample("p2-stride", (2.0, 2), {"stride": 1}, (make(2, 2, *sp, low=0.5),))
        yield ModuleSample("p3-ceil", (3, 3), {"ceil_mode": True, "stride": 2}, (make(1, 2, *sp, low=0.5),))
    elif kind == "unpool":
        pool = (torch.nn.functional.max_pool1d, torch.nn.functional.max_pool2d,
                torch.nn.functional.max_pool3d)[nd - 1]
        y, idx = pool(torch.randn(2, 2, *sp), 2, return_indices=True)
        yield ModuleSample("basic", (2,), {}, (make(*y.shape), idx), {"output_size": sp})
        yield ModuleSample("output-size", (2,), {}, (make(*y.shape), idx), {"output_size": sp})


def _nd_pool_errors(make, kind, nd):
    sp = _SP[nd]
    if kind in ("max", "avg"):
        yield Sample("padding-too-large", (make(1, 2, *sp), 2), {"padding": 2})
        yield Sample("wrong-rank", (make(*sp[:1]), 2))
        yield Sample("kernel-size-length", (make(1, 2, *sp), (2,) * (nd + 1)))
        # torch's CPU max_pool1d without indices has no integer kernel (NotImplementedError; 2-d/3-d have one)
        if kind == "max" and nd == 1:
            yield Sample("integer-input", (make.int(3, 1, 2, *sp), 2))
    elif kind in ("adaptive_avg", "adaptive_max"):
        yield Sample("too-many-sizes", (make(1, 2, *sp), (2,) * (nd + 1)))
        yield Sample("negative-size", (make(1, 2, *sp), -1))
    elif kind == "fractional":
        yield Sample("ratio-too-large", (make(1, 2, *(6,) * nd), 2), {"output_ratio": (1.5,) * nd})
        yield Sample("neither", (make(1, 2, *(6,) * nd), 2))
    elif kind == "lp":
        yield Sample("kernel-too-large", (make(1, 2, *(2,) * nd), 2.0, 3))
        yield Sample("wrong-rank", (make(*(4,) * (nd - 1)), 2.0, 2))
    elif kind == "unpool":
        yield Sample("indices-shape", (make(1, 2, *(2,) * nd), torch.zeros(1, 2, *(3,) * nd, dtype=torch.long), 2))


_POOL_ROWS = (("max_pool1d", "max", 1), ("max_pool3d", "max", 3), ("avg_pool1d", "avg", 1), ("avg_pool3d", "avg", 3),
              ("adaptive_avg_pool1d", "adaptive_avg", 1), ("adaptive_avg_pool3d", "adaptive_avg", 3),
              ("adaptive_max_pool1d", "adaptive_max", 1), ("adaptive_max_pool2d", "adaptive_max", 2),
              ("adaptive_max_pool3d", "adaptive_max", 3), ("fractional_max_pool2d", "fractional", 2),
              ("fractional_max_pool3d", "fractional", 3), ("max_unpool1d", "unpool", 1),
              ("max_unpool2d", "unpool", 2), ("max_unpool3d", "unpool", 3),
              ("lp_pool1d", "lp", 1), ("lp_pool2d", "lp", 2), ("lp_pool3d", "lp", 3))


def _lp_samples(make, nd):
    sp = _SP[nd]
    yield Sample("p2", (make(2, 2, *sp, low=0.5), 2.0, 2))
    yield Sample("p3-stride-ceil", (make(1, 2, *sp, low=0.5), 3.0, 3), {"stride": 2, "ceil_mode": True})
    # (torch's lp_pool1d multiplies by kernel_size itself: an int only)
    yield Sample("p1-kernel-tuple", (make(1, 2, *sp, low=0.5), 1, (2,) * (nd - 1) + (3,) if nd > 1 else 3),
                 {"stride": 1})
    yield Sample("p1.5-positive", (make(2, 1, *sp, low=0.5, high=2.0), 1.5, 2))
    yield Sample("unbatched", (make(2, *sp, low=0.5), 2.0, 2))
    # an all-zero window: y = 0 and torch's gradient there is 0 (not the root's infinite slope)
    zeros = make(1, 2, *sp, low=0.5).detach()
    zeros[..., :2] = 0
    yield Sample("zero-window", (zeros.requires_grad_(), 2.0, 2), gradcheck=False)


def _pool_samples(make, kind, nd):
    if kind in ("avg", "lp") and nd == 3 and make.dtype == torch.bfloat16:
        return ()  # torch has no bfloat16 avg_pool3d on CPU (ours raises its NotImplementedError)
    if kind == "lp":
        return _lp_samples(make, nd)
    if kind in ("max", "avg"):
        return _nd_pool_samples(make, kind, nd)
    if kind in ("adaptive_avg", "adaptive_max"):
        return _adaptive_samples(make, kind[len("adaptive_"):], nd)
    return _fractional_samples(make, nd) if kind == "fractional" else _unpool_samples(make, nd)


for _name, _kind, _nd in _POOL_ROWS:
    samples(_name)(lambda make, kind=_kind, nd=_nd: _pool_samples(make, kind, nd))
    module_samples(_name)(lambda make, kind=_kind, nd=_nd: _nd_pool_modules(make, kind, nd))
    error_samples(_name)(lambda make, kind=_kind, nd=_nd: _nd_pool_errors(make, kind, nd))
