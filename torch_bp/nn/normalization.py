"""Normalization modules: torch.nn's classes with forward routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F


class LayerNorm(torch.nn.LayerNorm):
    """Drop-in :class:`torch.nn.LayerNorm` (same ``weight``/``bias`` names and shapes)."""

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(torch.nn.RMSNorm):
    """Drop-in :class:`torch.nn.RMSNorm`."""

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)


# ====================================================================================
# --- BatchNorm / GroupNorm --- (conv/pooling/batch-norm family)
# ====================================================================================
class _BatchNormForward:
    """torch's ``_BatchNorm.forward`` with the normalization routed through torch_bp.

    The bookkeeping is torch's, line for line: ``num_batches_tracked`` counts training
    steps; ``momentum=None`` means a cumulative average (factor 1 / num_batches_tracked);
    eval mode uses the running statistics unless there are none
    (``track_running_stats=False``), and training never touches untracked statistics.
    """

    def forward(self, input):
        return self._normalize(input, F.batch_norm)

    def _normalize(self, input, batch_norm):
        """The forward with ``batch_norm`` (ours, or the fused ``batch_norm_relu`` of convert's fusion pass)."""
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if track else None, self.running_var if track else None,
                          self.weight, self.bias, use_batch_stats, factor, self.eps)


class BatchNorm1d(_BatchNormForward, torch.nn.BatchNorm1d):
    """Drop-in :class:`torch.nn.BatchNorm1d`: input (N, C) or (N, C, L); same buffers
    (``running_mean``, ``running_var``, ``num_batches_tracked``), updated as torch does.
    Backward: :class:`torch_bp.ops.normalization.BatchNormFunction`."""


class BatchNorm2d(_BatchNormForward, torch.nn.BatchNorm2d):
    """Drop-in :class:`torch.nn.BatchNorm2d`: input (N, C, H, W); buffers as torch's.

    Example::

        >>> m = torch_bp.nn.BatchNorm2d(16, momentum=None)   # cumulative running average
        >>> m(torch.randn(8, 16, 5, 5)).shape
        torch.Size([8, 16, 5, 5])
    """


class BatchNorm3d(_BatchNormForward, torch.nn.BatchNorm3d):
    """Drop-in :class:`torch.nn.BatchNorm3d`: input (N, C, D, H, W); buffers as torch's."""


class GroupNorm(torch.nn.GroupNorm):
    """Drop-in :class:`torch.nn.GroupNorm`. Backward: :class:`torch_bp.ops.normalization.GroupNormFunction`."""

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


# --- InstanceNorm1d / InstanceNorm2d / InstanceNorm3d ---
class _InstanceNormForward:
    """torch's ``_InstanceNorm.forward`` (unbatched input, the running statistics' use) with the
    normalization routed through :func:`torch_bp.functional.instance_norm`."""

    def _apply_instance_norm(self, input):
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                               self.training or not self.track_running_stats, self.momentum if self.momentum is not None
                               else 0.0, self.eps)


class InstanceNorm1d(_InstanceNormForward, torch.nn.InstanceNorm1d):
    """Drop-in :class:`torch.nn.InstanceNorm1d`. Backward: the group norm rule, one group per channel."""


class InstanceNorm2d(_InstanceNormForward, torch.nn.InstanceNorm2d):
    """Drop-in :class:`torch.nn.InstanceNorm2d`. Backward: the group norm rule, one group per channel."""


class InstanceNorm3d(_InstanceNormForward, torch.nn.InstanceNorm3d):
    """Drop-in :class:`torch.nn.InstanceNorm3d`. Backward: the group norm rule, one group per channel."""


# --- LocalResponseNorm ---
class LocalResponseNorm(torch.nn.LocalResponseNorm):
    """Drop-in :class:`torch.nn.LocalResponseNorm` (backward: ``LocalResponseNormFunction``)."""

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

