"""A short plain-PyTorch training of a torch_bp MLP on scikit-learn's bundled digits.

``python -m torch_bp.demo`` (needs scikit-learn and tensorboard: ``pip install torch_bp[lightning]``).
"""
from __future__ import annotations

import torch

import torch_bp


def main(epochs: int = 30, logdir: str = "runs/demo") -> float:
    from sklearn.datasets import load_digits
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    perm = torch.randperm(len(x))
    tr, va = perm[:1500], perm[1500:]
    model = torch_bp.convert(torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.LayerNorm(128), torch.nn.Linear(128, 10)))
    print(torch_bp.conversion_report(model))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    writer = SummaryWriter(logdir)
    for epoch in range(epochs):
        for idx in tr[torch.randperm(len(tr))].split(64):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (model(x[va]).argmax(1) == y[va]).float().mean().item()
        writer.add_scalar("val/acc", acc, epoch)
        writer.add_scalar("train/loss", loss.item(), epoch)
    writer.close()
    print(f"validation accuracy {acc:.3f}; TensorBoard logs in {logdir}: tensorboard --logdir {logdir}")
    return acc


if __name__ == "__main__":
    main()
