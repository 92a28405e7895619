"""Transformer layers running entirely through torch_bp rules, and their converters.

torch.nn's Transformer classes are compositions: MultiheadAttention, Linear, LayerNorm,
Dropout and an activation. The classes here are those same classes with

- every child layer swapped for its torch_bp twin (by the converter's own tables), and the
  activation, which torch stores as a plain function (``F.relu`` for ``"relu"``, ``F.gelu``
  for ``"gelu"``, or whatever callable was passed), swapped for ours of the same name;
- torch's fused inference fast path (``torch._transformer_encoder_layer_fwd`` and the
  nested-tensor path of TransformerEncoder) bypassed: the layer-by-layer path always runs,
  so every op with a rule is ours, in training and in eval alike.

The residual additions between the layers are plain tensor additions (no rule needed).
``torch_bp.convert`` uses the converters declared in ``torch_bp.registry.CONVERTERS``; constructing these
classes directly gives the same (their children are converted in ``__init__``).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as TF
from torch.nn.modules import transformer as _tt

from .. import _compat
from .. import functional as F
from ..convert import convert

log = logging.getLogger("torch_bp")


def _our_activation(act):
    """Our functional twin of a torch activation function (modules are converted as children)."""
    if isinstance(act, torch.nn.Module) or act is None:
        return act
    name = getattr(act, "__name__", None)
    if name and (act is getattr(TF, name, None) or act is getattr(torch, name, None)) and hasattr(F, name):
        return getattr(F, name)
    log.warning("torch_bp: activation %r has no torch_bp rule; it runs as given", act)
    return act


def _torch_activation(act):
    name = getattr(act, "__name__", None)
    if name and act is getattr(F, name, None) and hasattr(TF, name):
        return getattr(TF, name)
    return act


def _adopt(module: torch.nn.Module) -> torch.nn.Module:
    """Convert the children of a freshly built Transformer module in place, and its activation."""
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = convert(child, inplace=True)
    if "activation" in module.__dict__:
        module.activation = _our_activation(module.activation)
    return module


def _fused_activation(act):
    """linear_activation's (activation, approximate) for our relu/gelu/silu (function or module), else None."""
    from .activation import GELU, ReLU, SiLU
    if act is F.relu or act is F.gelu or act is F.silu:
        return act.__name__, "none"
    if type(act) in (ReLU, GELU, SiLU):
        return type(act).__name__.lower(), getattr(act, "approximate", "none")
    return None


class TransformerEncoderLayer(torch.nn.TransformerEncoderLayer):
    """Drop-in :class:`torch.nn.TransformerEncoderLayer` built of torch_bp layers (no fast path).

    Args, Shape, parameters: as :class:`torch.nn.TransformerEncoderLayer`.

    With ``fuse_layers`` (set by ``torch_bp.convert(..., fuse=True)``, the default), the feed-forward
    block's ``linear1`` and activation (relu, gelu, silu) run as one ``linear_activation`` (docs/fusion.md),
    unless ``linear1`` or the activation module has a hook, a per-sample block is open or an error-signal
    capture is active.
    """

    fuse_layers = False

    def _ff_block(self, x):
        from .fused import fusing
        from .linear import Linear
        act = _fused_activation(self.activation) if self.fuse_layers and type(self.linear1) is Linear else None
        if act is not None and fusing() and not _compat.has_hooks(self.linear1) and \
                not (isinstance(self.activation, torch.nn.Module) and _compat.has_hooks(self.activation)):
            h = F.linear_activation(x, self.linear1.weight, self.linear1.bias, *act)
            return self.dropout2(self.linear2(self.dropout(h)))
        return super()._ff_block(x)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _adopt(self)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        src_key_padding_mask = TF._canonical_mask(mask=src_key_padding_mask, mask_name="src_key_padding_mask",
                                                  other_type=TF._none_or_dtype(src_mask), other_name="src_mask",
                                                  target_type=src.dtype)
        src_mask = TF._canonical_mask(mask=src_mask, mask_name="src_mask", other_type=None, other_name="",
                                      target_type=src.dtype, check_other=False)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x


class TransformerDecoderLayer(torch.nn.TransformerDecoderLayer):
    """Drop-in :class:`torch.nn.TransformerDecoderLayer` built of torch_bp layers (torch has no fast path here).

    Args, Shape, parameters: as :class:`torch.nn.TransformerDecoderLayer`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _adopt(self)


class TransformerEncoder(torch.nn.TransformerEncoder):
    """Drop-in :class:`torch.nn.TransformerEncoder` (no nested-tensor fast path).

    Args, Shape, parameters: as :class:`torch.nn.TransformerEncoder`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _adopt(self)

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        src_key_padding_mask = TF._canonical_mask(mask=src_key_padding_mask, mask_name="src_key_padding_mask",
                                                  other_type=TF._none_or_dtype(mask), other_name="mask",
                                                  target_type=src.dtype)
        mask = TF._canonical_mask(mask=mask, mask_name="mask", other_type=None, other_name="",
                                  target_type=src.dtype, check_other=False)
        batch_first = self.layers[0].self_attn.batch_first
        is_causal = _tt._detect_is_causal_mask(mask, is_causal, _tt._get_seq_len(src, batch_first))
        output = src
        for mod in self.layers:
            output = mod(output, src_mask=mask, is_causal=is_causal, src_key_padding_mask=src_key_padding_mask)
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerDecoder(torch.nn.TransformerDecoder):
    """Drop-in :class:`torch.nn.TransformerDecoder` built of torch_bp layers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _adopt(self)


class Transformer(torch.nn.Transformer):
    """Drop-in :class:`torch.nn.Transformer` built of torch_bp layers.

    Example::

        >>> model = torch_bp.nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1,
        ...                                 num_decoder_layers=1, dim_feedforward=32)
        >>> model(torch.randn(7, 2, 16), torch.randn(5, 2, 16)).shape
        torch.Size([5, 2, 16])
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _adopt(self)


def _swap(module, cls, activation):
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    if "activation" in new.__dict__:
        new.activation = activation(new.activation)
    return new


# (torch_bp class, torch.nn class): the converters declared in torch_bp.registry.CONVERTERS
PAIRS = ((TransformerEncoderLayer, torch.nn.TransformerEncoderLayer),
         (TransformerDecoderLayer, torch.nn.TransformerDecoderLayer),
         (TransformerEncoder, torch.nn.TransformerEncoder),
         (TransformerDecoder, torch.nn.TransformerDecoder),
         (Transformer, torch.nn.Transformer))


def converter(ours):
    return lambda m: _swap(m, ours, _our_activation)


def reverter(torch_cls):
    return lambda m: _swap(m, torch_cls, _torch_activation)
