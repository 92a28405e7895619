"""Differentially private training (DP-SGD) with the DPSGD callback, epsilon from Opacus's accountant.

The model is converted to torch_bp so that each layer computes per-example gradients inside
its own backward rule; ``DPSGD`` clips each example's gradient to ``--max-grad-norm``, adds
Gaussian noise (``--sigma`` times that) and steps Opacus's RDP accountant after every step.
At the end of every epoch it logs ``bp/dp/epsilon`` (for ``--delta``). The script then steps
a fresh ``opacus.accountants.RDPAccountant`` with the same noise, sampling rate and number
of steps and prints both epsilons.

    .venv/bin/python examples/dp_training.py                 # 5 epochs on the digits, ~30 s
    .venv/bin/python examples/dp_training.py --ghost         # ghost clipping: no per-example gradients stored
    .venv/bin/python examples/dp_training.py --tiny          # a few steps (what CI runs)

Needs ``pip install opacus`` (in the project's dev extra).
"""
from __future__ import annotations

import argparse

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import CSVLogger
from opacus.accountants import RDPAccountant
from torch import nn

import torch_bp
from torch_bp.lightning import DPSGD, DigitsDataModule


class DigitsMLP(L.LightningModule):
    def __init__(self, lr: float = 0.5, ghost: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch_bp.convert(nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        # ghost clipping needs each example's loss; per-example clipping takes the usual mean
        loss = nn.functional.cross_entropy(self.net(x), y, reduction="none" if self.hparams.ghost else "mean")
        self.log("train/loss", loss.mean())
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a few steps (CI)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--sigma", type=float, default=1.0, help="noise multiplier")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--ghost", action="store_true", help="ghost clipping")
    p.add_argument("--out", default="runs/examples")
    a = p.parse_args(argv)
    L.seed_everything(0, verbose=False)
    data = DigitsDataModule(batch_size=64, flatten=True)
    dp = DPSGD(max_grad_norm=a.max_grad_norm, noise_multiplier=a.sigma, delta=a.delta,
               mode="ghost" if a.ghost else "grads")
    trainer = L.Trainer(max_epochs=1 if a.tiny else a.epochs, limit_train_batches=3 if a.tiny else 1.0,
                        accelerator="cpu", devices=1, logger=CSVLogger(a.out, name="dp_training"), callbacks=[dp],
                        log_every_n_steps=5, enable_checkpointing=False, enable_progress_bar=not a.tiny,
                        enable_model_summary=False)
    trainer.fit(DigitsMLP(ghost=a.ghost), data)

    q = data.batch_size / len(data.train_set)           # the sampling rate DPSGD used
    theirs = RDPAccountant()
    for _ in range(trainer.global_step):
        theirs.step(noise_multiplier=a.sigma, sample_rate=q)
    eps_opacus = theirs.get_epsilon(a.delta)
    print(f"val/acc {float(trainer.callback_metrics['val/acc']):.1%} after {trainer.global_step} steps; "
          f"(epsilon, delta) = ({dp.epsilon:.3f}, {a.delta:g}); Opacus's RDPAccountant: {eps_opacus:.3f}")
    return {"epsilon": dp.epsilon, "epsilon_opacus": eps_opacus, "steps": trainer.global_step, "sample_rate": q,
            "log_dir": trainer.logger.log_dir}


if __name__ == "__main__":
    main()
