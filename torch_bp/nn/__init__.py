"""Drop-in twins of ``torch.nn`` modules (subclasses: same constructors, parameters, state_dicts)."""
from .activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus, Tanh
from .linear import Linear
from .normalization import LayerNorm, RMSNorm

__all__ = [
    "Linear",
    "ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Softplus", "Tanh", "Sigmoid",
    "LayerNorm", "RMSNorm",
]
