"""Realistic sizes for this machine (2 cores, float32), one entry per registry layer name.

Each entry takes a ``Dims`` (the device and the dimensions) and makes the arguments of the
functional: a tuple ``(args, kwargs)`` whose floating tensors require grad. ``Dims(small=True)``
gives the same layers at test sizes (tests/test_saved_bytes.py gates their saved bytes). A
registry row without an entry is listed as "no size" by the suite, so a new layer shows up as
missing rather than silently skipped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF


class Dims:
    """The sizes of every entry: realistic ones, or small ones (``small=True``) for tests."""

    def __init__(self, device="cpu", small=False):
        self.device = device
        self.rows, self.feat = (16, 32) if small else (8192, 1024)           # pointwise: (rows, feat)
        self.n, self.c, self.hw = (2, 4, 8) if small else (32, 64, 32)       # images: (n, c, hw, hw)
        self.length = 16 if small else 1024                                  # 1-d signals: (n, c, length)
        self.n3, self.c3, self.dhw = (2, 4, 4) if small else (8, 32, 16)     # volumes: (n3, c3, dhw, dhw, dhw)
        # heads: the fused linear + cross-entropy saves O((N + V) d) where torch saves O(N V), less when d is
        # small against N and V (as in a language model's head), so the small size keeps d < N, V
        self.tokens, self.d_model, self.vocab = (32, 16, 64) if small else (4096, 1024, 32000)
        self.ids = (4, 8) if small else (64, 512)                            # embedding: (batch, sequence)
        self.classes = 10 if small else 1000                                 # classification heads
        self.seq, self.batch, self.embed, self.heads = (8, 2, 16, 2) if small else (128, 8, 256, 4)
        self.steps, self.features, self.hidden = (4, 6, 8) if small else (64, 128, 256)  # recurrent (batch: n)

    def r(self, *shape, grad=True, dtype=torch.float32):
        return torch.randn(*shape, dtype=dtype, device=self.device).requires_grad_(grad)

    def u(self, *shape, low=0.0, high=1.0, grad=False):
        return (torch.rand(*shape, device=self.device) * (high - low) + low).requires_grad_(grad)

    def i(self, high, *shape):
        return torch.randint(0, high, shape, device=self.device)

    def sign(self, *shape):
        return torch.randint(0, 2, shape, device=self.device).float() * 2 - 1

    # shapes of the families
    def x(self, **kw):
        return self.r(self.rows, self.feat, **kw)

    def img(self, c=None, **kw):
        return self.r(self.n, c or self.c, self.hw, self.hw, **kw)

    def sig(self, **kw):
        return self.r(self.n, self.c, self.length, **kw)

    def vol(self, **kw):
        return self.r(self.n3, self.c3, self.dhw, self.dhw, self.dhw, **kw)


def _mha(z):
    """Self-attention, sequence first (T, B, E), as torch.nn.functional.multi_head_attention_forward."""
    e = z.embed
    x = z.r(z.seq, z.batch, e)
    w_in, w_out = (z.r(n, e, grad=False).mul_(e ** -0.5).requires_grad_() for n in (3 * e, e))
    # projections scaled as nn.MultiheadAttention's init (std ~ e^-1/2): unit-variance weights
    # would give scores of std ~e, far outside any trained model's, and exp's slow path
    return ((x, x, x, e, z.heads, w_in, z.r(3 * e), None, None, False, 0.0,
             w_out, z.r(e)), {"training": True, "need_weights": False})


def _rnn(kind, z):
    """One layer, batch first: the recurrent functionals take torch.lstm / torch.gru's arguments."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    h = z.hidden
    params = [z.r(gates * h, z.features), z.r(gates * h, h), z.r(gates * h), z.r(gates * h)]
    h0 = torch.zeros(1, z.n, h, device=z.device)
    hx = (h0, torch.zeros_like(h0)) if kind == "lstm" else h0
    return (z.r(z.n, z.steps, z.features), hx, params, True, 1, 0.0, True, False, True), {}


def _cell(kind, z):
    """One step of a cell: input (batch, features), state (batch, hidden)."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    h = z.hidden
    hx = z.r(z.n, h)
    hx = (hx, z.r(z.n, h)) if kind == "lstm" else hx
    return (z.r(z.n, z.features), hx, z.r(gates * h, z.features), z.r(gates * h, h), z.r(gates * h),
            z.r(gates * h)), {}


def _unpool(nd, z):
    """max_unpool of a max pool's output and indices (kernel 2)."""
    x = {1: z.sig, 2: z.img, 3: z.vol}[nd](grad=False)
    y, idx = getattr(TF, f"max_pool{nd}d")(x, 2, return_indices=True)
    return (y.requires_grad_(), idx, 2), {}


