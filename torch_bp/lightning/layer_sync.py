"""Lightning's ``sync_batchnorm=True`` with torch_bp's SyncBatchNorm.

Lightning's default LayerSync plugin (``TorchSyncBatchNorm``) calls ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``,
which replaces every BatchNorm (ours included: they subclass torch's) by torch's SyncBatchNorm, whose backward is
torch's and which refuses CPU tensors. :class:`SyncBatchNormPlugin` converts to :class:`torch_bp.nn.SyncBatchNorm`
instead (our rule, any backend) and reverts to the classes the layers had::

    trainer = Trainer(strategy="ddp", sync_batchnorm=True, plugins=[torch_bp.lightning.SyncBatchNormPlugin()])

It subclasses ``TorchSyncBatchNorm``, so ``sync_batchnorm=True`` accepts it in place of the default.
"""
from __future__ import annotations

from lightning.pytorch.plugins import TorchSyncBatchNorm

from .. import nn


class SyncBatchNormPlugin(TorchSyncBatchNorm):
    """Lightning's LayerSync for torch_bp: BatchNorms become :class:`torch_bp.nn.SyncBatchNorm` during fitting."""

    def apply(self, model):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def revert(self, model):
        return nn.SyncBatchNorm.revert_sync_batchnorm(model)
