r"""Losses: regression losses, (binary) cross-entropy and NLL.

Notation: ``g`` is the upstream gradient of the loss; ``ge`` the gradient reaching each
element (or row) of the unreduced loss:
    reduction='none': ge = g (one per element)
    reduction='sum':  ge = g
    reduction='mean': ge = g / n, where n is the number of elements, or the sum of the
                      weights where torch normalises by it (mse/l1 with ``weight``, and
                      nll/cross-entropy with class indices: the summed weight of the
                      non-ignored targets).
Conventions (as torch's): l1'(0) = 0; huber/smooth-l1 use the quadratic branch's slope
at |d| = delta; an ignored target (``ignore_index``) contributes neither loss nor weight.

Every rule is computed in float32 for bfloat16/float16 inputs and rounded once. Every
backward here is written with differentiable tensor ops on saved inputs (double backward:
yes); ``weight``/``pos_weight`` of the classification losses take no gradient, as in torch
(``torch_bp.functional`` rejects them when they require grad, with torch's error).

Compiled (csrc/cpu/loss.cpp): cross-entropy with class indices of (N, C) logits; mse, l1,
huber/smooth-l1 without ``weight`` and bce-with-logits, when their operands have one shape
(forward: the loss and its reduction in one pass; backward: one pass, grad_output read in
place). Broadcast operands and the pointwise losses' ``weight`` run the Python rules.
"""
from __future__ import annotations

import math

import torch

from .. import backend
from ._util import first_order_only, opmath, own, sum_to_size
from ._rule import Rule


def _out_dtype(*tensors):
    dtype = None
    for t in tensors:
        if t is not None:
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return dtype


def _diff(x, t):
    """d = x - t in the promoted dtype (float32 for bfloat16/float16; a bool or integer side promoted)."""
    dtype = torch.promote_types(x.dtype, t.dtype)
    dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return x.to(dtype) - t.to(dtype)


def _reduce(e, w, reduction, weight_mean):
    """Apply an elementwise weight and the reduction (``weight_mean``: mean = sum / sum(w))."""
    if w is not None:
        e = e * w
    if reduction == "none":
        return e
    if reduction == "sum":
        return e.sum()
    return e.sum() / w.sum() if (w is not None and weight_mean) else e.mean()


def _elem_grad(g, numel, w, reduction, weight_mean):
    """ge: the gradient reaching each element of the unreduced (unweighted-by-reduction) loss."""
    if reduction != "mean":
        return g
    return g / w.sum() if (w is not None and weight_mean) else g / numel


def _cpp_elementwise(x, t, *others):
    """True when the compiled elementwise loss runs: x, t and the given weights (None skipped) of
    one shape and dtype, the compiled backend selected for them (csrc/cpu/loss.cpp)."""
    return all(o is None or o.shape == x.shape for o in (t, *others)) and backend.use_cpp(x, t, *others)


def _pointwise_backward_cpp(ctx, grad_out, loss, delta=0.0, scale=1.0):
    """:func:`_pointwise_backward` without weight, compiled: one pass gives dL/dd, d = x - t."""
    x, t, _ = ctx.saved_tensors
    gd = torch.ops.torch_bp.pointwise_loss_bwd(grad_out, x, t, loss, ctx.reduction, delta, scale)
    return gd if ctx.needs_input_grad[0] else None, -gd if ctx.needs_input_grad[1] else None, None, None


def _pointwise_backward(ctx, grad_out, e_of, de):
    """Gradients of ``reduce(w * e(x - t))`` for x, t, w given e'(d) (opmath) and ``e_of()``, which
    computes e(d) (only for grad_w: recomputed when needed, never when w has no gradient)."""
    x, t, w = ctx.saved_tensors
    wf = None if w is None else opmath(w)
    ge = _elem_grad(opmath(grad_out), de.numel(), wf, ctx.reduction, ctx.weight_mean)
    grad_x = grad_t = grad_w = None
    gd = ge * de if wf is None else ge * de * wf  # dL/dd, d = x - t
    if ctx.needs_input_grad[0]:
        grad_x = sum_to_size(gd, x.shape).to(x.dtype)
    if ctx.needs_input_grad[1]:
        grad_t = sum_to_size(-gd, t.shape).to(t.dtype)
    if w is not None and ctx.needs_input_grad[2]:
        e = e_of()
        if ctx.reduction == "mean" and ctx.weight_mean:
            # L = S / W with S = sum(w e), W = sum(w):  dL/dw = (g / W) (e - L)
            e = e - (e * wf).sum() / wf.sum()
        grad_w = sum_to_size(ge * e, w.shape).to(w.dtype)
    return grad_x, grad_t, grad_w, None


