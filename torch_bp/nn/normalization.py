"""Normalization modules: torch.nn's classes with forward routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F
from ..functional.normalization import sync_group


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



# --- SyncBatchNorm ---
class SyncBatchNorm(torch.nn.SyncBatchNorm):
    """Drop-in :class:`torch.nn.SyncBatchNorm` (same constructor, parameters, buffers and ``process_group``).

    Training with an initialised process group of more than one process: the batch statistics of the whole
    group (:class:`torch_bp.ops.normalization.SyncBatchNormFunction`, torch.distributed's all_reduce: any backend,
    CPU tensors with gloo, which torch's SyncBatchNorm refuses). Otherwise, as torch's module: batch_norm's rule
    (eval mode, no process group, a world of one).

    :meth:`convert_sync_batchnorm` turns every BatchNorm of a model into this class (torch's classmethod makes
    torch's SyncBatchNorm); :meth:`revert_sync_batchnorm` turns them back into the classes they came from.
    For Lightning's ``Trainer(sync_batchnorm=True)``: :class:`torch_bp.lightning.SyncBatchNormPlugin`.
    """

    def forward(self, input):
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        running_mean, running_var = (self.running_mean, self.running_var) if track else (None, None)
        group = sync_group(self.process_group) if bn_training and self.training else None
        if group is None:  # as torch's module: nothing to synchronise, batch_norm
            return F.batch_norm(input, running_mean, running_var, self.weight, self.bias, bn_training, factor,
                                self.eps)
        return F.sync_batch_norm(input, running_mean, running_var, self.weight, self.bias, True, factor, self.eps,
                                 group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """torch's ``convert_sync_batchnorm``, building this class: every ``_BatchNorm`` (torch's or ours) of
        ``module`` becomes a torch_bp SyncBatchNorm sharing its parameters and buffers; the class it came from is
        kept for :meth:`revert_sync_batchnorm`. Returns the converted module (a new one for a BatchNorm itself)."""
        out = module
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group, bias=module.bias is not None,
                      device=next(iter(module.buffers()), torch.empty(0)).device)
            if module.affine:
                with torch.no_grad():
                    out.weight, out.bias = module.weight, module.bias
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.torch_bp_reverts_to = type(module)
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out

    @classmethod
    def revert_sync_batchnorm(cls, module):
        """The inverse of :meth:`convert_sync_batchnorm`: each SyncBatchNorm (ours or torch's) becomes the class it
        was converted from (torch_bp's BatchNorm1d/2d/3d for one of unknown origin: its
        ``torch_bp_reverts_to``, else by nothing: torch's SyncBatchNorm takes any rank, so :class:`BatchNormXd`),
        sharing parameters and buffers."""
        out = module
        if isinstance(module, torch.nn.SyncBatchNorm):
            target = getattr(module, "torch_bp_reverts_to", BatchNormXd)
            out = target(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                         device=next(iter(module.buffers()), torch.empty(0)).device)
            if module.bias is None and module.affine:
                out.bias = None
            if module.affine:
                with torch.no_grad():
                    out.weight, out.bias = module.weight, module.bias
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.revert_sync_batchnorm(child))
        return out


class BatchNormXd(_BatchNormForward, torch.nn.modules.batchnorm._BatchNorm):
    """A torch_bp BatchNorm of any input rank >= 2 (what a SyncBatchNorm of unknown origin reverts to, as
    Lightning's ``_BatchNormXd``)."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")
