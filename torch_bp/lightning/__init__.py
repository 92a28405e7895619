"""Train torch_bp models with Lightning and watch backpropagation in TensorBoard.

Imported only by those who use it (``import torch_bp`` never imports Lightning):

- :class:`BPModule`: a LightningModule for any network of torch_bp layers (or a torch.nn one,
  converted on the fly), with configurable loss, optimizer and scheduler;
- data modules needing no download: :class:`DigitsDataModule` (default) and the 1986
  paper's tasks (:class:`SymmetryDataModule`, :class:`FamilyTreesDataModule`,
  :class:`XORDataModule`, :class:`ParityDataModule`);
- callbacks: :class:`GradientMonitor` (gradients and the error signals captured inside our
  backward rules), :class:`GradientCheck` (our gradients against torch autograd's, online) and
  :class:`ResumableCheckpoint` (keeps ``last.ckpt`` where ``--ckpt_path last`` finds it);
- the ``torch-bp`` command (:mod:`torch_bp.lightning.cli`).
"""
from .checkpoint import ResumableCheckpoint
from .data import (DigitsDataModule, EpochShuffleSampler, FamilyTreesDataModule, ParityDataModule,
                   ResumableDataLoader, SymmetryDataModule, TensorDataModule, XORDataModule)
from .models import MLP, FamilyTreeNet, SmallCNN, default_net, default_net_class
from .module import BPModule
from .monitor import GradientCheck, GradientCheckWarning, GradientFlowWarning, GradientMonitor

__all__ = [
    "BPModule",
    "TensorDataModule", "DigitsDataModule", "SymmetryDataModule", "FamilyTreesDataModule", "XORDataModule",
    "ParityDataModule", "EpochShuffleSampler", "ResumableDataLoader",
    "MLP", "SmallCNN", "FamilyTreeNet", "default_net", "default_net_class",
    "GradientMonitor", "GradientCheck", "GradientFlowWarning", "GradientCheckWarning", "ResumableCheckpoint",
]
