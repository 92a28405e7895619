"""The CLI's default checkpoint callback: one that ``--ckpt_path last`` finds again.

Lightning's default ``ModelCheckpoint`` writes into the logger's ``version_N/checkpoints``, a new
directory per run, and keeps no ``last.ckpt``; ``torch-bp fit --ckpt_path last`` then finds
nothing and starts over. :class:`ResumableCheckpoint` keeps ``last.ckpt`` (and Lightning's usual
most recent checkpoint) in ``<save_dir>/<name>/checkpoints`` of the run's logger: the same
directory for every run of the same experiment name, so running the same command again with
``--ckpt_path last`` goes on from where the previous run stopped.
"""
from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(save_last=True)`` whose default ``dirpath`` does not depend on the run's
    version (see the module docstring). Every ModelCheckpoint argument is accepted unchanged."""

    def __init__(self, *args, save_last=True, **kwargs):
        super().__init__(*args, save_last=save_last, **kwargs)

    def _set_default_dir(self, trainer) -> None:
        if self.dirpath is not None:
            return
        logger = trainer.logger
        if logger is not None and logger.save_dir is not None:
            self.dirpath = os.path.join(logger.save_dir, str(logger.name), "checkpoints")
        else:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")

    def _find_last_checkpoints(self, trainer):  # called for ckpt_path="last", before setup
        self._set_default_dir(trainer)
        return super()._find_last_checkpoints(trainer)

    def setup(self, trainer, pl_module, stage):
        self._set_default_dir(trainer)
        super().setup(trainer, pl_module, stage)
