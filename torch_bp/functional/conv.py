"""``torch_bp.functional``: convolutions. See the package docstring."""
from __future__ import annotations

from .._amp import autocast_inputs
from ..ops import conv as _conv
from ._checks import _real_only, _check_conv, _check_positive, _conv_tuple


def _convnd(nd, name, input, weight, bias, stride, padding, dilation, groups, pad=None, padding_mode="zeros"):
    """conv1d/conv2d, and the modules' convolution with an explicit ``pad`` in ``padding_mode``."""
    input, weight, bias = autocast_inputs(name, input, weight, bias)
    _real_only(name, input, weight, bias)
    _check_conv(input, weight, bias, nd, groups, name)
    stride, dilation = _conv_tuple(stride, nd, "stride"), _conv_tuple(dilation, nd, "dilation")
    _check_positive(stride, "stride")
    _check_positive(dilation, "dilation")
    k = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            total = [d * (kk - 1) for d, kk in zip(dilation, k)]
            padding = tuple(t // 2 for t in total)
            if any(t % 2 for t in total):  # as torch: the odd remainder goes on the right, as a zero pad
                pad = tuple((0, t - 2 * (t // 2)) for t in total)
        else:
            raise RuntimeError(f"Invalid padding string: {padding!r}")
    padding = _conv_tuple(padding, nd, "padding")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    sizes = input.shape[-nd:]
    padded = [h + 2 * p + (0 if pad is None else sum(pad[i])) for i, (h, p) in enumerate(zip(sizes, padding))]
    if any(hp < d * (kk - 1) + 1 for hp, d, kk in zip(padded, dilation, k)):
        raise RuntimeError(f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
                           f"Kernel size: ({' x '.join(str(d * (kk - 1) + 1) for d, kk in zip(dilation, k))}). "
                           "Kernel size can't be greater than actual input size")
    opts = _conv.ConvOptions(stride, padding, dilation, int(groups), pad, padding_mode)
    return _conv.ConvFunction.apply(input, weight, bias, opts)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _convnd(1, "conv1d", input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _convnd(2, "conv2d", input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _convnd(3, "conv3d", input, weight, bias, stride, padding, dilation, groups)


def _conv_transposend(nd, name, input, weight, bias, stride, padding, output_padding, groups, dilation):
    """conv_transpose1d/2d/3d: torch's checks, then :class:`torch_bp.ops.conv.ConvTransposeFunction`."""
    input, weight, bias = autocast_inputs(name, input, weight, bias)
    if isinstance(padding, str):
        raise TypeError(f"{name}(): argument 'padding' must be tuple of ints, not str")
    _check_conv(input, weight, bias, nd, groups, name, transposed=True)
    stride, dilation = _conv_tuple(stride, nd, "stride"), _conv_tuple(dilation, nd, "dilation")
    padding, output_padding = _conv_tuple(padding, nd, "padding"), _conv_tuple(output_padding, nd, "output_padding")
    _check_positive(stride, "stride")
    _check_positive(dilation, "dilation")
    if any(p < 0 for p in padding + output_padding):
        raise RuntimeError("negative padding is not supported")
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={list(output_padding)}, stride={list(stride)}, dilation={list(dilation)}")
    k = weight.shape[2:]
    out = [(h - 1) * s - 2 * p + d * (kk - 1) + op + 1
           for h, s, p, d, kk, op in zip(input.shape[-nd:], stride, padding, dilation, k, output_padding)]
    if any(o <= 0 for o in out):
        raise RuntimeError(f"Given input size per channel: ({' x '.join(map(str, input.shape[-nd:]))}). "
                           f"Calculated output size per channel: ({' x '.join(map(str, out))}). "
                           "Output size is too small")
    opts = _conv.ConvTransposeOptions(stride, padding, output_padding, int(groups), dilation)
    return _conv.ConvTransposeFunction.apply(input, weight, bias, opts)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transposend(1, "conv_transpose1d", input, weight, bias, stride, padding, output_padding, groups,
                             dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transposend(2, "conv_transpose2d", input, weight, bias, stride, padding, output_padding, groups,
                             dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transposend(3, "conv_transpose3d", input, weight, bias, stride, padding, output_padding, groups,
                             dilation)
