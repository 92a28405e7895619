"""Train torch_bp models with Lightning and watch backpropagation in TensorBoard.

Imported only by those who use it (``import torch_bp`` never imports Lightning):

- :class:`BPModule`: a LightningModule for any network of torch_bp layers (or a torch.nn one,
  converted on the fly), with configurable loss, optimizer and scheduler;
- data modules needing no download: :class:`DigitsDataModule` (default) and the 1986
  paper's tasks (:class:`SymmetryDataModule`, :class:`FamilyTreesDataModule`,
  :class:`XORDataModule`, :class:`ParityDataModule`);
- callbacks, for any LightningModule: :class:`GradientMonitor` (gradients and the error
  signal reaching every layer), :class:`GradientCheck` (torch_bp's gradients against torch
  autograd's, online), :class:`GradientStatistics` (per-layer gradient variance, SNR and noise
  scale from per-example gradient norms), :class:`DPSGD` (differentially private training
  with per-example or ghost clipping, epsilon from Opacus's accountant) and
  :class:`ResumableCheckpoint` (keeps ``last.ckpt`` where ``--ckpt_path last`` finds it);
- :class:`SyncBatchNormPlugin`: ``Trainer(sync_batchnorm=True, plugins=[SyncBatchNormPlugin()])`` keeps
  torch_bp's SyncBatchNorm rule (Lightning's default plugin makes torch's);
- :func:`log_hparams` / :func:`run_hparams`: hyperparameters with the final metrics, for
  every logger (:mod:`torch_bp.lightning.sinks` writes figures, histograms and text through
  each logger's own call);
- the ``torch-bp`` command (:mod:`torch_bp.lightning.cli`).
"""
from .checkpoint import ResumableCheckpoint
from .data import (DigitsDataModule, EpochShuffleSampler, FamilyTreesDataModule, ParityDataModule,
                   ResumableDataLoader, SymmetryDataModule, TensorDataModule, XORDataModule)
from .models import MLP, FamilyTreeNet, SmallCNN, default_net, default_net_class
from .dp import DPSGD
from .grad_stats import GradientStatistics
from .layer_sync import SyncBatchNormPlugin
from .module import BPModule
from .monitor import GradientCheck, GradientCheckWarning, GradientFlowWarning, GradientMonitor
from .sinks import log_hparams, run_hparams

__all__ = [
    "BPModule",
    "TensorDataModule", "DigitsDataModule", "SymmetryDataModule", "FamilyTreesDataModule", "XORDataModule",
    "ParityDataModule", "EpochShuffleSampler", "ResumableDataLoader",
    "MLP", "SmallCNN", "FamilyTreeNet", "default_net", "default_net_class",
    "GradientMonitor", "GradientCheck", "GradientStatistics", "DPSGD", "GradientFlowWarning", "GradientCheckWarning",
    "ResumableCheckpoint", "log_hparams", "run_hparams", "SyncBatchNormPlugin",
]