# --- MSELoss ---
class MSELossFunction(Rule):
    r"""Mean squared error, with torch's optional elementwise ``weight``.

    Forward:   d = x - t (broadcast),  L = reduce(w d^2)   (mean with w: sum(w d^2) / sum(w))
    Backward:  grad_x = ge * 2 d * w,   grad_t = -grad_x (each summed to its own shape)
               grad_w = ge * d^2        (mean with w: ge * (d^2 - L), ge = g / sum(w))
    Saved:     x, t, w                  Double backward: yes
    """

    compiled = ("pointwise_loss_fwd", "pointwise_loss_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, t, w, reduction):
        if w is None and _cpp_elementwise(x, t):  # the same rule, compiled (csrc/cpu/loss.cpp)
            return torch.ops.torch_bp.pointwise_loss_fwd(x, t, "mse", reduction, 0.0, 1.0)
        d = _diff(x, t)
        out = _reduce(d * d, None if w is None else opmath(w), reduction, weight_mean=True)
        return out.to(_out_dtype(x, t, w))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, t, w, ctx.reduction = inputs
        ctx.weight_mean = True
        ctx.save_for_backward(x, t, w)

    @staticmethod
    def backward(ctx, grad_out):
        x, t, w = ctx.saved_tensors
        if w is None and _cpp_elementwise(x, t, grad_out if ctx.reduction == "none" else None):
            return _pointwise_backward_cpp(ctx, grad_out, "mse")
        d = _diff(x, t)
        return _pointwise_backward(ctx, grad_out, lambda: d * d, 2 * d)


# --- L1Loss ---
class L1LossFunction(Rule):
    r"""Mean absolute error, with torch's optional elementwise ``weight``.

    Forward:   d = x - t (broadcast),  L = reduce(w |d|)   (mean with w: sum(w |d|) / sum(w))
    Backward:  grad_x = ge * sign(d) * w  (sign(0) = 0),   grad_t = -grad_x
               grad_w = ge * |d|          (mean with w: ge * (|d| - L), ge = g / sum(w))
    Saved:     x, t, w                    Double backward: yes (second derivative 0)
    """

    compiled = ("pointwise_loss_fwd", "pointwise_loss_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, t, w, reduction):
        if w is None and _cpp_elementwise(x, t):  # the same rule, compiled (csrc/cpu/loss.cpp)
            return torch.ops.torch_bp.pointwise_loss_fwd(x, t, "l1", reduction, 0.0, 1.0)
        d = opmath(x - t)  # as torch's composite: x - t in the inputs' dtype (integers allowed)
        out = _reduce(d.abs(), None if w is None else opmath(w), reduction, weight_mean=True)
        return out.to(_out_dtype(x, t, w)) if out.is_floating_point() else out  # an integer sum: int64

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, t, w, ctx.reduction = inputs
        ctx.weight_mean = True
        ctx.save_for_backward(x, t, w)

    @staticmethod
    def backward(ctx, grad_out):
        x, t, w = ctx.saved_tensors
        if w is None and _cpp_elementwise(x, t, grad_out if ctx.reduction == "none" else None):
            return _pointwise_backward_cpp(ctx, grad_out, "l1")
        d = opmath(x - t)
        return _pointwise_backward(ctx, grad_out, d.abs, torch.sign(d))


# --- HuberLoss / SmoothL1Loss ---
class HuberLossFunction(Rule):
    r"""Huber loss with threshold ``delta``, times ``scale`` (smooth-L1 with beta is
    ``scale = 1 / beta``, ``delta = beta``); torch's optional elementwise ``weight``.

    Forward:   d = x - t,  h(d) = d^2 / 2 if |d| < delta else delta (|d| - delta / 2)
               L = reduce(w * scale * h(d))           (mean: over all elements, as torch)
    Backward:  grad_x = ge * scale * clamp(d, -delta, delta) * w,   grad_t = -grad_x
               grad_w = ge * scale * h(d)
    Saved:     x, t, w                                Double backward: yes
    """

    compiled = ("pointwise_loss_fwd", "pointwise_loss_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, t, w, reduction, delta, scale):
        if w is None and _cpp_elementwise(x, t):  # the same rule, compiled (csrc/cpu/loss.cpp)
            return torch.ops.torch_bp.pointwise_loss_fwd(x, t, "huber", reduction, delta, scale)
        d = _diff(x, t)
        out = _reduce(_huber(d, delta, scale), None if w is None else opmath(w), reduction, weight_mean=False)
        return out.to(_out_dtype(x, t, w))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, t, w, ctx.reduction, ctx.delta, ctx.scale = inputs
        ctx.weight_mean = False
        ctx.save_for_backward(x, t, w)

    @staticmethod
    def backward(ctx, grad_out):
        x, t, w = ctx.saved_tensors
        if w is None and _cpp_elementwise(x, t, grad_out if ctx.reduction == "none" else None):
            return _pointwise_backward_cpp(ctx, grad_out, "huber", ctx.delta, ctx.scale) + (None, None)
        d = _diff(x, t)
        de = d.clamp(-ctx.delta, ctx.delta) * ctx.scale
        return _pointwise_backward(ctx, grad_out, lambda: _huber(d, ctx.delta, ctx.scale), de) + (None, None)


def _huber(d, delta, scale):
    """scale * h(d) without computing both branches: with z = |d| and c = min(z, delta),
    c (z - c / 2) is z^2 / 2 below delta, rounded as z * z / 2 (z - z / 2 = z / 2 is exact),
    and delta (z - delta / 2) from delta on; NaN stays NaN."""
    z = d.abs()
    c = z.clamp(max=delta)
    e = c * (z - 0.5 * c)
    return e if scale == 1 else e * scale


# --- BCEWithLogitsLoss ---
class BCEWithLogitsFunction(Rule):
    r"""Binary cross-entropy on logits, with ``weight`` w and ``pos_weight`` pw (broadcast).

    Forward:   l = (pw - 1) t + 1,   e = (1 - t) x - l * logsigmoid(x)
               (= -w [pw t log s(x) + (1 - t) log(1 - s(x))]),   L = reduce(w e)
    Backward:  grad_x = ge * w * ((pw t + 1 - t) s(x) - pw t)
               grad_t = ge * w * (logsigmoid(-x) - pw logsigmoid(x))    (= -x without pw)
               no gradient for w, pw (as torch)
    Saved:     x, t, w, pw                Double backward: yes
    The loss has t's dtype, as torch's (computed in place in 1 - t).
    NOTE: logsigmoid(x) = min(x, 0) - log1p(e^{-|x|}) never overflows: finite for any
    finite logit, like torch's.
    """

    compiled = ("bce_with_logits_fwd", "bce_with_logits_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, t, w, pw, reduction):
        if _cpp_elementwise(x, t, w, pw):  # the same rule, compiled (csrc/cpu/loss.cpp)
            return torch.ops.torch_bp.bce_with_logits_fwd(x, t, w, pw, reduction)
        xf, tf = opmath(x), opmath(t)
        ls = torch.nn.functional.logsigmoid(xf)
        if pw is not None:
            ls = ls * ((opmath(pw) - 1) * tf + 1)
        e = (1 - tf) * xf - ls
        out = _reduce(e, None if w is None else opmath(w), reduction, weight_mean=False)
        return out.to(t.dtype)  # as torch, whose loss is computed in place in (1 - t)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, t, w, pw, ctx.reduction = inputs
        ctx.save_for_backward(x, t, w, pw)

    @staticmethod
    def backward(ctx, grad_out):
        x, t, w, pw = ctx.saved_tensors
        grad_x = grad_t = None
        if ctx.needs_input_grad[0] and _cpp_elementwise(x, t, w, pw, grad_out if ctx.reduction == "none" else None):
            grad_x = torch.ops.torch_bp.bce_with_logits_bwd(grad_out, x, t, w, pw, ctx.reduction)  # csrc/cpu/loss.cpp
            if not ctx.needs_input_grad[1]:
                return grad_x, None, None, None, None
        xf, tf = opmath(x), opmath(t)
        ge = _elem_grad(opmath(grad_out), x.numel(), None, ctx.reduction, False)
        if w is not None:
            ge = ge * opmath(w)
        if ctx.needs_input_grad[0] and grad_x is None:
            if pw is None:
                gx = torch.sigmoid(xf) - tf
            else:
                pt = opmath(pw) * tf
                gx = (pt + 1 - tf) * torch.sigmoid(xf) - pt
            grad_x = sum_to_size(ge * gx, x.shape).to(x.dtype)
        if ctx.needs_input_grad[1]:
            if pw is None:
                gt = -xf
            else:
                logsig = torch.nn.functional.logsigmoid
                gt = logsig(-xf) - opmath(pw) * logsig(xf)
            grad_t = sum_to_size(ge * gt, t.shape).to(t.dtype)
        return grad_x, grad_t, None, None, None


# --- NLLLoss ---
def _class_dim(x):
    return 0 if x.dim() == 1 else 1


def _picked_weights(target, weight, ignore_index, dtype):
    """Per target: valid = [target != ignore_index], a safe class index, and w_y (0 where ignored)."""
    valid = target != ignore_index
    safe = torch.where(valid, target, 0).long()
    w_y = valid.to(dtype) if weight is None else torch.where(valid, opmath(weight)[safe], 0)
    return valid, safe, w_y


def _class_shape(weight, x, cd):
    """The class weight as a tensor broadcasting along the class dim of x."""
    shape = [1] * x.dim()
    shape[cd] = weight.shape[0]
    return opmath(weight).reshape(shape)


class NLLLossFunction(Rule):
    r"""Negative log-likelihood of class indices y, input a log-probability z.

    Input (C), (N, C) or (N, C, d1, ...); classes along dim 1 (dim 0 unbatched).
    Forward:   e_n = -w_{y_n} z[n, y_n]   (0 where y_n = ignore_index)
               L = reduce(e)   (mean: sum(e) / sum of w_{y_n} over non-ignored n)
    Backward:  grad_z[n, c] = -ge_n w_{y_n} [c = y_n]   (a scatter of one value per row)
    Saved:     y, w (z is not needed)       Double backward: yes (linear in g)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, target, weight, reduction, ignore_index):
        cd = _class_dim(z)
        zf = opmath(z)
        valid, safe, w_y = _picked_weights(target, weight, ignore_index, zf.dtype)
        if z.shape[cd] == 0:  # no classes (every target ignored, else the functional raised)
            e = zf.new_zeros(target.shape)
        else:
            e = torch.where(valid, -zf.gather(cd, safe.unsqueeze(cd)).squeeze(cd) * w_y, 0)
        if reduction == "none":
            out = e
        else:
            out = e.sum() if reduction == "sum" else e.sum() / w_y.sum()
        return out.to(z.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, target, weight, ctx.reduction, ctx.ignore_index = inputs
        ctx.z_shape, ctx.z_dtype = z.shape, z.dtype
        ctx.save_for_backward(target, weight)

    @staticmethod
    def backward(ctx, grad_out):
        target, weight = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        cd = 0 if len(ctx.z_shape) == 1 else 1
        g = opmath(grad_out)
        valid, safe, w_y = _picked_weights(target, weight, ctx.ignore_index, g.dtype)
        if ctx.reduction == "mean":
            g = g / w_y.sum()
        src = torch.where(valid, -g * w_y, 0)  # (N, d1, ...)
        if ctx.z_shape[cd] == 0:
            return src.new_zeros(ctx.z_shape).to(ctx.z_dtype), None, None, None, None
        # in place into the fresh zeros: one pass over grad_z, not two (out-of-place scatter copies)
        grad_z = src.new_zeros(ctx.z_shape).scatter_(cd, safe.unsqueeze(cd), src.unsqueeze(cd))
        return grad_z.to(ctx.z_dtype), None, None, None, None


# --- CrossEntropyLoss ---
def _log_softmax_parts(xf, cd):
    """m = max along the class dim and s = log(sum(e^{x - m})), so log_softmax(x) = (x - m) - s."""
    if xf.shape[cd] == 0:  # no classes: nothing to shift (amax of nothing is undefined)
        m = xf.new_zeros(xf.sum(cd, keepdim=True).shape)
    else:
        m = xf.amax(cd, keepdim=True)
    s = torch.exp(xf - m).sum(cd, keepdim=True).log()
    return m, s


class CrossEntropyFunction(Rule):
    r"""Cross-entropy of logits x with class indices y: log-softmax and NLL fused.

    Input (C), (N, C) or (N, C, d1, ...); classes along dim 1 (dim 0 unbatched); C classes,
    class weights w (1 if None), label smoothing a. With z = log_softmax(x), p = softmax(x):
    Forward:   q[n, c] = (1 - a) w_{y_n} [c = y_n] + (a / C) w_c     (0 where y_n is ignored)
               e_n = -sum_c q[n, c] z[n, c],    L = reduce(e)
               (mean: sum(e) / sum of w_{y_n} over non-ignored n, as torch)
    Backward:  grad_x = ge_n (p * sum_c q[n, c] - q)                 (softmax minus target)
    Saved:     x, y, w, and per row m = max x and s = log sum e^{x - m} (logsumexp = m + s);
               p = e^{(x - m) - s} is recomputed in backward, never stored.
    Double backward: yes. s is a second, differentiable output (d s / d x = p, m being a
               constant shift), so the graph of the recomputed p is exact.
    NOTE: m and s are kept apart because x - m is exact: the loss and p keep full precision
    for logits of magnitude 1e4, where x - (m + s) in float32 would be off by ~|x| eps.
    """

    compiled = ("cross_entropy_fwd", "cross_entropy_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, target, weight, reduction, ignore_index, label_smoothing):
        if x.dim() == 2 and target.dtype == torch.int64 and backend.use_cpp(x, weight, op="cross_entropy_fwd"):  # csrc/cpu/loss.cpp
            return torch.ops.torch_bp.cross_entropy_fwd(x, target, weight, reduction, ignore_index, label_smoothing)
        cd = _class_dim(x)
        xf = opmath(x)
        m, s = _log_softmax_parts(xf, cd)
        z = (xf - m) - s
        valid, safe, w_y = _picked_weights(target, weight, ignore_index, xf.dtype)
        if x.shape[cd] == 0:  # no classes (every target ignored, else the functional raised)
            e = xf.new_zeros(target.shape)
        else:
            e = torch.where(valid, -z.gather(cd, safe.unsqueeze(cd)).squeeze(cd) * w_y, 0)
        if label_smoothing > 0:
            wz = z if weight is None else z * _class_shape(weight, x, cd)
            smooth = torch.where(valid, -wz.sum(cd), 0)
            a_c = label_smoothing / x.shape[cd] if x.shape[cd] else math.inf  # C = 0: 0 * inf = NaN, as torch
            e = (1 - label_smoothing) * e + a_c * smooth
        if reduction == "none":
            out = e
        else:
            out = e.sum() if reduction == "sum" else e.sum() / w_y.sum()
        return out.to(x.dtype), m, s

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, target, weight, ctx.reduction, ctx.ignore_index, ctx.label_smoothing = inputs
        _, m, s = output
        ctx.mark_non_differentiable(m)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, target, weight, m, s)

    @staticmethod
    def backward(ctx, grad_out, _grad_m, grad_s):
        x, target, weight, m, s = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        if (grad_s is None and grad_out is not None and x.dim() == 2 and target.dtype == torch.int64
                and backend.use_cpp(x, weight, grad_out, op="cross_entropy_bwd")):  # one pass, p never stored (csrc/cpu/loss.cpp)
            return (torch.ops.torch_bp.cross_entropy_bwd(grad_out, x, target, weight, m, s, ctx.reduction,
                                                         ctx.ignore_index, ctx.label_smoothing), None, None, None, None, None)
        cd = _class_dim(x)
        if x.shape[cd] == 0:
            return torch.zeros_like(x), None, None, None, None, None
        xf = opmath(x)
        p = torch.exp((xf - m) - s)
        grad_x = None if grad_s is None else grad_s * p  # the rule of the output s
        if grad_out is not None:
            a, n_cls = ctx.label_smoothing, x.shape[cd]
            valid, safe, w_y = _picked_weights(target, weight, ctx.ignore_index, xf.dtype)
            g = opmath(grad_out)
            if ctx.reduction == "mean":
                g = g / w_y.sum()
            ge = torch.where(valid, g, 0).unsqueeze(cd)  # (N, 1, d1, ...): 0 on ignored rows
            w_sum = n_cls if weight is None else opmath(weight).sum()
            q_sum = (1 - a) * w_y.unsqueeze(cd) + (a / n_cls) * w_sum if a > 0 else w_y.unsqueeze(cd)
            gx = p * (ge * q_sum)
            if a > 0:
                gx = gx - (ge * (a / n_cls)) * (1 if weight is None else _class_shape(weight, x, cd))
            gx = gx.scatter_add(cd, safe.unsqueeze(cd), -(ge * ((1 - a) * w_y.unsqueeze(cd))))
            grad_x = gx if grad_x is None else grad_x + gx
        if grad_x is not None:
            grad_x = grad_x.to(x.dtype)
        return grad_x, None, None, None, None, None


class SoftCrossEntropyFunction(Rule):
    r"""Cross-entropy of logits x with class probabilities t: log-softmax and the sum fused.

    Shapes and notation as :class:`CrossEntropyFunction` (t has x's shape).
    Forward:   q = (1 - a) t + a / C,   e_n = -sum_c w_c q[n, c] z[n, c],   L = reduce(e)
               (mean: sum(e) / (number of rows N d1 ...), as torch; NaN for no rows)
    Backward:  grad_x = ge_n (p * sum_c w_c q[n, c] - w q)
               grad_t = -ge_n (1 - a) w z,      grad_w = -sum over rows of ge_n q z
    Saved:     x, t, w, m, s (p and z recomputed)     Double backward: yes (see CrossEntropyFunction)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, target, weight, reduction, label_smoothing):
        cd = _class_dim(x)
        xf = opmath(x)
        m, s = _log_softmax_parts(xf, cd)
        wq = _soft_weighted_target(x, target, weight, label_smoothing, cd)
        e = -(((xf - m) - s) * wq).sum(cd)
        if reduction == "none":
            out = e
        else:
            out = e.sum() if reduction == "sum" else e.sum() / _rows(x, cd)
        return out.to(_out_dtype(x, target, weight)), m, s

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, target, weight, ctx.reduction, ctx.label_smoothing = inputs
        _, m, s = output
        ctx.mark_non_differentiable(m)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, target, weight, m, s)

    @staticmethod
    def backward(ctx, grad_out, _grad_m, grad_s):
        x, target, weight, m, s = ctx.saved_tensors
        cd = _class_dim(x)
        xf = opmath(x)
        z = (xf - m) - s
        p = torch.exp(z)
        grad_x = grad_t = grad_w = None
        if grad_s is not None and ctx.needs_input_grad[0]:
            grad_x = grad_s * p  # the rule of the output s
        if grad_out is not None:
            a = ctx.label_smoothing
            g = opmath(grad_out)
            if ctx.reduction == "mean":
                g = g / _rows(x, cd)
            ge = g.unsqueeze(cd) if ctx.reduction == "none" else g
            if ctx.needs_input_grad[0]:
                wq = _soft_weighted_target(x, target, weight, a, cd)
                gx = ge * (p * wq.sum(cd, keepdim=True) - wq)
                grad_x = gx if grad_x is None else grad_x + gx
            if ctx.needs_input_grad[1]:
                wz = z if weight is None else z * _class_shape(weight, x, cd)
                grad_t = (-(1 - a) * ge * wz).to(target.dtype)
            if weight is not None and ctx.needs_input_grad[2]:
                q = opmath(target) * (1 - a) + a / x.shape[cd] if a > 0 else opmath(target)
                gw = -(ge * q * z)
                rows = [d for d in range(gw.dim()) if d != cd]
                grad_w = (gw.sum(rows) if rows else gw).to(weight.dtype)
        if grad_x is not None:
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_t, grad_w, None, None


def _rows(x, cd):
    """The number of rows N d1 ... (0 for an empty input, so that mean is NaN, as torch)."""
    return x.numel() // x.shape[cd] if x.numel() else 0


def _soft_weighted_target(x, target, weight, label_smoothing, cd):
    """w q with q = (1 - a) t + a / C (opmath)."""
    q = opmath(target)
    if label_smoothing > 0:
        q = q * (1 - label_smoothing) + label_smoothing / max(x.shape[cd], 1)  # C = 0: q is empty
    return q if weight is None else q * _class_shape(weight, x, cd)


# --- LinearCrossEntropy ---
# Rows (tokens) per chunk when none is given: the chunk's logits hold about this many
# elements (float32: 64 MiB), whatever the vocabulary; at least 16 rows per chunk.
CHUNK_ELEMENTS = 2 ** 24


def _head_rows(n_classes, chunk_size):
    return int(chunk_size) if chunk_size is not None else max(16, CHUNK_ELEMENTS // max(n_classes, 1))


def _head_logits(xc, weight, bias):
    """z = x W^T + b for one chunk of rows (c, V), as torch's linear (addmm), then opmath."""
    z = xc.matmul(weight.t()) if bias is None else torch.addmm(bias, xc, weight.t())
    return opmath(z)


def _head_loss(z, safe, valid, a, cw):
    """(log_softmax(z), e): the per-row loss e, 0 on ignored rows (torch's log_softmax kernel)."""
    ls = torch.log_softmax(z, 1)
    e = -ls.gather(1, safe).squeeze(1)
    if cw is None:
        if a > 0:
            e = (1 - a) * e - a * ls.mean(1)
    else:
        e = (1 - a) * cw[safe.squeeze(1)] * e
        if a > 0:
            e = e - (a / ls.shape[1]) * ls.mv(cw)
    return ls, torch.where(valid, e, 0)


def _head_grads(p, ge, safe, a, xc, weight, gx, gw, gb, cw):
    r"""With G' = p - (1 - a) onehot(y) - a / V (class weights w: p ((1 - a) w_y + (a / V) sum(w))
    - (1 - a) w_y onehot(y) - (a / V) w) formed in place of p (c, V) and G = ge G':
    grad_x rows = ge (G' W) into ``gx``, grad_W += G'^T (ge x), grad_b += G'^T ge.
    NOTE: ge scales the (c, d) factors, never the (c, V) one: one pass less over the chunk."""
    v = p.shape[1]
    if cw is None:
        p.scatter_add_(1, safe, p.new_full(safe.shape, -(1 - a)))
        if a > 0:
            p.sub_(a / v)
    else:
        wy = cw[safe.squeeze(1)].unsqueeze(1)  # (c, 1)
        p.mul_((1 - a) * wy + (a / v) * cw.sum() if a > 0 else wy)  # (a = 0: untargeted classes' weights unread)
        p.scatter_add_(1, safe, -(1 - a) * wy)
        if a > 0:
            p.sub_((a / v) * cw)
    g = p.to(weight.dtype)
    if gx is not None:
        gx.copy_(g.mm(weight).mul_(ge.unsqueeze(1).to(weight.dtype)))
    if gw is not None:
        xs = xc * ge.unsqueeze(1).to(xc.dtype)  # (c, d)
        if gw.dtype == g.dtype:
            gw.addmm_(g.t(), xs)
        else:
            gw.add_(g.t().mm(xs))
    if gb is not None:
        gb.add_(p.t().mv(ge))


def _head_count(valid, safe, cw):
    """The mean's divisor: the number of non-ignored rows, or the sum of their targets' class weights."""
    return valid.sum() if cw is None else torch.where(valid, cw[safe.squeeze(1)], 0).sum()


class LinearCrossEntropyFunction(Rule):
    r"""Language-model head: cross-entropy of the logits z = x W^T + b with class indices y,
    computed over chunks of rows so that no (N, V) tensor of logits ever exists.

    x (*, d) flattened to N rows, W (V, d), b (V,) (or broadcast to it) or None, y (*) class
    indices (rows with y = ignore_index contribute nothing); label smoothing a; class weights
    w (V,) or None (w = 1). Per chunk of rows, with z = x W^T + b (c, V) and z~ = log_softmax(z):
    Forward:   e_n = -(1 - a) w_{y_n} z~_{n, y_n} - (a / V) sum_c w_c z~_{nc}   (0 where y_n is ignored)
               L = reduce(e)   (mean: sum(e) / sum of w_{y_n} over the non-ignored rows, as torch)
    Backward:  p = softmax(z),   G'_n = p_n ((1 - a) w_{y_n} + (a / V) sum_c w_c)
                                        - (1 - a) w_{y_n} onehot(y_n) - (a / V) w,   G = ge G'
               (w = 1: G'_n = p_n - (1 - a) onehot(y_n) - a / V)
               grad_x = ge (G' W),   grad_W = G'^T (ge x),   grad_b = G'^T ge
               (ge_n = g, g / that sum of weights, or g_n with reduction 'none'; 0 on
               ignored rows); no gradient for w (as torch)
    Two modes (``fused``), both exact (the same formulas, no approximation):
      recompute (fused=None):  Saved: x, W, b, y (nothing beyond the inputs);
               recomputed: each chunk's logits z and p = softmax(z) in backward (one extra
               matmul N x d x V: ~4/3 the matmul time of the unfused head).
      fused (fused = which of x, W, b need a gradient; scalar loss only, i.e. reduction
               mean/sum, when one is needed): the gradients are formed chunk by chunk in the
               forward for g = 1 (Liger-Kernel's design) and backward multiplies them by g.
               Saved: grad_x (N, d), grad_W (V, d), grad_b (V,) of the inputs that need one
               (saved / torch's (N, V) log-probabilities = d/V + d/N); 3 matmuls as the
               unfused head; the gradients are computed even if backward never runs. With
               g = 1 (``loss.backward()``) backward returns the saved tensors themselves, which
               autograd then moves into ``.grad`` without a copy (no second (V, d) tensor).
    Time, saved bytes and peak memory of both modes against torch: experiments/benchmarks/heads.py.
    The loss has x's dtype, or ``out_dtype`` (float32 under autocast, as torch's cross_entropy).
    Double backward: no (first_order_only: create_graph=True raises). float16/bfloat16: z~, p and G' in float32,
    G' rounded once before each matmul, grad_W and grad_b summed over chunks in float32.
    NOTE: memory per chunk: z, z~ (c, V) opmath, z~ turned in place into p then G'; c is
    ``chunk_size`` rows (default: CHUNK_ELEMENTS // V). No per-row statistic is kept:
    recomputing softmax(z) is one fused kernel, as cheap as e^{z - logsumexp}.
    """

    @staticmethod
    def forward(x, weight, bias, target, class_weight, reduction, ignore_index, label_smoothing, chunk_size, fused,
                out_dtype):
        n_cls, d = weight.shape
        x2, t = x.reshape(-1, d), target.reshape(-1)
        a = label_smoothing
        bias = None if bias is None else bias.expand(n_cls)
        valid = t != ignore_index
        safe = torch.where(valid, t, 0).long().unsqueeze(1)  # (N, 1)
        acc = opmath(x.new_empty(())).dtype
        cw = None if class_weight is None else class_weight.to(acc)
        e = torch.zeros(x2.shape[0], dtype=acc, device=x.device)
        count = _head_count(valid, safe, cw)
        need_x, need_w, need_b = fused or (False, False, False)
        gx = torch.zeros(x2.shape, dtype=x.dtype, device=x.device) if need_x else None
        gw = torch.zeros(weight.shape, dtype=acc, device=x.device) if need_w else None
        gb = torch.zeros(n_cls, dtype=acc, device=x.device) if need_b else None
        if fused:
            scale = 1 / count.to(acc) if reduction == "mean" else torch.ones((), dtype=acc, device=x.device)
            ge = torch.where(valid, scale, 0)  # 0 rather than 0 * inf when every target is ignored
        if n_cls == 0:  # no classes: every target is ignored (else the functional raised)
            if a > 0:
                e.fill_(math.nan)  # a / C with C = 0, as torch
        else:
            rows = _head_rows(n_cls, chunk_size)
            for i in range(0, x2.shape[0], rows):
                sl = slice(i, i + rows)
                ls, e[sl] = _head_loss(_head_logits(x2[sl], weight, bias), safe[sl], valid[sl], a, cw)
                if fused:
                    _head_grads(ls.exp_(), ge[sl], safe[sl], a, x2[sl], weight,
                                None if gx is None else gx[sl], gw, gb, cw)
                del ls
        if reduction == "none":
            out = e.reshape(target.shape)
        else:
            out = e.sum() if reduction == "sum" else e.sum() / count
        return (own(out.to(out_dtype or x.dtype)), None if gx is None else gx.reshape(x.shape),
                None if gw is None else gw.to(weight.dtype), None if gb is None else gb.to(bias.dtype))

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x, weight, bias, target, class_weight, ctx.reduction, ctx.ignore_index, ctx.label_smoothing, ctx.chunk_size,
         fused, _) = inputs
        _, gx, gw, gb = output
        ctx.mark_non_differentiable(*[t for t in (gx, gw, gb) if t is not None])
        ctx.fused = fused is not None
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.save_for_backward(*((gx, gw, gb) if ctx.fused else (x, weight, bias, target, class_weight)))

    @staticmethod
    @first_order_only
    def backward(ctx, grad_out, _gx, _gw, _gb):
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and ctx.bias_shape is not None
        if ctx.fused:
            gx, gw, gb = ctx.saved_tensors
            if not bool(grad_out == 1):  # else (loss.backward()) the saved gradients are the answer
                gx, gw, gb = (None if t is None else t * grad_out for t in (gx, gw, gb))
            return (gx if need_x else None, gw if need_w else None,
                    sum_to_size(gb, ctx.bias_shape) if need_b else None) + (None,) * 8
        x, weight, bias, target, class_weight = ctx.saved_tensors
        n_cls, d = weight.shape
        x2, t = x.reshape(-1, d), target.reshape(-1)
        valid = t != ctx.ignore_index
        safe = torch.where(valid, t, 0).long().unsqueeze(1)
        acc = opmath(x.new_empty(())).dtype
        cw = None if class_weight is None else class_weight.to(acc)
        g = grad_out.to(acc)
        if ctx.reduction == "none":
            ge = torch.where(valid, g.reshape(-1), 0)
        else:
            ge = torch.where(valid, g / _head_count(valid, safe, cw) if ctx.reduction == "mean" else g, 0)
        gx = torch.zeros(x2.shape, dtype=x.dtype, device=x.device) if need_x else None
        gw = torch.zeros(weight.shape, dtype=acc, device=x.device) if need_w else None
        gb = torch.zeros(n_cls, dtype=acc, device=x.device) if need_b else None
        b = None if bias is None else bias.expand(n_cls)
        if n_cls > 0:
            rows = _head_rows(n_cls, ctx.chunk_size)
            for i in range(0, x2.shape[0], rows):
                sl = slice(i, i + rows)
                p = torch.softmax(_head_logits(x2[sl], weight, b), 1)
                _head_grads(p, ge[sl], safe[sl], ctx.label_smoothing, x2[sl], weight,
                            None if gx is None else gx[sl], gw, gb, cw)
                del p
        return (None if gx is None else gx.reshape(x.shape), None if gw is None else gw.to(weight.dtype),
                None if gb is None else sum_to_size(gb.to(bias.dtype), ctx.bias_shape)) + (None,) * 8


# ======================================================================================
# --- more pointwise losses: one pattern ---
# Each rule below is L = reduce(e), e an elementwise function of its tensor inputs (broadcast
# together; a weight, where the loss has one, is one of them). A rule states e and its
# partials once, as ``e(*inputs, *options)`` and ``partials(*inputs, *options)`` (one per
# tensor input, None where torch takes no gradient), evaluated in opmath; the shared
# forward reduces e, the shared backward is grad_i = sum_to_size(ge * de/d input_i).
# reduce: 'none' (e), 'sum', 'mean' (sum / numel(e)), 'batchmean' (sum / x.shape[0]; a 0-d x:
# the sum), and with ``rows`` e is first averaged over its last dim ('mean' over the rows).
# Saved: the tensor inputs.   Double backward: yes (the partials are differentiable ops).
# ======================================================================================
def _pointwise_forward(e_fn, tensors, reduction, options, rows=False):
    e = e_fn(*[None if t is None else opmath(t) for t in tensors], *options)
    if rows:
        e = e.sum(-1) / e.shape[-1]  # C = 0 (no classes): 0 / 0 = NaN, as torch
    if reduction == "sum" or (reduction == "batchmean" and tensors[0].dim() == 0):
        e = e.sum()
    elif reduction == "mean":
        e = e.mean()
    elif reduction == "batchmean":
        e = e.sum() / tensors[0].shape[0]
    return e.to(_out_dtype(*tensors))


def _pointwise_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:-2])
    ctx.reduction, ctx.options = inputs[-2:]


def _pointwise_grads(ctx, grad_out, partials, rows=False):
    tensors = ctx.saved_tensors
    fs = [None if t is None else opmath(t) for t in tensors]
    ds = partials(*fs, *ctx.options)
    shape = torch.broadcast_shapes(*[t.shape for t in tensors if t is not None])
    ge = opmath(grad_out)
    if rows:
        ge = ge / shape[-1]
    if ctx.reduction == "mean":
        ge = ge / (math.prod(shape[:-1]) if rows else math.prod(shape))
    elif ctx.reduction == "batchmean" and tensors[0].dim() > 0:
        ge = ge / tensors[0].shape[0]
    elif ctx.reduction == "none" and rows:
        ge = ge.unsqueeze(-1)
    grads = tuple(
        sum_to_size((ge * d).broadcast_to(shape), t.shape).to(t.dtype)  # (a partial may not depend on t)
        if (need and t is not None and d is not None) else None
        for t, d, need in zip(tensors, ds, ctx.needs_input_grad))
    return grads + (None, None)


# --- BCELoss ---
def _bce_e(x, t, w):
    e = (t - 1) * torch.clamp(torch.log1p(-x), min=-100) - t * torch.clamp(torch.log(x), min=-100)
    return e if w is None else e * w


def _bce_partials(x, t, w):
    w = 1 if w is None else w
    dx = (x - t) / torch.clamp((1 - x) * x, min=1e-12)
    dt = torch.clamp(torch.log1p(-x), min=-100) - torch.clamp(torch.log(x), min=-100)
    return dx * w, dt * w, None


class BCELossFunction(Rule):
    r"""Binary cross-entropy on probabilities x in [0, 1], weight w (broadcast, no gradient).

    Forward:   e = -w [t log x + (1 - t) log(1 - x)]   (each log clamped below at -100, as torch)
    Backward:  de/dx = w (x - t) / max(x (1 - x), 1e-12),   de/dt = w (log(1 - x) - log x) (clamped)
    Saved:     the tensor inputs           Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, t, w, reduction, options: _pointwise_forward(_bce_e, (x, t, w), reduction, ()))
    setup_context = staticmethod(_pointwise_setup)

    @staticmethod
    def backward(ctx, grad_out):
        return _pointwise_grads(ctx, grad_out, _bce_partials)


# --- KLDivLoss ---
def _kl_div_e(x, t, log_target):
    return torch.exp(t) * (t - x) if log_target else torch.xlogy(t, t) - t * x


def _kl_div_partials(x, t, log_target):
    if log_target:
        et = torch.exp(t)
        return -et, et * (t - x + 1)
    # d/dt xlogy(t, t) as torch's autograd takes it: xlogy(t != 0, t) + t / t (NaN at t = 0)
    return -t, torch.xlogy((t != 0).to(t.dtype), t) + t / t - x


class KLDivLossFunction(Rule):
    r"""Kullback-Leibler divergence of the target from log-probabilities x.

    Forward:   e = t log t - t x            (xlogy: 0 at t = 0)
               e = e^t (t - x)              (log_target: t holds log-probabilities)
    Backward:  de/dx = -t,   de/dt = log t + 1 - x   (torch's: log t taken as 0 at t = 0, and
               t / t for the 1, so NaN at t = 0, as torch's autograd of xlogy)
               log_target: de/dx = -e^t,   de/dt = e^t (t - x + 1)
    reduction 'batchmean': sum / x.shape[0], as torch.
    Saved:     the tensor inputs           Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, t, reduction, options: _pointwise_forward(_kl_div_e, (x, t), reduction, options))
    setup_context = staticmethod(_pointwise_setup)

    @staticmethod
    def backward(ctx, grad_out):
        return _pointwise_grads(ctx, grad_out, _kl_div_partials)


# --- PoissonNLLLoss ---
def _stirling(t):
    return t * torch.log(t) - t + 0.5 * torch.log(2 * math.pi * t)


def _poisson_nll_e(x, t, log_input, full, eps):
    e = torch.exp(x) - t * x if log_input else x - t * torch.log(x + eps)
    return e + _stirling(t).masked_fill(t <= 1, 0) if full else e


def _poisson_nll_partials(x, t, log_input, full, eps):
    if log_input:
        dx, dt = torch.exp(x) - t, -x
    else:
        dx, dt = 1 - t / (x + eps), -torch.log(x + eps)
    if full:  # the masked Stirling term's slope times [t > 1]: NaN at t <= 0 as torch's autograd
        dt = dt + (torch.log(t) + 0.5 / t) * (t > 1).to(t.dtype)
    return dx, dt


class PoissonNLLLossFunction(Rule):
    r"""Negative log-likelihood of a Poisson target t with rate e^x (log_input) or x.

    Forward:   e = e^x - t x                      (log_input)
               e = x - t log(x + eps)             (otherwise)
               full: + t log t - t + log(2 pi t) / 2 where t > 1 (Stirling), as torch
    Backward:  log_input: de/dx = e^x - t,  de/dt = -x
               otherwise: de/dx = 1 - t / (x + eps),  de/dt = -log(x + eps)
               full: de/dt += (log t + 1 / (2t)) [t > 1]
    Saved:     the tensor inputs           Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, t, reduction, options: _pointwise_forward(_poisson_nll_e, (x, t), reduction,
                                                                               options))
    setup_context = staticmethod(_pointwise_setup)

    @staticmethod
    def backward(ctx, grad_out):
        return _pointwise_grads(ctx, grad_out, _poisson_nll_partials)


# --- GaussianNLLLoss ---
def _gaussian_nll_e(x, t, var, full, eps):
    v = torch.clamp(var, min=eps)
    e = 0.5 * (torch.log(v) + (x - t) ** 2 / v)
    return e + 0.5 * math.log(2 * math.pi) if full else e


def _gaussian_nll_partials(x, t, var, full, eps):
    v = torch.clamp(var, min=eps)
    r = (x - t) / v
    return r, -r, 0.5 * (1 / v - r * r)


class GaussianNLLLossFunction(Rule):
    r"""Negative log-likelihood of t under N(x, var), var clamped below at eps.

    Forward:   v = max(var, eps),   e = (log v + (x - t)^2 / v) / 2   (full: + log(2 pi) / 2)
    Backward:  r = (x - t) / v,   de/dx = r,   de/dt = -r,   de/dvar = (1 / v - r^2) / 2
               (the clamp passes the gradient unchanged, as torch's clamp under no_grad)
    Saved:     the tensor inputs           Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, t, var, reduction, options: _pointwise_forward(_gaussian_nll_e, (x, t, var),
                                                                                    reduction, options))
    setup_context = staticmethod(_pointwise_setup)

    @staticmethod
    def backward(ctx, grad_out):
        return _pointwise_grads(ctx, grad_out, _gaussian_nll_partials)


# --- SoftMarginLoss ---
def _soft_margin_e(x, t):
    return torch.log1p(torch.exp(-t * x))


def _soft_margin_partials(x, t):
    return -t * torch.sigmoid(-t * x), None


class SoftMarginLossFunction(Rule):
    r"""Forward:   e = log(1 + e^{-t x})
    Backward:  de/dx = -t s(-t x)            (no gradient for t, as torch)
    Saved:     the tensor inputs           Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, t, reduction, options: _pointwise_forward(_soft_margin_e, (x, t), reduction, ()))
    setup_context = staticmethod(_pointwise_setup)

    @staticmethod
    def backward(ctx, grad_out):
        return _pointwise_grads(ctx, grad_out, _soft_margin_partials)


# --- HingeEmbeddingLoss ---
def _hinge_embedding_e(x, t, margin):
    return torch.where(t != 1, torch.clamp(margin - x, min=0), 0) + torch.where(t != -1, x, 0)


def _hinge_embedding_partials(x, t, margin):
    return (t != -1).to(x.dtype) - ((t != 1) & (margin - x >= 0)).to(x.dtype), None


class HingeEmbeddingLossFunction(Rule):
    r"""Forward:   e = [t != 1] max(0, margin - x) + [t != -1] x     (t is 1 or -1; as torch's formula)
    Backward:  de/dx = [t != -1] - [t != 1][margin - x >= 0]         (no gradient for t, as torch)
    Saved:     the tensor inputs           Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, t, reduction, options: _pointwise_forward(_hinge_embedding_e, (x, t), reduction,
                                                                               options))
    setup_context = staticmethod(_pointwise_setup)

    @staticmethod
    def backward(ctx, grad_out):
        return _pointwise_grads(ctx, grad_out, _hinge_embedding_partials)


# --- MarginRankingLoss ---
def _margin_ranking_e(x1, x2, t, margin):
    return torch.clamp(-t * (x1 - x2) + margin, min=0)


def _margin_ranking_partials(x1, x2, t, margin):
    on = (-t * (x1 - x2) + margin >= 0).to(x1.dtype)
    return -t * on, t * on, -(x1 - x2) * on


class MarginRankingLossFunction(Rule):
    r"""Forward:   e = max(0, -t (x1 - x2) + margin)
    Backward:  a = [-t (x1 - x2) + margin >= 0]:  de/dx1 = -t a,  de/dx2 = t a,  de/dt = -(x1 - x2) a
    Saved:     the tensor inputs           Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x1, x2, t, reduction, options: _pointwise_forward(
        _margin_ranking_e, (x1, x2, t), reduction, options))
    setup_context = staticmethod(_pointwise_setup)

    @staticmethod
    def backward(ctx, grad_out):
        return _pointwise_grads(ctx, grad_out, _margin_ranking_partials)


# --- MultiLabelSoftMarginLoss ---
def _multilabel_soft_margin_e(x, t, w):
    logsig = torch.nn.functional.logsigmoid
    e = -(t * logsig(x) + (1 - t) * logsig(-x))
    return e if w is None else e * w


def _multilabel_soft_margin_partials(x, t, w):
    dw = None if w is None else _multilabel_soft_margin_e(x, t, None)
    dx, dt = torch.sigmoid(x) - t, -x
    return (dx, dt, dw) if w is None else (dx * w, dt * w, dw)


class MultiLabelSoftMarginLossFunction(Rule):
    r"""One-vs-all logistic loss over the C classes (last dim), class weight w (C,) or None.

    Forward:   e_c = -w_c [t_c logsigmoid(x_c) + (1 - t_c) logsigmoid(-x_c)],   averaged over c per
               row (sum / C), then reduced over the rows ('mean': over rows, as torch)
    Backward:  de/dx = w (s(x) - t),   de/dt = -w x,   de/dw = e / w (the unweighted term), each / C
    Saved:     the tensor inputs           Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, t, w, reduction, options: _pointwise_forward(
        _multilabel_soft_margin_e, (x, t, w), reduction, (), rows=True))
    setup_context = staticmethod(_pointwise_setup)

    @staticmethod
    def backward(ctx, grad_out):
        return _pointwise_grads(ctx, grad_out, _multilabel_soft_margin_partials, rows=True)


