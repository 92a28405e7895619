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


class PreLNBlock(nn.Module):
    """A pre-LN Transformer block written out here, independently of ``nn.TransformerEncoderLayer``:
    x + drop(attn(ln1(x))), then x + drop(fc2(drop(gelu(fc1(ln2(x)))))), the attention being
    ``nn.MultiheadAttention`` called with ``need_weights=False``."""

    def __init__(self, d=256, heads=4, hidden=1024, p=0.1):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.fc1, self.act, self.fc2 = nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)
        self.drop_attn, self.drop_mlp, self.drop_out = nn.Dropout(p), nn.Dropout(p), nn.Dropout(p)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.drop_attn(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_out(self.fc2(self.drop_mlp(self.act(self.fc1(self.ln2(x))))))


def preln_block(batch=8, T=128, d=256, heads=4, hidden=1024, p=0.1):
    """The block above at the Transformer block's sizes: d=256, 4 heads, T=128, batch 8, MLP 1024."""
    return PreLNBlock(d, heads, hidden, p), (torch.randn(batch, T, d),)


# --- blocks of Hugging Face transformers models (tiny configs at the suite's sizes, random init) ---
def _transformers():
    try:
        import transformers
    except ImportError:
        return None
    return transformers


class _HFBlock(nn.Module):
    """One decoder block of a transformers model as a module of x alone: (batch, T, d) -> (batch, T, d).
    Llama's block also takes the rotary (cos, sin), made here from positions 0..T-1 (no gradient)."""

    def __init__(self, block, rotary=None):
        super().__init__()
        self.block, self.rotary = block, rotary

    def forward(self, x):
        if self.rotary is None:
            out = self.block(x)
        else:
            pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
            out = self.block(x, position_embeddings=self.rotary(x, pos))
        return out[0] if isinstance(out, tuple) else out


def gpt2_block(batch=8, T=128, d=256, heads=4, hidden=1024, p=0.1):
    """transformers' GPT2Block: d=256, 4 heads, MLP 1024 (Conv1D, gelu_new), dropouts 0.1, causal
    SDPA attention; T=128, batch 8."""
    transformers = _transformers()
    if transformers is None:
        return None
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block
    cfg = transformers.GPT2Config(n_embd=d, n_head=heads, n_inner=hidden, n_positions=T, n_layer=1,
                                  resid_pdrop=p, attn_pdrop=p, embd_pdrop=p, attn_implementation="sdpa")
    return _HFBlock(GPT2Block(cfg, layer_idx=0)), (torch.randn(batch, T, d),)


def llama_block(batch=8, T=128, d=256, heads=4, hidden=1024, kv_heads=None):
    """transformers' LlamaDecoderLayer: d=256, 4 heads (no grouped KV), SwiGLU MLP 1024, RMSNorm,
    rotary embedding, causal SDPA attention (Llama has no dropout); T=128, batch 8."""
    transformers = _transformers()
    if transformers is None:
        return None
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
    cfg = transformers.LlamaConfig(hidden_size=d, num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
                                   intermediate_size=hidden, num_hidden_layers=1, max_position_embeddings=T,
                                   attn_implementation="sdpa")
    return _HFBlock(LlamaDecoderLayer(cfg, layer_idx=0), LlamaRotaryEmbedding(cfg)), (torch.randn(batch, T, d),)


# A builder returns (model, inputs), or None where a dependency is missing (transformers: the
# suite then prints a note and skips the row).
MODELS = {"mlp_gelu": mlp, "cnn_stack": cnn, "transformer_block": transformer_block, "lstm_2layer": lstm,
          "preln_block": preln_block, "gpt2_block": gpt2_block, "llama_block": llama_block}
MISSING = {"gpt2_block": "transformers", "llama_block": "transformers"}  # what a None return lacks
