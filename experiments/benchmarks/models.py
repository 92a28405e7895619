"""The benchmark models, written with plain torch.nn and converted with torch_bp.convert."""
from __future__ import annotations

import torch
from torch import nn


def mlp():
    layers = [nn.Linear(512, 1024), nn.GELU()]
    for _ in range(3):
        layers += [nn.Linear(1024, 1024), nn.GELU()]
    layers.append(nn.Linear(1024, 10))
    return nn.Sequential(*layers), (torch.randn(256, 512),)


def cnn():
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]
    model = nn.Sequential(*block(3, 32), *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 10))
    return model, (torch.randn(32, 3, 32, 32),)


def transformer_block():
    """Pre-LN encoder block: d=256, 4 heads, T=128, batch 8, GELU MLP, dropout 0.1."""
    layer = nn.TransformerEncoderLayer(256, 4, dim_feedforward=1024, dropout=0.1, activation="gelu",
                                       batch_first=True, norm_first=True)
    return layer, (torch.randn(8, 128, 256),)


class _LSTMHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(128, 256, num_layers=2, batch_first=True)
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def lstm(batch=32, steps=64):
    return _LSTMHead(), (torch.randn(batch, steps, 128),)


MODELS = {"mlp_gelu": mlp, "cnn_stack": cnn, "transformer_block": transformer_block, "lstm_2layer": lstm}