# ======================================================================================
# --- row losses: one loss per row, reduced over the rows (_reduce / _elem_grad above) ---
# ======================================================================================
def _row_grad(ctx, grad_out, n):
    """ge (n,): the gradient reaching each row's loss (mean: g / n)."""
    ge = _elem_grad(opmath(grad_out), n, None, ctx.reduction, False)
    return ge.expand(n) if ge.dim() == 0 else ge.reshape(n)


# --- CosineEmbeddingLoss ---
# torch's EPSILON in cosine_embedding_loss is a float constant: 1e-12 rounded to float32 (9.99999996e-13), also
# in float64, where it is visible (2e-9 relative) in the gradient at a row of zeros (d c / d x2 = x1 / sqrt(m1 eps))
_COSINE_EPS = float(torch.tensor(1e-12, dtype=torch.float32))


class CosineEmbeddingLossFunction(Rule):
    r"""Rows x1, x2 (N, D) (or (D,) with a 0-d target; broadcast), target t in {1, -1}.

    Forward:   m_k = sum(x_k^2) + 1e-12,   c = sum(x1 x2) / sqrt(m1 m2)     (per row, as torch)
               e = 1 - c if t = 1;   max(0, c - margin) if t = -1;   0 otherwise
    Backward:  de/dc = -[t = 1] + [t = -1][c - margin >= 0]
               dc/dx1 = x2 / sqrt(m1 m2) - c x1 / m1,   dc/dx2 = x1 / sqrt(m1 m2) - c x2 / m2
               (no gradient for t, as torch)
               A row whose m_k overflows (inf): c = 0 as torch, and the other input's gradient is NaN there, as
               torch's composite (its product m1 m2 sends 0 * inf to it), never a silent 0
    Saved:     x1, x2, t                 Double backward: yes
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x1, x2, t, margin, reduction):
        a, b = opmath(x1), opmath(x2)
        c = (a * b).sum(-1) / ((a * a).sum(-1) + _COSINE_EPS).mul((b * b).sum(-1) + _COSINE_EPS).sqrt()
        e = torch.where(t == 1, 1 - c, 0) + torch.where(t == -1, (c - margin).clamp_min(0), 0)
        return _reduce(e, None, reduction, False).to(_out_dtype(x1, x2))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, t, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(x1, x2, t)

    @staticmethod
    def backward(ctx, grad_out):
        x1, x2, t = ctx.saved_tensors
        a, b = opmath(x1), opmath(x2)
        m1, m2 = (a * a).sum(-1, keepdim=True) + _COSINE_EPS, (b * b).sum(-1, keepdim=True) + _COSINE_EPS
        den = (m1 * m2).sqrt()
        c = (a * b).sum(-1, keepdim=True) / den
        tt = t.unsqueeze(-1)
        dc = -(tt == 1).to(a.dtype) + ((tt == -1) & (c - ctx.margin >= 0)).to(a.dtype)
        n = math.prod(torch.broadcast_shapes(c.shape[:-1], t.shape))
        ge = _elem_grad(opmath(grad_out), n, None, ctx.reduction, False)
        ge = (ge if ge.dim() == 0 else ge.unsqueeze(-1)) * dc
        nan = a.new_full((), math.nan)
        grad_x1 = grad_x2 = None
        if ctx.needs_input_grad[0]:
            g1 = torch.where(m2.isinf(), nan, ge * (b / den - c * a / m1))
            grad_x1 = sum_to_size(g1, x1.shape).to(x1.dtype)
        if ctx.needs_input_grad[1]:
            g2 = torch.where(m1.isinf(), nan, ge * (a / den - c * b / m2))
            grad_x2 = sum_to_size(g2, x2.shape).to(x2.dtype)
        return grad_x1, grad_x2, None, None, None


# --- TripletMarginLoss / TripletMarginWithDistanceLoss: the hinge on two distances ---
class TripletHingeFunction(Rule):
    r"""The hinge of both triplet losses, on distances computed before it (triplet_margin_loss: our
    :class:`~torch_bp.ops.distance.PairwiseDistanceFunction`; with_distance: the user's function).

    Forward:   n = min(d_an, d_pn) with ``swap`` (d_pn given), else d_an
               e = max(margin + d_ap - n, 0)
    Backward:  a = [margin + d_ap - n >= 0]:   grad_d_ap = ge a,   grad_n = -ge a
               min: grad_n to the smaller of d_an, d_pn, halved between them at a tie (torch's minimum)
    Saved:     d_ap, d_an, d_pn              Double backward: yes
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(d_ap, d_an, d_pn, margin, reduction):
        n = d_an if d_pn is None else torch.minimum(d_an, d_pn)
        e = (margin + opmath(d_ap) - opmath(n)).clamp_min(0)
        return _reduce(e, None, reduction, False).to(_out_dtype(d_ap, d_an, d_pn))

    @staticmethod
    def setup_context(ctx, inputs, output):
        d_ap, d_an, d_pn, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(d_ap, d_an, d_pn)

    @staticmethod
    def backward(ctx, grad_out):
        d_ap, d_an, d_pn = ctx.saved_tensors
        n = d_an if d_pn is None else torch.minimum(d_an, d_pn)
        on = (ctx.margin + opmath(d_ap) - opmath(n) >= 0).to(opmath(d_ap).dtype)
        shape = torch.broadcast_shapes(d_ap.shape, d_an.shape, *(() if d_pn is None else (d_pn.shape,)))
        ge = _elem_grad(opmath(grad_out), math.prod(shape), None, ctx.reduction, False) * on
        grad_an = grad_pn = None
        if d_pn is None:
            g_an = -ge
        else:
            half = torch.where(d_an == d_pn, 0.5, 1.0)
            g_an = torch.where(d_an <= d_pn, -ge * half, 0)
            g_pn = torch.where(d_pn <= d_an, -ge * half, 0)
            if ctx.needs_input_grad[2]:
                grad_pn = sum_to_size(g_pn, d_pn.shape).to(d_pn.dtype)
        grad_ap = sum_to_size(ge, d_ap.shape).to(d_ap.dtype) if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            grad_an = sum_to_size(g_an, d_an.shape).to(d_an.dtype)
        return grad_ap, grad_an, grad_pn, None, None


# --- MultiMarginLoss ---
class MultiMarginLossFunction(Rule):
    r"""Multi-class hinge: x (N, C), y (N,) class indices, class weight w (C,) or None, p in {1, 2}.

    Forward:   z_i = margin - x_y + x_i,   e = w_y sum_{i != y, z_i > 0} z_i^p / C   (a NaN z_i is skipped, as torch)
    Backward:  for i != y with z_i > 0 (strictly, as torch):  h_i = w_y p z_i^{p-1} / C,
               de/dx_i = h_i,   de/dx_y = -sum_i h_i          (no gradient for y, w)
    Saved:     x, y, w                   Double backward: yes
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, y, w, p, margin, reduction):
        z, keep, wy = _multi_margin_terms(opmath(x), y, w, margin)
        e = torch.where((z > 0) & (keep > 0), z, 0).pow(p).sum(-1) * wy / x.shape[-1]  # selects: NaN z skipped
        return _reduce(e, None, reduction, False).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, w, ctx.p, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(x, y, w)

    @staticmethod
    def backward(ctx, grad_out):
        x, y, w = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        xf = opmath(x)
        z, keep, wy = _multi_margin_terms(xf, y, w, ctx.margin)
        on = (keep > 0) & (z > 0)  # selects: a skipped (or NaN) z gives no gradient, whatever w_y is, as torch
        scale = (wy / x.shape[-1] * _row_grad(ctx, grad_out, y.numel()).reshape(wy.shape)).unsqueeze(-1)
        h = torch.where(on, scale if ctx.p == 1 else 2 * z * scale, 0)
        grad = h.scatter_add(-1, y.unsqueeze(-1), -h.sum(-1, keepdim=True))
        return grad.to(x.dtype), None, None, None, None, None


def _multi_margin_terms(xf, y, w, margin):
    """z = margin - x_y + x (N, C), keep = [i != y] (x's dtype), w_y (N,) (1 without weights)."""
    yy = y.unsqueeze(-1)
    z = margin - xf.gather(-1, yy) + xf
    keep = torch.ones_like(xf).scatter(-1, yy, 0)
    wy = torch.ones_like(y, dtype=xf.dtype) if w is None else opmath(w)[y]
    return z, keep, wy


# --- MultiLabelMarginLoss ---
class MultiLabelMarginLossFunction(Rule):
    r"""Multi-label hinge: x (N, C), targets y (N, C) of class indices ended by the first -1.

    With J = the listed targets of a row, and i over the classes not in J:
    Forward:   z_ji = 1 - (x_j - x_i),   e = sum_{j in J} sum_{i not in J, z_ji > 0} z_ji / C  (NaN skipped, as torch)
    Backward:  a_ji = [z_ji > 0] (strictly, as torch):  de/dx_i = sum_j a_ji / C,
               de/dx_j = -sum_i a_ji / C                 (no gradient for y)
    Saved:     x, y                      Double backward: yes (the gradient is constant in x)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, y, reduction):
        z, pairs = _multilabel_margin_terms(opmath(x), y)
        e = torch.where((z > 0) & pairs, z, 0).sum((-2, -1)) / x.shape[-1]  # selects: a NaN z is skipped
        return _reduce(e, None, reduction, False).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, ctx.reduction = inputs
        ctx.save_for_backward(x, y)

    @staticmethod
    def backward(ctx, grad_out):
        x, y = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        xf = opmath(x)
        z, pairs = _multilabel_margin_terms(xf, y)
        n = y.numel() // y.shape[-1]
        ge = _row_grad(ctx, grad_out, n).reshape(y.shape[:-1] + (1, 1)) / x.shape[-1]
        a = ((z > 0) & pairs).to(xf.dtype) * ge              # (..., j, i)
        safe = torch.where(_listed(y), y, 0)
        grad = a.sum(-2).scatter_add(-1, safe, -a.sum(-1))     # pairs are 0 on unlisted j
        return grad.to(x.dtype), None, None


def _listed(y):
    """[y_j is listed]: before the first -1 of its row."""
    return (y < 0).long().cumsum(-1) == 0


def _multilabel_margin_terms(xf, y):
    """z_ji = 1 - x_{y_j} + x_i (..., C, C) and the pairs counted: j listed, i not a listed target."""
    listed = _listed(y)
    safe = torch.where(listed, y, 0)
    is_target = torch.zeros_like(safe).scatter_add(-1, safe, listed.long()) > 0  # (duplicate indices: add)
    z = 1 - xf.gather(-1, safe).unsqueeze(-1) + xf.unsqueeze(-2)
    pairs = listed.unsqueeze(-1) & ~is_target.unsqueeze(-2)
    return z, pairs


# --- CTCLoss ---
def _lse3(a, b, c):
    """log(exp(a) + exp(b) + exp(c)) elementwise, -inf where all three are -inf."""
    m = torch.maximum(torch.maximum(a, b), c)
    m = torch.where(torch.isinf(m) & (m < 0), 0, m)  # -inf - -inf is nan: shift by 0 there
    return torch.log(torch.exp(a - m) + torch.exp(b - m) + torch.exp(c - m)) + m


def _shift(x, k, side):
    """x (N, S') shifted by k along dim 1, filled with -inf: ``side="right"`` gives x[:, s - k] at s,
    ``"left"`` gives x[:, s + k]."""
    if k >= x.shape[1]:
        return torch.full_like(x, -math.inf)
    pad = x.new_full((x.shape[0], k), -math.inf)
    return torch.cat([pad, x[:, :-k]], 1) if side == "right" else torch.cat([x[:, k:], pad], 1)


class CTCLossFunction(Rule):
    r"""Connectionist temporal classification loss (``F.ctc_loss``), torch's CPU kernel written out in log space.

    Notation: log_probs lp (T, N, C), targets (N, S) (padded; positions k >= L_b are ignored), input lengths
    T_b, target lengths L_b, blank. The extended target of batch b is l'_s (s = 0 .. 2S): l'_{2k} = blank,
    l'_{2k+1} = targets[b, k]; a skip s-2 -> s is allowed where s is odd, s >= 2 and l'_s != l'_{s-2}.
    Forward:   alpha[0, s] = lp[0, l'_s] for s in {0, 1}, else -inf;
               alpha[t, s] = lp[t, l'_s] + lse(alpha[t-1, s], alpha[t-1, s-1], alpha[t-1, s-2] if skip_s)
               nll_b = -lse(alpha[T_b-1, 2L_b], alpha[T_b-1, 2L_b-1] if L_b > 0)   (T_b = 0: 0 if L_b = 0, else inf)
               zero_infinity: an infinite nll_b gives loss 0;
               reduction: none: loss_b (0-d for an unbatched input); sum: sum_b loss_b; mean: mean_b (loss_b / max(L_b, 1))
    Backward:  beta[T_b-1, s] = lp[T_b-1, l'_s] for s in {2L_b, 2L_b-1 (L_b > 0)}, else -inf;
               beta[t, s] = lp[t, l'_s] + lse(beta[t+1, s], beta[t+1, s+1], beta[t+1, s+2] if skip_{s+2})
               (t < T_b - 1; -inf for t >= T_b). With g_b the gradient reaching loss_b
               (none: g[b]; sum: g; mean: g / (N max(L_b, 1))):
               grad_lp[t, b, c] = g_b (exp(lp[t, b, c]) - exp(lse_{s: l'_s = c}(alpha[t, s] + beta[t, s]) + nll_b - lp[t, b, c]))
               for t < T_b; 0 for t >= T_b, and 0 for every t where zero_infinity and nll_b = inf.
               NOTE: torch's convention: the term exp(lp) is not the derivative of the loss in free log_probs (that
               is the second term only); it makes the gradient exact for normalised log_probs fed through
               log_softmax (the exp(lp) term vanishes in log_softmax's backward), which is how CTC is used. An
               infinite nll without zero_infinity gives nan in rows t < T_b, as torch.
    Saved:     lp, the extended targets l' (N, 2S+1), skip mask, T_b, L_b, alpha (T, N, 2S+1), nll (N,)
    Double backward: no (torch's ctc_loss has none either)
    """

    @staticmethod
    def forward(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, unbatched):
        lp = log_probs                                                   # (T, N, C)
        t_max, n = lp.shape[0], lp.shape[1]
        ext, skip = _ctc_extended(targets, blank)                        # (N, S'), (N, S')
        lp_ext = lp.gather(2, ext.unsqueeze(0).expand(t_max, n, ext.shape[1]))  # (T, N, S'): lp[t, l'_s]
        alpha = lp.new_full(lp_ext.shape, -math.inf)
        alpha[0, :, :2] = lp_ext[0, :, :2]
        for t in range(1, t_max):
            prev = alpha[t - 1]
            alpha[t] = lp_ext[t] + _lse3(prev, _shift(prev, 1, "right"),
                                         torch.where(skip, _shift(prev, 2, "right"), -math.inf))
        last = (input_lengths - 1).clamp(min=0)
        end = alpha[last, torch.arange(n, device=lp.device)]             # (N, S'): alpha[T_b - 1]
        s_end = (2 * target_lengths).unsqueeze(1)
        a1 = end.gather(1, s_end).squeeze(1)
        a2 = torch.where(target_lengths > 0, end.gather(1, (s_end - 1).clamp(min=0)).squeeze(1), -math.inf)
        nll = -_lse3(a1, a2, torch.full_like(a1, -math.inf))
        nll = torch.where(input_lengths == 0, torch.where(target_lengths == 0, 0.0, math.inf).to(lp.dtype), nll)
        loss = torch.where(nll == math.inf, 0, nll) if zero_infinity else nll
        if reduction == "mean":
            loss = (loss / target_lengths.clamp(min=1).to(lp.dtype)).mean()
        elif reduction == "sum":
            loss = loss.sum()
        elif unbatched:  # reduction none of an unbatched input: a 0-d loss
            loss = loss[0]
        return loss.clone(), nll, alpha

    @staticmethod
    def setup_context(ctx, inputs, output):
        log_probs, targets, input_lengths, target_lengths, ctx.blank, ctx.reduction, ctx.zero_infinity, _ = inputs
        _, nll, alpha = output
        ctx.mark_non_differentiable(nll, alpha)
        ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths, nll, alpha)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_loss, _grad_nll, _grad_alpha):
        lp, targets, input_lengths, target_lengths, nll, alpha = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return (None,) * 8
        t_max, n, c = lp.shape
        ext, skip = _ctc_extended(targets, ctx.blank)
        s_len = ext.shape[1]
        lp_ext = lp.gather(2, ext.unsqueeze(0).expand(t_max, n, s_len))  # (T, N, S')
        s_idx = torch.arange(s_len, device=lp.device)
        tl = target_lengths.unsqueeze(1)
        at_end = (s_idx == 2 * tl) | ((s_idx == 2 * tl - 1) & (tl > 0))  # (N, S'): where beta starts
        skip_next = _shift(skip.to(lp.dtype), 2, "left") > 0              # skip_{s+2}
        beta = lp.new_full(lp_ext.shape, -math.inf)
        nxt = lp.new_full((n, s_len), -math.inf)
        for t in range(t_max - 1, -1, -1):
            rec = lp_ext[t] + _lse3(nxt, _shift(nxt, 1, "left"), torch.where(skip_next, _shift(nxt, 2, "left"), -math.inf))
            start = torch.where(at_end, lp_ext[t], -math.inf)
            here = (t == input_lengths - 1).unsqueeze(1)
            inside = (t < input_lengths - 1).unsqueeze(1)
            nxt = torch.where(here, start, torch.where(inside, rec, -math.inf))
            beta[t] = nxt
        valid_t = (torch.arange(t_max, device=lp.device).unsqueeze(1) < input_lengths).unsqueeze(2)  # (T, N, 1)
        # states that cannot reach the end (beta = -inf) contribute nothing, whatever alpha holds there
        ab = torch.where(valid_t & (beta > -math.inf), alpha + beta, -math.inf)  # (T, N, S')
        # lse over the s with l'_s = c: a per-class max, then a scatter-add of exp
        idx = ext.unsqueeze(0).expand(t_max, n, s_len)
        m = lp.new_full((t_max, n, c), -math.inf).scatter_reduce(2, idx, ab, "amax")
        m = torch.where(torch.isinf(m), 0, m)
        collected = torch.log(lp.new_zeros(t_max, n, c).scatter_add(2, idx, torch.exp(ab - m.gather(2, idx)))) + m
        if ctx.reduction in ("none", "sum"):
            g = grad_loss.expand(n)
        else:
            g = grad_loss / (n * target_lengths.clamp(min=1).to(lp.dtype))
        grad = (torch.exp(lp) - torch.exp(collected + nll.view(1, n, 1) - lp)) * g.view(1, n, 1)
        keep = valid_t
        if ctx.zero_infinity:
            keep = keep & (nll != math.inf).view(1, n, 1)
        return torch.where(keep, grad, 0), None, None, None, None, None, None, None


def _ctc_extended(targets, blank):
    """The extended targets l' (N, 2S+1) of padded targets (N, S), and where the skip s-2 -> s is allowed."""
    n, s = targets.shape
    ext = targets.new_full((n, 2 * s + 1), blank)
    ext[:, 1::2] = targets
    skip = torch.zeros_like(ext, dtype=torch.bool)
    skip[:, 3::2] = targets[:, 1:] != targets[:, :-1]
    return ext, skip


# --- AdaptiveLogSoftmaxWithLoss ---
def _asm_logits(x, w, b=None):
    """x w^T (+ b) computed in float32 for low precision and rounded to x's dtype, as torch's linear, then upcast
    again for the log-softmax (opmath)."""
    y = opmath(x) @ opmath(w).t()
    if b is not None:
        y = y + opmath(b)
    return opmath(y.to(x.dtype))


def _asm_clusters(target, cutoffs):
    """Per tail cluster i (1 .. len(cutoffs) - 1): the rows whose target falls in [cutoffs[i-1], cutoffs[i])."""
    return [torch.nonzero((target >= lo) & (target < hi)).reshape(-1) for lo, hi in zip(cutoffs[:-1], cutoffs[1:])]


def _onehot(index, like):
    """(N, M) zeros like ``like`` with 1 at [n, index[n]]."""
    return torch.zeros_like(like).scatter_(1, index.unsqueeze(1), 1)


def _asm_linear_grads(d_out, x, w, needs_x, needs_w):
    """Gradients of y = x w^T given d_out = dL/dy: (dL/dx, dL/dw)."""
    return (d_out @ w if needs_x else None), (d_out.t() @ x if needs_w else None)


class AdaptiveLogSoftmaxFunction(Rule):
    r"""torch.nn.AdaptiveLogSoftmaxWithLoss's forward (Grave et al.'s adaptive softmax), as one rule.

    Notation: x (N, d), target t (N,), cutoffs c_0 < ... < c_K (c_0 the shortlist size s, c_K = n_classes),
    head H = x W_h^T + b_h (N, s + K), tail cluster i (1..K) for the rows R_i with t in [c_{i-1}, c_i):
    h_i = x[R_i] P_i^T, C_i = h_i O_i^T (|R_i|, c_i - c_{i-1}); lsm = log_softmax over the last dim.
    Forward:   k_n = t_n if t_n < s, else s + i - 1 for the cluster i of row n;
               out_n = lsm(H)[n, k_n] + (n in R_i: lsm(C_i)[n, t_n - c_{i-1}]);   loss = -mean_n out_n
               (unbatched: out is 0-d)
    Backward:  g_n = grad_out_n - grad_loss / N
               dH = g * (onehot(k) - softmax(H));  grad_x = dH W_h;  grad_W_h = dH^T x;  grad_b_h = sum_n dH
               dC_i = g[R_i] * (onehot(t - c_{i-1}) - softmax(C_i));  grad_O_i = dC_i^T h_i;
               dh_i = dC_i O_i;  grad_P_i = dh_i^T x[R_i];  grad_x[R_i] += dh_i P_i
    Saved:     x, t, the weights (H, h_i, C_i recomputed in backward)
    Double backward: no
    Logits are rounded to x's dtype before the log-softmax (as torch's linear), everything else in float32 for
    bfloat16/float16.
    """

    @staticmethod
    def forward(input, target, cutoffs, unbatched, head_weight, head_bias, *tail_weights):
        s = cutoffs[0]
        head = _asm_logits(input, head_weight, head_bias)                       # (N, s + K)
        head_lp = torch.log_softmax(head, 1)
        k = target.clone()
        out = head.new_zeros(target.shape[0])
        for i, rows in enumerate(_asm_clusters(target, cutoffs), start=1):
            if rows.numel() == 0:
                continue
            k[rows] = s + i - 1
            proj, w_out = tail_weights[2 * (i - 1)], tail_weights[2 * i - 1]
            c = _asm_logits(_asm_logits(input[rows], proj).to(input.dtype), w_out)
            out[rows] = torch.log_softmax(c, 1).gather(1, (target[rows] - cutoffs[i - 1]).unsqueeze(1)).squeeze(1)
        out = out + head_lp.gather(1, k.unsqueeze(1)).squeeze(1)
        loss = (-out).mean()
        out = out.to(input.dtype)
        return (out[0].clone() if unbatched else out), loss.to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.cutoffs, ctx.unbatched, head_weight, head_bias, *tail = inputs
        ctx.has_bias = head_bias is not None
        ctx.save_for_backward(input, target, head_weight, head_bias, *tail)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_out, grad_loss):
        input, target, head_weight, head_bias, *tail = ctx.saved_tensors
        cutoffs, s, n = ctx.cutoffs, ctx.cutoffs[0], target.shape[0]
        needs = ctx.needs_input_grad
        x = opmath(input)
        g = opmath(grad_out).reshape(-1) - opmath(grad_loss) / n                   # (N,)
        head = _asm_logits(input, head_weight, head_bias)
        k = target.clone()
        clusters = _asm_clusters(target, cutoffs)
        for i, rows in enumerate(clusters, start=1):
            k[rows] = s + i - 1
        d_head = g.unsqueeze(1) * (_onehot(k, head) - torch.softmax(head, 1))      # (N, s + K)
        grad_x, grad_wh = _asm_linear_grads(d_head, x, opmath(head_weight), needs[0], needs[4])
        grad_bh = d_head.sum(0) if ctx.has_bias and needs[5] else None
        grad_tail = [None] * len(tail)
        for i, rows in enumerate(clusters, start=1):
            proj, w_out = tail[2 * (i - 1)], tail[2 * i - 1]
            if rows.numel() == 0:  # the cluster took no part (torch's module leaves its gradients None too)
                continue
            xr = x[rows]
            h = _asm_logits(input[rows], proj)
            c = _asm_logits(h.to(input.dtype), w_out)
            rel = target[rows] - cutoffs[i - 1]
            d_c = g[rows].unsqueeze(1) * (_onehot(rel, c) - torch.softmax(c, 1))  # (|R_i|, osz)
            d_h, grad_o = _asm_linear_grads(d_c, h, opmath(w_out), True, needs[6 + 2 * i - 1])
            d_xr, grad_p = _asm_linear_grads(d_h, xr, opmath(proj), needs[0], needs[6 + 2 * (i - 1)])
            grad_tail[2 * (i - 1)] = None if grad_p is None else grad_p.to(proj.dtype)
            grad_tail[2 * i - 1] = None if grad_o is None else grad_o.to(w_out.dtype)
            if needs[0]:
                grad_x = grad_x.index_add(0, rows, d_xr)
        return (None if grad_x is None else grad_x.to(input.dtype), None, None, None,
                None if grad_wh is None else grad_wh.to(head_weight.dtype),
                None if grad_bh is None else grad_bh.to(head_bias.dtype), *grad_tail)


class AdaptiveLogProbFunction(Rule):
    r"""torch.nn.AdaptiveLogSoftmaxWithLoss.log_prob: the log-probabilities of every class (notation above, with
    every tail cluster on every row).

    Forward:   out[:, :s] = lsm(H)[:, :s];   out[:, c_{i-1}:c_i] = lsm(C_i) + lsm(H)[:, s + i - 1]
    Backward:  with G = grad_out and G_i its block of cluster i:
               gH = [G[:, :s], sum_j G_1[:, j], ..., sum_j G_K[:, j]];   dH = gH - softmax(H) sum(gH)
               dC_i = G_i - softmax(C_i) sum(G_i);   then the linear chains as in AdaptiveLogSoftmaxFunction
    Saved:     x and the weights (H, h_i, C_i recomputed)
    Double backward: no
    """

    @staticmethod
    def forward(input, cutoffs, head_weight, head_bias, *tail_weights):
        s = cutoffs[0]
        head_lp = torch.log_softmax(_asm_logits(input, head_weight, head_bias), 1)
        parts = [head_lp[:, :s]]
        for i in range(1, len(cutoffs)):
            c = _asm_logits(_asm_logits(input, tail_weights[2 * (i - 1)]).to(input.dtype), tail_weights[2 * i - 1])
            parts.append(torch.log_softmax(c, 1) + head_lp[:, s + i - 1: s + i])
        return torch.cat(parts, 1).to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, ctx.cutoffs, head_weight, head_bias, *tail = inputs
        ctx.has_bias = head_bias is not None
        ctx.save_for_backward(input, head_weight, head_bias, *tail)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_out):
        input, head_weight, head_bias, *tail = ctx.saved_tensors
        cutoffs, s = ctx.cutoffs, ctx.cutoffs[0]
        needs = ctx.needs_input_grad
        x = opmath(input)
        grad = opmath(grad_out).reshape(x.shape[0], cutoffs[-1])                    # (N, n_classes)
        head = _asm_logits(input, head_weight, head_bias)
        blocks = [grad[:, lo:hi] for lo, hi in zip(cutoffs[:-1], cutoffs[1:])]
        g_head = torch.cat([grad[:, :s]] + [b.sum(1, keepdim=True) for b in blocks], 1)
        d_head = g_head - torch.softmax(head, 1) * g_head.sum(1, keepdim=True)
        grad_x, grad_wh = _asm_linear_grads(d_head, x, opmath(head_weight), needs[0], needs[2])
        grad_bh = d_head.sum(0) if ctx.has_bias and needs[3] else None
        grad_tail = []
        for i, block in enumerate(blocks, start=1):
            proj, w_out = tail[2 * (i - 1)], tail[2 * i - 1]
            h = _asm_logits(input, proj)
            c = _asm_logits(h.to(input.dtype), w_out)
            d_c = block - torch.softmax(c, 1) * block.sum(1, keepdim=True)
            d_h, grad_o = _asm_linear_grads(d_c, h, opmath(w_out), True, needs[4 + 2 * i - 1])
            d_x, grad_p = _asm_linear_grads(d_h, x, opmath(proj), needs[0], needs[4 + 2 * (i - 1)])
            grad_tail += [None if grad_p is None else grad_p.to(proj.dtype),
                          None if grad_o is None else grad_o.to(w_out.dtype)]
            if needs[0]:
                grad_x = grad_x + d_x
        return (None if grad_x is None else grad_x.to(input.dtype), None,
                None if grad_wh is None else grad_wh.to(head_weight.dtype),
                None if grad_bh is None else grad_bh.to(head_bias.dtype), *grad_tail)
