"""Convolution modules: torch.nn's classes with the convolution routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F


def _explicit_pad(module):
    """(lo, hi) per spatial dim from torch's ``_reversed_padding_repeated_twice`` (last dim first)."""
    rp = module._reversed_padding_repeated_twice
    nd = len(rp) // 2
    return tuple((rp[2 * (nd - 1 - i)], rp[2 * (nd - 1 - i) + 1]) for i in range(nd))


class _ConvForward:
    """``forward``/``_conv_forward`` of Conv1d/Conv2d. For ``padding_mode`` other than ``'zeros'``
    torch pads the input with ``F.pad`` and then convolves without padding; here that padding
    is part of :class:`torch_bp.ops.conv.ConvFunction` (and of its backward rule)."""

    _nd = 0

    def _conv_forward(self, input, weight, bias):
        name = f"conv{self._nd}d"
        if self.padding_mode != "zeros":
            return F._convnd(self._nd, name, input, weight, bias, self.stride, 0, self.dilation, self.groups,
                             pad=_explicit_pad(self), padding_mode=self.padding_mode)
        return F._convnd(self._nd, name, input, weight, bias, self.stride, self.padding, self.dilation,
                         self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class Conv1d(_ConvForward, torch.nn.Conv1d):
    r"""Drop-in :class:`torch.nn.Conv1d` (all four ``padding_mode``\ s, ``padding='same'``/``'valid'``).

    Its backward is :class:`torch_bp.ops.conv.ConvFunction`. Args, Shape and parameters:
    as :class:`torch.nn.Conv1d`.

    Example::

        >>> m = torch_bp.nn.Conv1d(4, 8, 3, padding="same", padding_mode="reflect")
        >>> m(torch.randn(2, 4, 10)).shape
        torch.Size([2, 8, 10])
    """

    _nd = 1


class Conv2d(_ConvForward, torch.nn.Conv2d):
    r"""Drop-in :class:`torch.nn.Conv2d` (all four ``padding_mode``\ s, ``padding='same'``/``'valid'``).

    Its backward is :class:`torch_bp.ops.conv.ConvFunction`. Args, Shape and parameters:
    as :class:`torch.nn.Conv2d`.

    Example::

        >>> m = torch_bp.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        >>> m(torch.randn(8, 3, 32, 32)).shape
        torch.Size([8, 16, 16, 16])
    """

    _nd = 2


class Conv3d(_ConvForward, torch.nn.Conv3d):
    r"""Drop-in :class:`torch.nn.Conv3d` (all four ``padding_mode``\ s, ``padding='same'``/``'valid'``).

    Its backward is :class:`torch_bp.ops.conv.ConvFunction`. Args, Shape and parameters:
    as :class:`torch.nn.Conv3d`.

    Example::

        >>> torch_bp.nn.Conv3d(2, 4, 3, padding=1)(torch.randn(1, 2, 5, 6, 7)).shape
        torch.Size([1, 4, 5, 6, 7])
    """

    _nd = 3


class _ConvTransposeForward:
    """``forward`` of ConvTranspose1d/2d/3d: ``output_size`` picks the output padding, as torch."""

    _nd = 0

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {type(self).__name__}")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              self._nd, self.dilation)
        return F._conv_transposend(self._nd, f"conv_transpose{self._nd}d", input, self.weight, self.bias,
                                   self.stride, self.padding, output_padding, self.groups, self.dilation)


class ConvTranspose1d(_ConvTransposeForward, torch.nn.ConvTranspose1d):
    r"""Drop-in :class:`torch.nn.ConvTranspose1d`; backward: :class:`torch_bp.ops.conv.ConvTransposeFunction`."""

    _nd = 1


class ConvTranspose2d(_ConvTransposeForward, torch.nn.ConvTranspose2d):
    r"""Drop-in :class:`torch.nn.ConvTranspose2d` (``output_size`` in forward picks the output padding).

    Its backward is :class:`torch_bp.ops.conv.ConvTransposeFunction`. As in torch, only
    ``padding_mode='zeros'`` is supported.

    Example::

        >>> m = torch_bp.nn.ConvTranspose2d(16, 3, 3, stride=2, padding=1)
        >>> m(torch.randn(8, 16, 16, 16), output_size=[32, 32]).shape
        torch.Size([8, 3, 32, 32])
    """

    _nd = 2


class ConvTranspose3d(_ConvTransposeForward, torch.nn.ConvTranspose3d):
    r"""Drop-in :class:`torch.nn.ConvTranspose3d`; backward: :class:`torch_bp.ops.conv.ConvTransposeFunction`."""

    _nd = 3
