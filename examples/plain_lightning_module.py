"""An existing LightningModule gains torch_bp's callbacks, with nothing converted.

``DigitsCNN`` below is ordinary Lightning code: torch.nn layers, its own ``training_step``.
Adding two callbacks to the Trainer is all it takes:

- ``GradientMonitor``: gradient norms, update ratios, and the error signal reaching every
  layer (here from hooks on the layers' outputs, since no layer is torch_bp's), with a
  gradient-flow figure and warnings when the signal vanishes or explodes;
- ``GradientCheck``: re-runs ``training_step`` on a few examples with the model converted
  to torch_bp and with plain torch, and logs how far the gradients are apart: whether
  ``torch_bp.convert`` would train this model the same.

The scalars go to TensorBoard and to a CSV file (figures and histograms to TensorBoard only:
CSV has no call for them, and one warning says so).

    .venv/bin/python examples/plain_lightning_module.py          # 3 epochs on the digits, ~20 s
    .venv/bin/python examples/plain_lightning_module.py --tiny   # a few steps (what CI runs)
"""
from __future__ import annotations

import argparse

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn

from torch_bp.lightning import DigitsDataModule, GradientCheck, GradientMonitor


class DigitsCNN(L.LightningModule):
    """A plain LightningModule (nothing here knows about torch_bp)."""

    def __init__(self, lr: float = 2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a few steps (CI)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="runs/examples")
    a = p.parse_args(argv)
    L.seed_everything(0, verbose=False)
    monitor = GradientMonitor(every_n_steps=2 if a.tiny else 10)
    check = GradientCheck(every_n_steps=2 if a.tiny else 50)
    trainer = L.Trainer(max_epochs=1 if a.tiny else a.epochs, limit_train_batches=4 if a.tiny else 1.0,
                        limit_val_batches=1 if a.tiny else 1.0, accelerator="cpu", devices=1,
                        logger=[TensorBoardLogger(a.out, name="plain_module", default_hp_metric=False),
                                CSVLogger(a.out, name="plain_module_csv")],
                        callbacks=[monitor, check], log_every_n_steps=5, enable_checkpointing=False,
                        enable_progress_bar=not a.tiny, enable_model_summary=False)
    model = DigitsCNN()
    trainer.fit(model, DigitsDataModule(batch_size=64))
    worst = max((max(d.values()) for _, d in check.history), default=float("nan"))
    print(f"val/acc {float(trainer.callback_metrics['val/acc']):.1%}; error signals of "
          f"{sum(k.startswith('error_signal_norm/') for k in monitor.last_metrics)} layers; "
          f"torch_bp vs torch gradients: max relative difference {worst:.1e}")
    return {"monitor": monitor.last_metrics, "gradcheck": check.history,
            "log_dirs": [lg.log_dir for lg in trainer.loggers]}


if __name__ == "__main__":
    main()
