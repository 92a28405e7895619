"""Drop-in twins of ``torch.nn`` modules (subclasses: same constructors, parameters, state_dicts)."""
from .activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus, Tanh
from .linear import Linear
from .loss import (BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, LinearCrossEntropy, MSELoss, NLLLoss,
                   SmoothL1Loss)
from .sparse import Embedding
from .dropout import Dropout
from .activation import LogSoftmax, Softmax
from .normalization import LayerNorm, RMSNorm
# conv/pooling/batch-norm family
from .conv import Conv1d, Conv2d, ConvTranspose2d
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

# attention / recurrent family
from .attention import MultiheadAttention
from .rnn import GRU, LSTM, RNN
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)
__all__ = [
    "MultiheadAttention", "RNN", "LSTM", "GRU", "Transformer", "TransformerEncoder", "TransformerDecoder",
    "TransformerEncoderLayer", "TransformerDecoderLayer",
    "Conv1d", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "BatchNorm1d", "BatchNorm2d", "GroupNorm",
    "Linear",
    "ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Softplus", "Tanh", "Sigmoid",
    "LayerNorm", "RMSNorm",
    "Softmax", "LogSoftmax", "Dropout", "Embedding",
    "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss",
    "LinearCrossEntropy",
]