def _label_lists(z, n, c):
    """multilabel_margin_loss targets: three class indices per row, then -1."""
    y = torch.full((n, c), -1, dtype=torch.long, device=z.device)
    y[:, :3] = torch.stack([torch.randperm(c, device=z.device)[:3] for _ in range(n)])
    return y


def _pointwise(name):
    return {name: lambda z: ((z.x(),), {})}


def _pair_loss(name, **kw):
    return {name: lambda z: ((z.x(), z.x(grad=False)), kw)}


def _ctc(z):
    """(T, N, C) log-probabilities, full-length inputs, (N, S) padded targets without the blank."""
    t, n, c, s = (16, 2, 5, 4) if z.rows < 1000 else (256, 32, 32, 64)
    log_probs = torch.randn(t, n, c, device=z.device).log_softmax(2).requires_grad_()
    targets = torch.randint(1, c, (n, s), device=z.device)
    lengths = torch.full((n,), t, dtype=torch.long, device=z.device)
    return (log_probs, targets, lengths, torch.full((n,), s, dtype=torch.long, device=z.device)), {}


def _adaptive(z):
    """AdaptiveLogSoftmaxWithLoss over the head's vocabulary, cutoffs at 1/4 and 1/2 of it, div_value 4."""
    d, v = z.d_model, z.vocab
    cutoffs = [v // 4, v // 2, v]
    tails = []
    for i in range(2):
        hsz, osz = d // 4 ** (i + 1), cutoffs[i + 1] - cutoffs[i]
        tails += [z.r(hsz, d) * 0.1, z.r(osz, hsz) * 0.1]
    tails = [w.detach().requires_grad_() for w in tails]
    head = (z.r(cutoffs[0] + 2, d) * 0.1).detach().requires_grad_()
    return (z.r(z.tokens, d), z.i(v, z.tokens), head, tails, cutoffs), {}


SIZES = {
    "linear": lambda z: ((z.r(z.tokens, z.d_model), z.r(z.d_model, z.d_model), z.r(z.d_model)), {}),
    **{k: v for name in ("relu", "leaky_relu", "elu", "gelu", "silu", "softplus", "tanh", "sigmoid", "hardtanh",
                         "relu6", "hardswish", "hardsigmoid", "hardshrink", "softshrink", "selu", "celu", "mish",
                         "logsigmoid", "softsign", "tanhshrink") for k, v in _pointwise(name).items()},
    "threshold": lambda z: ((z.x(), 0.1, 0.0), {}),
    "glu": lambda z: ((z.r(z.rows, 2 * z.feat),), {}),
    "prelu": lambda z: ((z.img(), z.u(z.c, low=0.05, high=0.5, grad=True)), {}),
    "rrelu": lambda z: ((z.x(),), {"training": True}),
    "softmax": lambda z: ((z.r(z.tokens, 2 * z.d_model), -1), {}),
    "log_softmax": lambda z: ((z.r(z.tokens, 2 * z.d_model), -1), {}),
    "softmin": lambda z: ((z.r(z.tokens, 2 * z.d_model), -1), {}),
    "dropout": lambda z: ((z.x(), 0.1), {}),
    "dropout1d": lambda z: ((z.sig(), 0.1), {}),
    "dropout2d": lambda z: ((z.img(), 0.1), {}),
    "dropout3d": lambda z: ((z.vol(), 0.1), {}),
    "alpha_dropout": lambda z: ((z.x(), 0.1), {"training": True}),
    "feature_alpha_dropout": lambda z: ((z.img(), 0.1), {"training": True}),
    "layer_norm": lambda z: ((z.x(), (z.feat,), z.r(z.feat), z.r(z.feat)), {}),
    "rms_norm": lambda z: ((z.x(), (z.feat,), z.r(z.feat)), {}),
    "embedding": lambda z: ((z.i(z.vocab, *z.ids), z.r(z.vocab, z.d_model // 2)), {}),
    "embedding_bag": lambda z: ((z.i(z.vocab, z.tokens), z.r(z.vocab, z.d_model // 2),
                                 torch.arange(0, z.tokens, 8, device=z.device)), {"mode": "mean"}),
    **_pair_loss("mse_loss"), **_pair_loss("l1_loss"), **_pair_loss("huber_loss"), **_pair_loss("smooth_l1_loss"),
    "cross_entropy": lambda z: ((z.r(z.tokens, z.vocab), z.i(z.vocab, z.tokens)), {}),
    "nll_loss": lambda z: ((torch.log_softmax(z.r(z.tokens, z.vocab, grad=False), -1).requires_grad_(),
                            z.i(z.vocab, z.tokens)), {}),
    "binary_cross_entropy_with_logits": lambda z: ((z.x(), z.u(z.rows, z.feat)), {}),
    # the language-model head: 4096 tokens, d = 1024, vocabulary 32000 (experiments/benchmarks/heads.py
    # adds the recompute mode and peak bytes)
    "linear_cross_entropy": lambda z: ((z.r(z.tokens, z.d_model), z.r(z.vocab, z.d_model), z.i(z.vocab, z.tokens)),
                                       {"linear_bias": z.r(z.vocab)}),
    "binary_cross_entropy": lambda z: ((z.u(z.rows, z.feat, low=0.01, high=0.99, grad=True), z.u(z.rows, z.feat)), {}),
    "kl_div": lambda z: ((torch.log_softmax(z.x(grad=False), -1).requires_grad_(), torch.softmax(z.x(grad=False), -1)),
                         {"reduction": "batchmean"}),
    "poisson_nll_loss": lambda z: ((z.x(), z.u(z.rows, z.feat, high=5.0).floor()), {}),
    "gaussian_nll_loss": lambda z: ((z.x(), z.x(grad=False), z.u(z.rows, z.feat, low=0.1, high=2.0, grad=True)), {}),
    "soft_margin_loss": lambda z: ((z.x(), z.sign(z.rows, z.feat)), {}),
    "hinge_embedding_loss": lambda z: ((z.x(), z.sign(z.rows, z.feat)), {}),
    "margin_ranking_loss": lambda z: ((z.r(z.rows * 64), z.r(z.rows * 64), z.sign(z.rows * 64)), {}),
    "multilabel_soft_margin_loss": lambda z: ((z.r(z.tokens, z.classes), z.u(z.tokens, z.classes).round()), {}),
    "cosine_embedding_loss": lambda z: ((z.x(), z.x(), z.sign(z.rows)), {}),
    "triplet_margin_loss": lambda z: ((z.x(), z.x(), z.x()), {}),
    "triplet_margin_with_distance_loss": lambda z: ((z.x(), z.x(), z.x()), {}),
    "multi_margin_loss": lambda z: ((z.r(z.tokens, z.classes), z.i(z.classes, z.tokens)), {}),
    # 100 classes, not 1000: our rule's forward forms (N, C, C) pair terms (torch's kernel loops over them)
    "multilabel_margin_loss": lambda z: ((z.r(z.tokens, z.classes // 10), _label_lists(z, z.tokens, z.classes // 10)),
                                         {}),
    "conv1d": lambda z: ((z.sig(), z.r(z.c, z.c, 5), z.r(z.c)), {"padding": 2}),
    "conv2d": lambda z: ((z.img(), z.r(z.c, z.c, 3, 3), z.r(z.c)), {"padding": 1}),
    "conv3d": lambda z: ((z.vol(), z.r(z.c3, z.c3, 3, 3, 3), z.r(z.c3)), {"padding": 1}),
    "conv_transpose1d": lambda z: ((z.sig(), z.r(z.c, z.c // 2, 4), z.r(z.c // 2)), {"stride": 2, "padding": 1}),
    "conv_transpose2d": lambda z: ((z.r(z.n, z.c, z.hw // 2, z.hw // 2), z.r(z.c, z.c // 2, 4, 4), z.r(z.c // 2)),
                                   {"stride": 2, "padding": 1}),
    "conv_transpose3d": lambda z: ((z.vol(), z.r(z.c3, z.c3 // 2, 4, 4, 4), z.r(z.c3 // 2)), {"stride": 2, "padding": 1}),
    "max_pool1d": lambda z: ((z.sig(), 2), {}),
    "max_pool2d": lambda z: ((z.img(), 2), {}),
    "max_pool3d": lambda z: ((z.vol(), 2), {}),
    "avg_pool1d": lambda z: ((z.sig(), 2), {}),
    "avg_pool2d": lambda z: ((z.img(), 2), {}),
    "avg_pool3d": lambda z: ((z.vol(), 2), {}),
    "adaptive_avg_pool1d": lambda z: ((z.sig(), 1), {}),
    "adaptive_avg_pool2d": lambda z: ((z.img(), (1, 1)), {}),
    "adaptive_avg_pool3d": lambda z: ((z.vol(), 1), {}),
    "adaptive_max_pool1d": lambda z: ((z.sig(), z.length // 2), {}),
    "adaptive_max_pool2d": lambda z: ((z.img(), z.hw // 2), {}),
    "adaptive_max_pool3d": lambda z: ((z.vol(), z.dhw // 2), {}),
    "fractional_max_pool2d": lambda z: ((z.img(), 3), {"output_ratio": (0.5, 0.5)}),
    "fractional_max_pool3d": lambda z: ((z.vol(), 2), {"output_ratio": (0.5, 0.5, 0.5)}),
    "lp_pool1d": lambda z: ((z.sig(), 2.0, 2), {}),
    "lp_pool2d": lambda z: ((z.img(), 2.0, 2), {}),
    "lp_pool3d": lambda z: ((z.vol(), 2.0, 2), {}),
    "max_unpool1d": lambda z: _unpool(1, z),
    "max_unpool2d": lambda z: _unpool(2, z),
    "max_unpool3d": lambda z: _unpool(3, z),
    "batch_norm": lambda z: ((z.img(), torch.zeros(z.c, device=z.device), torch.ones(z.c, device=z.device),
                              z.r(z.c), z.r(z.c)), {"training": True}),
    "batch_norm_relu": lambda z: ((z.img(), torch.zeros(z.c, device=z.device), torch.ones(z.c, device=z.device),
                                   z.r(z.c), z.r(z.c)), {"training": True}),
    "sync_batch_norm": lambda z: ((z.img(), torch.zeros(z.c, device=z.device), torch.ones(z.c, device=z.device),
                                   z.r(z.c), z.r(z.c)), {"training": True}),
    "ctc_loss": _ctc,
    "adaptive_log_softmax_with_loss": _adaptive,
    "group_norm": lambda z: ((z.img(), 8 if z.c >= 8 else 2, z.r(z.c), z.r(z.c)), {}),
    "instance_norm": lambda z: ((z.img(), None, None, z.r(z.c), z.r(z.c)), {}),
    "local_response_norm": lambda z: ((z.img(), 5), {}),
    "pad": lambda z: ((z.img(), (1, 1, 1, 1)), {"mode": "reflect"}),
    "interpolate": lambda z: ((z.img(),), {"scale_factor": 2, "mode": "bilinear"}),
    "pixel_shuffle": lambda z: ((z.img(), 2), {}),
    "pixel_unshuffle": lambda z: ((z.img(), 2), {}),
    "channel_shuffle": lambda z: ((z.img(), 2), {}),
    "unfold": lambda z: ((z.img(), 3), {"padding": 1}),
    "fold": lambda z: ((z.r(z.n, z.c * 9, z.hw * z.hw), (z.hw, z.hw), 3), {"padding": 1}),
    "scaled_dot_product_attention": lambda z: ((z.r(z.batch, z.heads, 2 * z.seq, z.embed // z.heads),
                                                z.r(z.batch, z.heads, 2 * z.seq, z.embed // z.heads),
                                                z.r(z.batch, z.heads, 2 * z.seq, z.embed // z.heads)), {}),
    "multi_head_attention_forward": _mha,
    "lstm": lambda z: _rnn("lstm", z),
    "gru": lambda z: _rnn("gru", z),
    "rnn_tanh": lambda z: _rnn("rnn", z),
    "rnn_relu": lambda z: _rnn("rnn", z),
    "rnn_tanh_cell": lambda z: _cell("rnn", z),
    "rnn_relu_cell": lambda z: _cell("rnn", z),
    "lstm_cell": lambda z: _cell("lstm", z),
    "gru_cell": lambda z: _cell("gru", z),
    "bilinear": lambda z: ((z.r(z.tokens, z.d_model // 8), z.r(z.tokens, z.d_model // 8),
                            z.r(z.d_model // 8, z.d_model // 8, z.d_model // 8), z.r(z.d_model // 8)), {}),
    "pairwise_distance": lambda z: ((z.x(), z.x()), {}),
    "cosine_similarity": lambda z: ((z.x(), z.x()), {}),
    "linear_activation": lambda z: ((z.r(z.tokens, z.d_model), z.r(z.d_model, z.d_model), z.r(z.d_model)),
                                    {"activation": "gelu"}),
    "mul": lambda z: ((z.x(), z.x()), {}),
    "where": lambda z: ((z.x(grad=False) > 0, z.x(), z.x()), {}),
    # Llama-like: (batch, heads, seq, head dim), cos and sin (batch, seq, head dim) without gradient
    "apply_rotary_pos_emb": lambda z: ((z.r(z.batch, z.heads * 2, 4 * z.seq, 2 * z.embed // z.heads),
                                        z.r(z.batch, z.heads * 2, 4 * z.seq, 2 * z.embed // z.heads),
                                        z.r(z.batch, 4 * z.seq, 2 * z.embed // z.heads, grad=False),
                                        z.r(z.batch, 4 * z.seq, 2 * z.embed // z.heads, grad=False)), {}),
}
