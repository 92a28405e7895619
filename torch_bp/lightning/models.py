"""Ready networks made of torch_bp layers, for the CLI and the built-in tasks.

Every layer with a backward rule is a torch_bp module (so the gradient monitor sees each
one's error signal); only shape plumbing (``Flatten``) is torch's.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

import torch_bp.nn as bnn

_ACTIVATIONS = {
    "relu": bnn.ReLU, "leaky_relu": bnn.LeakyReLU, "elu": bnn.ELU, "gelu": bnn.GELU,
    "silu": bnn.SiLU, "softplus": bnn.Softplus, "tanh": bnn.Tanh, "sigmoid": bnn.Sigmoid,
}


def make_activation(name: str) -> torch.nn.Module:
    """A torch_bp activation module by its functional name (``"relu"``, ``"sigmoid"``, ...)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _uniform_init(module: torch.nn.Module, init_range: Optional[float]) -> None:
    if init_range is not None:
        for p in module.parameters():
            torch.nn.init.uniform_(p, -init_range, init_range)


class MLP(torch.nn.Sequential):
    r"""Fully connected net of torch_bp layers: ``Linear -> act`` per hidden layer, then ``Linear``.

    Args:
        in_features: inputs per example (inputs of more dims are flattened first).
        hidden: width of each hidden layer (``[]`` for no hidden layer).
        out_features: outputs (classes, or units for the paper's tasks).
        activation: hidden activation (a torch_bp activation name).
        output_activation: optional activation on the outputs (``"sigmoid"`` for the
            paper's logistic output units trained with squared error).
        init_range: if given, every weight and bias is drawn uniformly from
            ``[-init_range, init_range]`` (the 1986 paper's ``0.3``); else torch's default.

    Shape: ``(N, *)`` with ``in_features`` elements per example -> ``(N, out_features)``.

    Example::

        >>> net = MLP(6, [2], 1, activation="sigmoid", output_activation="sigmoid", init_range=0.3)
        >>> net(torch.rand(64, 6)).shape
        torch.Size([64, 1])
    """

    def __init__(self, in_features: int = 64, hidden: Sequence[int] = (128,), out_features: int = 10,
                 activation: str = "gelu", output_activation: Optional[str] = None,
                 init_range: Optional[float] = None):
        layers: list[torch.nn.Module] = [torch.nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [bnn.Linear(width, h), make_activation(activation)]
            width = h
        layers.append(bnn.Linear(width, out_features))
        if output_activation is not None:
            layers.append(make_activation(output_activation))
        super().__init__(*layers)
        _uniform_init(self, init_range)


class SmallCNN(torch.nn.Sequential):
    r"""A small convolutional net of torch_bp layers for 8x8 digits (needs ``torch_bp.nn.Conv2d``).

    ``Conv(3x3) -> act -> Conv(3x3, stride 2) -> act -> Linear``: two convolutions and a
    linear read-out, about 15k parameters.

    Args:
        in_channels, num_classes: image channels and classes.
        channels: output channels of the two convolutions.
        image_size: side of the square input image.
        activation: a torch_bp activation name.

    Shape: ``(N, in_channels, image_size, image_size)`` -> ``(N, num_classes)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: Sequence[int] = (16, 32),
                 image_size: int = 8, activation: str = "relu"):
        if not hasattr(bnn, "Conv2d"):
            raise RuntimeError("SmallCNN needs torch_bp.nn.Conv2d, which this torch_bp does not have; use MLP")
        c1, c2 = channels
        side = math.ceil(image_size / 2)
        super().__init__(
            bnn.Conv2d(in_channels, c1, 3, padding=1), make_activation(activation),
            bnn.Conv2d(c1, c2, 3, stride=2, padding=1), make_activation(activation),
            torch.nn.Flatten(), bnn.Linear(c2 * side * side, num_classes),
        )


class FamilyTreeNet(torch.nn.Module):
    r"""The 1986 paper's five-layer family-tree net (Nature Fig. 3), logistic units.

    Person 1 (24 one-hot) -> 6 units and relation (12 one-hot) -> 6 units, each group with
    its own weights; both feed a central layer of 12, then 6, then 24 output units (one per
    person 2). The input is the two one-hot codes concatenated, ``(N, 24 + 12)``.

    Args:
        people, relations: sizes of the two one-hot codes.
        encoding, central, penultimate: layer widths (6, 12, 6 in the paper).
        activation: unit non-linearity (the paper's logistic ``"sigmoid"``).
        init_range: uniform init range for all weights and biases (``None``: torch's default).
    """

    def __init__(self, people: int = 24, relations: int = 12, encoding: int = 6, central: int = 12,
                 penultimate: int = 6, activation: str = "sigmoid", init_range: Optional[float] = 0.3):
        super().__init__()
        self.people = people
        self.person_encoder = torch.nn.Sequential(bnn.Linear(people, encoding), make_activation(activation))
        self.relation_encoder = torch.nn.Sequential(bnn.Linear(relations, encoding), make_activation(activation))
        self.central = torch.nn.Sequential(bnn.Linear(2 * encoding, central), make_activation(activation))
        self.penultimate = torch.nn.Sequential(bnn.Linear(central, penultimate), make_activation(activation))
        self.output = torch.nn.Sequential(bnn.Linear(penultimate, people), make_activation(activation))
        _uniform_init(self, init_range)

    def forward(self, x):
        person, relation = x[:, :self.people], x[:, self.people:]
        h = torch.cat([self.person_encoder(person), self.relation_encoder(relation)], dim=1)
        return self.output(self.penultimate(self.central(h)))


def default_net_class() -> type:
    """The CLI's default digits model: :class:`SmallCNN` if torch_bp has Conv2d, else :class:`MLP`."""
    return SmallCNN if hasattr(bnn, "Conv2d") else MLP


def default_net() -> torch.nn.Module:
    """An instance of :func:`default_net_class` with its default arguments (digits)."""
    return default_net_class()()
