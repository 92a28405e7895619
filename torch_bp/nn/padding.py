"""Padding modules: torch.nn's classes with forward routed through torch_bp.functional.pad.

Their backward is :class:`torch_bp.ops.padding.PadFunction` (a crop for constant padding, a
scatter-add of the copies back to their sources for reflect, replicate and circular).
"""
from __future__ import annotations

import torch

from .. import functional as F


class _PadForward:
    """``forward`` of every padding module: ``F.pad`` in the class's mode (``value`` for constant)."""

    _mode = "constant"

    def forward(self, input):
        if self._mode == "circular":
            self._check_input_dim(input)  # as torch's CircularPad
        return F.pad(input, self.padding, self._mode, self.value if self._mode == "constant" else None)


class ConstantPad1d(_PadForward, torch.nn.ConstantPad1d):
    """Drop-in :class:`torch.nn.ConstantPad1d`."""


class ConstantPad2d(_PadForward, torch.nn.ConstantPad2d):
    """Drop-in :class:`torch.nn.ConstantPad2d`."""


class ConstantPad3d(_PadForward, torch.nn.ConstantPad3d):
    """Drop-in :class:`torch.nn.ConstantPad3d`."""


class ZeroPad1d(_PadForward, torch.nn.ZeroPad1d):
    """Drop-in :class:`torch.nn.ZeroPad1d`."""


class ZeroPad2d(_PadForward, torch.nn.ZeroPad2d):
    """Drop-in :class:`torch.nn.ZeroPad2d`.

    Example::

        >>> torch_bp.nn.ZeroPad2d((1, 2, 0, 1))(torch.randn(1, 3, 4, 4)).shape
        torch.Size([1, 3, 5, 7])
    """


class ZeroPad3d(_PadForward, torch.nn.ZeroPad3d):
    """Drop-in :class:`torch.nn.ZeroPad3d`."""


class ReflectionPad1d(_PadForward, torch.nn.ReflectionPad1d):
    """Drop-in :class:`torch.nn.ReflectionPad1d`."""

    _mode = "reflect"


class ReflectionPad2d(_PadForward, torch.nn.ReflectionPad2d):
    """Drop-in :class:`torch.nn.ReflectionPad2d`."""

    _mode = "reflect"


class ReflectionPad3d(_PadForward, torch.nn.ReflectionPad3d):
    """Drop-in :class:`torch.nn.ReflectionPad3d`."""

    _mode = "reflect"


class ReplicationPad1d(_PadForward, torch.nn.ReplicationPad1d):
    """Drop-in :class:`torch.nn.ReplicationPad1d`."""

    _mode = "replicate"


class ReplicationPad2d(_PadForward, torch.nn.ReplicationPad2d):
    """Drop-in :class:`torch.nn.ReplicationPad2d`."""

    _mode = "replicate"


class ReplicationPad3d(_PadForward, torch.nn.ReplicationPad3d):
    """Drop-in :class:`torch.nn.ReplicationPad3d`."""

    _mode = "replicate"


class CircularPad1d(_PadForward, torch.nn.CircularPad1d):
    """Drop-in :class:`torch.nn.CircularPad1d`."""

    _mode = "circular"


class CircularPad2d(_PadForward, torch.nn.CircularPad2d):
    """Drop-in :class:`torch.nn.CircularPad2d`."""

    _mode = "circular"


class CircularPad3d(_PadForward, torch.nn.CircularPad3d):
    """Drop-in :class:`torch.nn.CircularPad3d`."""

    _mode = "circular"


PADDING_MODULES = (ConstantPad1d, ConstantPad2d, ConstantPad3d, ZeroPad1d, ZeroPad2d, ZeroPad3d,
                   ReflectionPad1d, ReflectionPad2d, ReflectionPad3d, ReplicationPad1d, ReplicationPad2d,
                   ReplicationPad3d, CircularPad1d, CircularPad2d, CircularPad3d)
