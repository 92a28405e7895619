"""The ``torch-bp`` command: LightningCLI over :class:`BPModule` and the built-in data.

``torch-bp fit`` with no arguments trains the default torch_bp network (a small CNN when
torch_bp has Conv2d, else an MLP) on scikit-learn's digits, with the GradientMonitor and
GradientCheck callbacks logging to TensorBoard under ``runs/``, then logs the hyperparameters
with the final metrics (TensorBoard's HPARAMS tab, ``hparams.yaml``) and prints the validation
accuracy and the ``tensorboard --logdir`` command (the command's own output: printed).
Everything is a LightningCLI option::

    torch-bp fit --print_config                        # the full default configuration
    torch-bp fit --config experiments/configs/symmetry.yaml
    torch-bp fit --trainer.max_epochs 5 --model.optimizer SGD --model.optimizer.lr 0.1
    torch-bp fit --ckpt_path last                      # go on from the last run's last.ckpt

It runs on one CPU thread unless told otherwise (``--threads``, see below) and on a GPU when
there is one (``--trainer.accelerator``).
"""
from __future__ import annotations

import os
import warnings

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from .data import DigitsDataModule, TensorDataModule
from .checkpoint import ResumableCheckpoint
from .models import default_net_class
from .module import BPModule
from .monitor import GradientCheck, GradientMonitor
from .sinks import log_hparams, run_hparams

LOG_ROOT = "runs"


def trainer_defaults() -> dict:
    return {
        "max_epochs": 10,
        "log_every_n_steps": 10,
        "logger": lazy_instance(TensorBoardLogger, save_dir=LOG_ROOT, name="digits", default_hp_metric=False),
    }


class TorchBPCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.add_argument("--threads", type=int, default=1,
                            help="torch.set_num_threads for the run; 0: torch's default (all cores). 1, the "
                                 "default, is fastest for the small built-in models, whose ops are too small "
                                 "to split, and keeps a run fast on a machine shared with other jobs")
        parser.set_defaults({
            "model.net": lazy_instance(default_net_class()),
            "data": lazy_instance(DigitsDataModule),
            # parser defaults (not trainer_defaults, which are always appended) so that a
            # config's trainer.callbacks replaces them
            "trainer.callbacks": [{"class_path": f"{c.__module__}.{c.__name__}"}
                                  for c in (GradientMonitor, GradientCheck, ResumableCheckpoint)],
        })

    def before_instantiate_classes(self):
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("threads", 0) > 0:
            torch.set_num_threads(config["threads"])

    def after_fit(self):
        trainer = self.trainer
        acc = trainer.callback_metrics.get("val/acc")
        if acc is None and not trainer.interrupted and trainer.limit_val_batches != 0:
            # the run stopped before a validation pass (e.g. max_steps inside an epoch): do one now
            trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
            acc = trainer.callback_metrics.get("val/acc")
        if not trainer.is_global_zero:
            return
        log_hparams(trainer, run_hparams(trainer, self.model, self.datamodule))
        if acc is not None:
            print(f"\nvalidation accuracy: {float(acc):.1%} (val/acc after {trainer.global_step} steps)")
        logger = trainer.logger
        if isinstance(logger, TensorBoardLogger):
            print(f"TensorBoard logs: {os.path.abspath(logger.log_dir)}")
            print(f"view them with:   tensorboard --logdir {logger.root_dir}")


def build_cli(args=None, run: bool = True) -> TorchBPCLI:
    """The CLI on ``args`` (a list; None: ``sys.argv``), run unless ``run=False``; returns it."""
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")  # in-memory tensors
    return TorchBPCLI(BPModule, TensorDataModule, subclass_mode_data=True, trainer_defaults=trainer_defaults(),
                      seed_everything_default=0, auto_configure_optimizers=False, args=args,
                      save_config_kwargs={"overwrite": True}, run=run)


def main(args=None) -> None:
    """Entry point of the ``torch-bp`` console script (``args``: a list, for in-process use)."""
    build_cli(args)


if __name__ == "__main__":
    main()
