"""Which backend runs the rules: the Python rules of ``torch_bp.ops`` or the compiled kernels.

The Python rules are the specification and always available. The compiled backend
(``csrc/``, registered as ``torch.ops.torch_bp.*``) runs the same rules as fused CPU kernels;
a Function calls them when :func:`use_cpp` says so for its tensors, and falls back to its
Python rule otherwise.

One switch: the environment variable ``TORCH_BP_BACKEND`` (read at import) or
:func:`set_backend`, with the values

- ``"auto"`` (default): the compiled kernels if they were built for this torch (never built
  on import: ``python -m torch_bp.build``, ``backend_info(build=True)`` or
  ``scripts/setup.sh`` build them), else the Python rules; silently when they are merely not
  built, after one warning when something is wrong (a damaged build, a failed build);
- ``"python"``: the Python rules only; nothing is loaded or built;
- ``"cpp"``: the compiled kernels, built now if needed, or an error saying why they are
  unavailable.

:func:`backend_info` says which backend runs and why the compiled one does not, if it does not.

The compiled kernels run for CPU tensors of dtype float32, float64 or bfloat16 (all of one
dtype), outside ``torch.func`` transforms (``vmap``, ``grad``, ...): there the Python rule
runs, since ``generate_vmap_rule`` vmaps the rule itself, and in a backward with
``create_graph=True`` (double backward differentiates the Python rule).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from . import _compat, _ext

MODES = ("auto", "python", "cpp")
DTYPES = (torch.float32, torch.float64, torch.bfloat16)

# The Functions with a compiled path and the ops each calls (read by tests and benchmarks).
COMPILED = {
    "BiasActivationFunction": ("bias_act_fwd", "bias_act_bwd"),
    "LayerNormFunction": ("layer_norm_fwd", "layer_norm_bwd"),
    "RMSNormFunction": ("rms_norm_fwd", "rms_norm_bwd"),
    "BatchNormFunction": ("batch_norm_fwd", "batch_norm_bwd"),
    "GroupNormFunction": ("group_norm_fwd", "group_norm_bwd"),
    "MaxPool2dFunction": ("max_pool2d_fwd", "max_pool2d_bwd"),
    "AvgPool2dFunction": ("avg_pool2d_fwd", "avg_pool2d_bwd"),
    "GELUFunction": ("gelu_fwd", "gelu_bwd"),
    "SiLUFunction": ("silu_fwd", "silu_bwd"),
    "ReLUFunction": ("relu_fwd", "relu_mask", "mask_bwd"),
    "LeakyReLUFunction": ("leaky_relu_fwd", "leaky_relu_bwd"),
    "ELUFunction": ("elu_fwd", "elu_bwd"),
    "SoftplusFunction": ("softplus_fwd", "softplus_bwd"),
    "TanhFunction": ("tanh_fwd", "tanh_bwd"),
    "SigmoidFunction": ("sigmoid_fwd", "sigmoid_bwd"),
    "SoftmaxFunction": ("softmax_fwd", "softmax_bwd"),
    "LogSoftmaxFunction": ("log_softmax_fwd", "log_softmax_bwd"),
    "DropoutFunction": ("dropout_fwd", "pack_mask", "mask_bwd"),
    "EmbeddingFunction": ("embedding_fwd", "embedding_bwd"),
    "CrossEntropyFunction": ("cross_entropy_fwd", "cross_entropy_bwd"),
    "MSELossFunction": ("pointwise_loss_fwd", "pointwise_loss_bwd"),
    "L1LossFunction": ("pointwise_loss_fwd", "pointwise_loss_bwd"),
    "HuberLossFunction": ("pointwise_loss_fwd", "pointwise_loss_bwd"),
    "BCEWithLogitsFunction": ("bce_with_logits_fwd", "bce_with_logits_bwd"),
    "LSTMFunction": ("lstm_layer_fwd", "lstm_layer_bwd"),
    "GRUFunction": ("gru_layer_fwd", "gru_layer_bwd"),
    "ScaledDotProductAttentionFunction": ("attention_fwd", "attention_bwd"),
    "ConvFunction": ("conv_weight_grad",),
    "ConvTransposeFunction": ("conv_weight_grad",),
}

_mode = "python"
_cpp = False        # the compiled kernels are loaded and selected
_reason = ""        # why not, when they are not
_warned = False


@dataclass(frozen=True)
class BackendInfo:
    backend: str           # "cpp" or "python": what runs now
    requested: str         # the mode asked for ("auto", "python", "cpp")
    library: str | None    # the loaded extension, if any
    reason: str            # why the compiled backend is not running ("" when it is)

    def __str__(self):
        if self.backend == "cpp":
            return (f"torch_bp backend: cpp (requested {self.requested!r}): compiled kernels from {self.library}, "
                    f"for CPU tensors of dtype float32/float64/bfloat16; the Python rules elsewhere")
        return f"torch_bp backend: python (requested {self.requested!r}): {self.reason}"


def backend_info(build: bool = False) -> BackendInfo:
    """Which backend runs, and why the compiled one does not if it does not.

    ``build=True`` builds the compiled kernels now if they are missing or damaged (retrying a
    build that failed before) and selects them when the mode is ``"auto"`` or ``"cpp"``.
    """
    global _cpp, _reason
    if build:
        res = _ext.load(build=True, force=True, required_ops=_required_ops())
        if _mode != "python":
            _cpp, _reason = _select(res)
    return BackendInfo("cpp" if _cpp else "python", _mode, _ext._loaded, _reason)


def set_backend(name: str) -> BackendInfo:
    """Select ``"auto"``, ``"python"`` or ``"cpp"`` (see the module docstring); returns :func:`backend_info`.

    ``"cpp"`` builds the compiled kernels if they are missing, and raises ``RuntimeError`` with
    the reason when they are unavailable. ``"auto"`` never builds.
    """
    global _mode, _cpp, _reason, _warned
    if name not in MODES:
        raise ValueError(f"torch_bp backend must be one of {MODES}, got {name!r}")
    if name == "python":
        _mode, _cpp, _reason = name, False, "selected (TORCH_BP_BACKEND=python or set_backend('python'))"
        return backend_info()
    res = _ext.load(build=name == "cpp", required_ops=_required_ops())
    cpp, reason = _select(res)
    if not cpp and name == "cpp":
        raise RuntimeError(f"torch_bp: the compiled backend is unavailable: {reason}")
    _mode, _cpp, _reason = name, cpp, reason
    if not cpp and res.broken and not _warned:
        _warned = True
        warnings.warn(f"torch_bp: using the Python backend: {reason}", RuntimeWarning, stacklevel=2)
    return backend_info()


def _required_ops() -> set[str]:
    return {op for ops in COMPILED.values() for op in ops}


_fakes_error = ""  # why the fake kernels did not register, if they did not


def _select(res) -> tuple[bool, str]:
    """(use the compiled kernels, why not) for a :func:`torch_bp._ext.load` result."""
    global _fakes_error
    if res.library is None:
        return False, res.reason
    if not _fakes_error:
        try:
            _register_fakes()
        except Exception as e:  # an op whose schema differs from its fake kernel's: not our library
            _fakes_error = (f"the compiled library {res.library} does not match these sources ({e}); "
                            f"rebuild: {_ext.BUILD_HINT}")
    return (False, _fakes_error) if _fakes_error else (True, "")


def use_cpp(*tensors) -> bool:
    """True when the compiled kernels should run for these tensors (``None`` entries are skipped).

    NOTE: False while grad mode is on. A Function's forward always runs with grad mode off; its
    backward runs with grad mode on only under ``create_graph=True``, where the backward must be
    differentiable: the Python rule, built from differentiable ops, runs there.
    """
    if not _cpp or torch.is_grad_enabled():
        return False
    dtype = None
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype not in DTYPES:
            return False
        if dtype is None:
            dtype = t.dtype
        elif t.dtype != dtype:
            return False
    if not torch.compiler.is_compiling() and _compat.functorch_transform_active(*tensors):
        return False  # under vmap/grad/jacrev: the Python rule (generate_vmap_rule needs it)
    return True


# --- fake (meta) kernels: shapes and dtypes of every op, for torch.compile and FakeTensor ---
_fakes_done = False


def _acc(dtype):
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _register_fakes():
    global _fakes_done
    if _fakes_done:
        return
    _fakes_done = True
    reg = torch.library.register_fake

    @reg("torch_bp::layer_norm_fwd")
    def _(x, weight, bias, d, eps):
        n = x.numel() // d
        return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((n, 1), dtype=_acc(x.dtype)),
                x.new_empty((n, 1), dtype=_acc(x.dtype)))

    @reg("torch_bp::layer_norm_bwd")
    def _(grad_y, x, weight, mean, rstd, d, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        gb = x.new_empty((d,)) if output_mask[2] else None
        return gx, gw, gb

    @reg("torch_bp::rms_norm_fwd")
    def _(x, weight, d, eps):
        return (torch.empty_like(x, memory_format=torch.contiguous_format),
                x.new_empty((x.numel() // d, 1), dtype=_acc(x.dtype)))

    @reg("torch_bp::rms_norm_bwd")
    def _(grad_y, x, weight, rstd, d, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        return gx, gw

    @reg("torch_bp::batch_norm_fwd")
    def _(x, weight, bias, mean, var, eps):
        c = x.shape[1]
        return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((c,), dtype=_acc(x.dtype)),
                x.new_empty((c,), dtype=_acc(x.dtype)))

    @reg("torch_bp::batch_norm_bwd")
    def _(grad_y, x, weight, mean, var, training, eps, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        gb = x.new_empty((x.shape[1],)) if output_mask[2] else None
        return gx, gw, gb

    @reg("torch_bp::group_norm_fwd")
    def _(x, weight, bias, groups, eps):
        stats = (x.shape[0], groups, 1)
        return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(stats, dtype=_acc(x.dtype)),
                x.new_empty(stats, dtype=_acc(x.dtype)))

    @reg("torch_bp::group_norm_bwd")
    def _(grad_y, x, weight, mean, rstd, groups, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        gb = x.new_empty((x.shape[1],)) if output_mask[2] else None
        return gx, gw, gb

    @reg("torch_bp::max_pool2d_fwd")
    def _(x, kernel_size, stride, padding, dilation, ho, wo):
        shape = tuple(x.shape[:-2]) + (ho, wo)
        dtype = torch.uint8 if kernel_size[0] * kernel_size[1] <= 256 else torch.int32
        return x.new_empty(shape), x.new_empty(shape, dtype=dtype)

    @reg("torch_bp::max_pool2d_bwd")
    def _(grad_y, idx, x_size, kernel_size, stride, padding, dilation):
        return grad_y.new_empty(x_size)

    @reg("torch_bp::avg_pool2d_fwd")
    def _(x, kernel_size, stride, padding, count_include_pad, divisor_override, ho, wo):
        return x.new_empty(tuple(x.shape[:-2]) + (ho, wo))

    @reg("torch_bp::avg_pool2d_bwd")
    def _(grad_y, x_size, kernel_size, stride, padding, count_include_pad, divisor_override):
        return grad_y.new_empty(x_size)

    for name in ("relu_fwd", "tanh_fwd", "gelu_fwd", "silu_fwd", "leaky_relu_fwd", "elu_fwd", "softplus_fwd", "sigmoid_fwd", "softmax_fwd",
                 "log_softmax_fwd"):
        reg(f"torch_bp::{name}")(lambda x, *a: torch.empty_like(x, memory_format=torch.contiguous_format))
    for name in ("gelu_bwd", "silu_bwd", "leaky_relu_bwd", "elu_bwd", "softplus_bwd", "tanh_bwd", "sigmoid_bwd",
                 "pointwise_loss_bwd", "bce_with_logits_bwd"):
        reg(f"torch_bp::{name}")(lambda g, x, *a: torch.empty_like(x, memory_format=torch.contiguous_format))

    @reg("torch_bp::bias_act_fwd")
    def _(h, bias, activation, approximate):
        bits = (h.numel() + 7) // 8 if activation == "relu" else 0
        return torch.empty_like(h, memory_format=torch.contiguous_format), h.new_empty((bits,), dtype=torch.uint8)

    @reg("torch_bp::bias_act_bwd")
    def _(grad_y, saved, bias, activation, approximate, bias_grad):
        return grad_y.new_empty(grad_y.shape), (torch.empty_like(bias) if bias_grad else None)

    @reg("torch_bp::relu_mask")
    def _(y):
        return y.new_empty(((y.numel() + 7) // 8,), dtype=torch.uint8)

    @reg("torch_bp::pack_mask")
    def _(mask):
        return mask.new_empty(((mask.numel() + 7) // 8,), dtype=torch.uint8)

    @reg("torch_bp::mask_bwd")
    def _(grad_y, mask, scale):
        return torch.empty_like(grad_y, memory_format=torch.contiguous_format)

    @reg("torch_bp::dropout_fwd")
    def _(x, mask, scale):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _loss_fwd(x, reduction):
        return torch.empty_like(x, memory_format=torch.contiguous_format) if reduction == "none" else x.new_empty(())

    reg("torch_bp::pointwise_loss_fwd")(lambda x, t, loss, reduction, delta, scale: _loss_fwd(x, reduction))
    reg("torch_bp::bce_with_logits_fwd")(lambda x, t, w, pw, reduction: _loss_fwd(x, reduction))

    for name in ("softmax_bwd", "log_softmax_bwd"):
        reg(f"torch_bp::{name}")(lambda g, y: torch.empty_like(y, memory_format=torch.contiguous_format))

    @reg("torch_bp::embedding_fwd")
    def _(indices, weight):
        return weight.new_empty((*indices.shape, weight.shape[1]))

    @reg("torch_bp::embedding_bwd")
    def _(grad_y, indices, num_weights, padding_idx, scale_grad_by_freq):
        return grad_y.new_empty((num_weights, grad_y.shape[-1]))

    @reg("torch_bp::cross_entropy_fwd")
    def _(x, target, weight, reduction, ignore_index, label_smoothing):
        n = x.shape[0]
        loss = x.new_empty((n,) if reduction == "none" else ())
        return loss, x.new_empty((n, 1), dtype=_acc(x.dtype)), x.new_empty((n, 1), dtype=_acc(x.dtype))

    @reg("torch_bp::cross_entropy_bwd")
    def _(grad_out, x, target, weight, m, s, reduction, ignore_index, label_smoothing):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @reg("torch_bp::lstm_layer_fwd")
    def _(gi, w_hh, w_hr, h0, c0, offsets, sizes):
        n, h = gi.shape[0], gi.shape[1] // 4
        rows = [gi.new_empty((n, k)) for k in (h0.shape[1], h0.shape[1], h, 4 * h, h)]  # Y, Hprev, Cprev, A, C
        return rows[0], h0.new_empty(h0.shape), c0.new_empty(c0.shape), *rows[1:]

    @reg("torch_bp::lstm_layer_bwd")
    def _(dY, dh, dc, w_hh, w_hr, Cprev, A, C, offsets, sizes):
        return (A.new_empty(A.shape), dh.new_empty(dh.shape), dc.new_empty(dc.shape),
                None if w_hr is None else dY.new_empty(dY.shape))

    @reg("torch_bp::gru_layer_fwd")
    def _(gi, w_hh, b_hh, h0, offsets, sizes):
        n, h = gi.shape[0], gi.shape[1] // 3
        return (gi.new_empty((n, h)), h0.new_empty(h0.shape), gi.new_empty((n, h)), gi.new_empty((n, 3 * h)),
                gi.new_empty((n, h)))

    @reg("torch_bp::gru_layer_bwd")
    def _(dY, dh, w_hh, Hprev, A, HN, offsets, sizes):
        return A.new_empty(A.shape), A.new_empty(A.shape), dh.new_empty(dh.shape)

    @reg("torch_bp::attention_fwd")
    def _(q, k, v, keep, causal, scale, keep_scale):
        return q.new_empty(tuple(q.shape[:-1]) + (v.shape[-1],)), q.new_empty(tuple(q.shape[:-1]))

    @reg("torch_bp::attention_bwd")
    def _(grad_o, q, k, v, o, lse, keep, causal, scale, keep_scale):
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    @reg("torch_bp::conv_weight_grad")
    def _(x, grad_y, kernel_size, stride, padding, dilation, groups):
        return x.new_empty((grad_y.shape[1], x.shape[1] // groups, *kernel_size))

    # grad_x = mask_bwd(grad_y, mask, scale) is linear in grad_y: its derivative is itself
    # (relu and dropout support double backward through it).
    def _mask_bwd_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[1], inputs[2])

    def _mask_bwd_backward(ctx, gg):
        mask, scale = ctx.saved_tensors
        return torch.ops.torch_bp.mask_bwd(gg, mask, scale), None, None

    torch.library.register_autograd("torch_bp::mask_bwd", _mask_bwd_backward, setup_context=_mask_bwd_setup)


def _init():
    mode = os.environ.get("TORCH_BP_BACKEND", "auto").strip().lower() or "auto"
    if mode not in MODES:
        warnings.warn(f"torch_bp: TORCH_BP_BACKEND={mode!r} is not one of {MODES}; using 'auto'", RuntimeWarning)
        mode = "auto"
    set_backend(mode)


_init()
