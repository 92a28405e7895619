"""Realistic sizes for this machine (2 cores, float32), one entry per registry layer name.

Each entry makes the arguments of the functional: a tuple ``(args, kwargs)`` whose floating
tensors require grad. A registry row without an entry is listed as "no size" by the suite,
so a new layer shows up as missing rather than silently skipped.
"""
from __future__ import annotations

import torch


def _r(*shape, grad=True, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)


def _i(high, *shape, device="cpu"):
    return torch.randint(0, high, shape, device=device)


ROWS, FEAT = 8192, 1024


def _mha(d, t=128, b=8, e=256, heads=4):
    """Self-attention, sequence first (T, B, E), as torch.nn.functional.multi_head_attention_forward."""
    x = _r(t, b, e, device=d)
    w_in, w_out = (_r(n, e, grad=False, device=d).mul_(e ** -0.5).requires_grad_() for n in (3 * e, e))
    # projections scaled as nn.MultiheadAttention's init (std ~ e^-1/2): unit-variance weights
    # would give scores of std ~e, far outside any trained model's, and exp's slow path
    return ((x, x, x, e, heads, w_in, _r(3 * e, device=d), None, None, False, 0.0,
             w_out, _r(e, device=d)), {"training": True, "need_weights": False})


def _rnn(kind, d, batch=32, steps=64, feat=128, hidden=256):
    """One layer, batch first: the recurrent functionals take torch.lstm / torch.gru's arguments."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    params = [_r(gates * hidden, feat, device=d), _r(gates * hidden, hidden, device=d),
              _r(gates * hidden, device=d), _r(gates * hidden, device=d)]
    h0 = torch.zeros(1, batch, hidden, device=d)
    hx = (h0, torch.zeros_like(h0)) if kind == "lstm" else h0
    return (_r(batch, steps, feat, device=d), hx, params, True, 1, 0.0, True, False, True), {}

SIZES = {
    "linear": lambda d: ((_r(4096, 1024, device=d), _r(1024, 1024, device=d), _r(1024, device=d)), {}),
    "relu": lambda d: ((_r(ROWS, FEAT, device=d),), {}),
    "leaky_relu": lambda d: ((_r(ROWS, FEAT, device=d),), {}),
    "elu": lambda d: ((_r(ROWS, FEAT, device=d),), {}),
    "gelu": lambda d: ((_r(ROWS, FEAT, device=d),), {}),
    "silu": lambda d: ((_r(ROWS, FEAT, device=d),), {}),
    "softplus": lambda d: ((_r(ROWS, FEAT, device=d),), {}),
    "tanh": lambda d: ((_r(ROWS, FEAT, device=d),), {}),
    "sigmoid": lambda d: ((_r(ROWS, FEAT, device=d),), {}),
    "softmax": lambda d: ((_r(4096, 2048, device=d), -1), {}),
    "log_softmax": lambda d: ((_r(4096, 2048, device=d), -1), {}),
    "dropout": lambda d: ((_r(ROWS, FEAT, device=d), 0.1), {}),
    "layer_norm": lambda d: ((_r(ROWS, FEAT, device=d), (FEAT,), _r(FEAT, device=d), _r(FEAT, device=d)), {}),
    "rms_norm": lambda d: ((_r(ROWS, FEAT, device=d), (FEAT,), _r(FEAT, device=d)), {}),
    "embedding": lambda d: ((_i(32000, 64, 512, device=d), _r(32000, 512, device=d)), {}),
    "mse_loss": lambda d: ((_r(ROWS, FEAT, device=d), _r(ROWS, FEAT, grad=False, device=d)), {}),
    "l1_loss": lambda d: ((_r(ROWS, FEAT, device=d), _r(ROWS, FEAT, grad=False, device=d)), {}),
    "huber_loss": lambda d: ((_r(ROWS, FEAT, device=d), _r(ROWS, FEAT, grad=False, device=d)), {}),
    "smooth_l1_loss": lambda d: ((_r(ROWS, FEAT, device=d), _r(ROWS, FEAT, grad=False, device=d)), {}),
    "cross_entropy": lambda d: ((_r(4096, 32000, device=d), _i(32000, 4096, device=d)), {}),
    "nll_loss": lambda d: ((torch.log_softmax(torch.randn(4096, 32000, device=d), -1).requires_grad_(),
                            _i(32000, 4096, device=d)), {}),
    "binary_cross_entropy_with_logits": lambda d: ((_r(ROWS, FEAT, device=d),
                                                    torch.rand(ROWS, FEAT, device=d)), {}),
    # the language-model head: 4096 tokens, d = 1024, vocabulary 32000 (experiments/benchmarks/heads.py
    # adds the recompute mode and peak bytes)
    "linear_cross_entropy": lambda d: ((_r(4096, 1024, device=d), _r(32000, 1024, device=d),
                                        _i(32000, 4096, device=d)), {"linear_bias": _r(32000, device=d)}),
    "conv1d": lambda d: ((_r(32, 64, 1024, device=d), _r(64, 64, 5, device=d), _r(64, device=d)), {"padding": 2}),
    "conv2d": lambda d: ((_r(32, 64, 32, 32, device=d), _r(64, 64, 3, 3, device=d), _r(64, device=d)),
                         {"padding": 1}),
    "conv_transpose2d": lambda d: ((_r(32, 64, 16, 16, device=d), _r(64, 32, 4, 4, device=d), _r(32, device=d)),
                                   {"stride": 2, "padding": 1}),
    "max_pool2d": lambda d: ((_r(32, 64, 32, 32, device=d), 2), {}),
    "avg_pool2d": lambda d: ((_r(32, 64, 32, 32, device=d), 2), {}),
    "adaptive_avg_pool2d": lambda d: ((_r(32, 64, 32, 32, device=d), (1, 1)), {}),
    "batch_norm": lambda d: ((_r(32, 64, 32, 32, device=d), torch.zeros(64, device=d), torch.ones(64, device=d),
                              _r(64, device=d), _r(64, device=d)), {"training": True}),
    "group_norm": lambda d: ((_r(32, 64, 32, 32, device=d), 8, _r(64, device=d), _r(64, device=d)), {}),
    "scaled_dot_product_attention": lambda d: ((_r(8, 4, 256, 64, device=d), _r(8, 4, 256, 64, device=d),
                                                _r(8, 4, 256, 64, device=d)), {}),
    "multi_head_attention_forward": lambda d: _mha(d),
    "linear_activation": lambda d: ((_r(4096, 1024, device=d), _r(1024, 1024, device=d), _r(1024, device=d)),
                                    {"activation": "gelu"}),
    "lstm": lambda d: _rnn("lstm", d),
    "gru": lambda d: _rnn("gru", d),
    "rnn_tanh": lambda d: _rnn("rnn", d),
    "rnn_relu": lambda d: _rnn("rnn", d),
}
