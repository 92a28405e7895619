"""Drop-in twins of ``torch.nn`` modules (subclasses: same constructors, parameters, state_dicts)."""
import torch as _torch

# --- linear ---
from .linear import Linear

# --- activations, softmax, dropout ---
from .activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .dropout import Dropout
# (more activations and dropout variants: below this line)
from .activation import (CELU, GLU, SELU, Hardshrink, Hardsigmoid, Hardswish, Hardtanh, LogSigmoid, Mish, PReLU,
                         ReLU6, RReLU, Softmax2d, Softmin, Softshrink, Softsign, Tanhshrink, Threshold)
from .dropout import AlphaDropout, Dropout1d, Dropout2d, Dropout3d, FeatureAlphaDropout

# --- embedding ---
from .sparse import Embedding

# --- losses ---
from .loss import (BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, LinearCrossEntropy, MSELoss, NLLLoss,
                   SmoothL1Loss)
# (more losses: below this line)
from .loss import (BCELoss, GaussianNLLLoss, HingeEmbeddingLoss, KLDivLoss, MarginRankingLoss, MultiLabelSoftMarginLoss,
                   PoissonNLLLoss, SoftMarginLoss)
from .loss import LinearCrossEntropyLoss
from .loss import AdaptiveLogSoftmaxWithLoss, CTCLoss
from .loss import (CosineEmbeddingLoss, MultiLabelMarginLoss, MultiMarginLoss, TripletMarginLoss,
                   TripletMarginWithDistanceLoss)

# --- normalization ---
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RMSNorm
# (more normalization layers: below this line)
from .normalization import BatchNorm3d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LocalResponseNorm
from .normalization import BatchNormXd, SyncBatchNorm

# --- convolution, pooling ---
from .conv import Conv1d, Conv2d, ConvTranspose2d
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
# (more convolution, pooling, resampling, padding layers: below this line)
from .conv import Conv3d, ConvTranspose1d, ConvTranspose3d
from .padding import (PADDING_MODULES, CircularPad1d, CircularPad2d, CircularPad3d, ConstantPad1d, ConstantPad2d,
                      ConstantPad3d, ReflectionPad1d, ReflectionPad2d, ReflectionPad3d, ReplicationPad1d,
                      ReplicationPad2d, ReplicationPad3d, ZeroPad1d, ZeroPad2d, ZeroPad3d)
from .resample import (ChannelShuffle, Fold, PixelShuffle, PixelUnshuffle, Unfold, Upsample, UpsamplingBilinear2d,
                       UpsamplingNearest2d)
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool3d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d,
                      AvgPool1d, AvgPool3d, FractionalMaxPool2d, FractionalMaxPool3d, LPPool1d, LPPool2d, LPPool3d,
                      MaxPool1d, MaxPool3d, MaxUnpool1d, MaxUnpool2d, MaxUnpool3d)

# --- attention, recurrent, transformer ---
from .attention import MultiheadAttention
from .rnn import GRU, LSTM, RNN
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)
# (recurrent cells and other layers: below this line)
from .rnn import GRUCell, LSTMCell, RNNCell
from .sparse import EmbeddingBag
from .linear import Bilinear
from .distance import CosineSimilarity, PairwiseDistance

__all__ = sorted(n for n, v in list(globals().items())
                 if not n.startswith("_") and isinstance(v, type) and issubclass(v, _torch.nn.Module))
