r"""Triton kernels of :mod:`torch_bp.ops.normalization`: LayerNorm and RMSNorm over the last D elements.

One program per row in forward (the row in registers: D <= 65536). Backward: each program
walks a contiguous range of rows, writes grad_x row by row and keeps its partial sums of
grad_w and grad_b in registers; the (programs, D) partial sums are then reduced over programs
(the two-stage reduction: no atomics, the same result on every run).
Statistics are float32 (the op schema's accumulation dtype), as is all arithmetic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block, programs

MAX_D = 1 << 16


@triton.jit
def _layer_norm_fwd_kernel(X, W, B, Y, MEAN, RSTD, D, eps,
                           HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr):
    """LayerNormFunction.forward (torch_bp/ops/normalization.py): statistics of x - x[0],
    mu = mean, r = (mean((x - mu)^2) + eps)^(-1/2) (NaN where the variance overflows), y = xh w + b."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < D
    x = tl.load(X + row * D + cols, mask=m, other=0.0).to(tl.float32)
    x0 = tl.load(X + row * D).to(tl.float32)
    xs = tl.where(m, x - x0, 0.0)
    mu = tl.sum(xs, 0) / D
    xc = tl.where(m, xs - mu, 0.0)
    var = tl.sum(xc * xc, 0) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    rstd = tl.where(var == float("inf"), float("nan"), rstd)
    y = xc * rstd
    if HAS_W:
        y = y * tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
    if HAS_B:
        y = y + tl.load(B + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(Y + row * D + cols, y.to(Y.dtype.element_ty), mask=m)
    tl.store(MEAN + row, mu)
    tl.store(RSTD + row, rstd)


@triton.jit
def _layer_norm_bwd_kernel(GY, X, W, MEAN, RSTD, GX, GW_PART, GB_PART, N, D, rows_per_prog,
                           HAS_W: tl.constexpr, NEED_X: tl.constexpr, NEED_W: tl.constexpr,
                           NEED_B: tl.constexpr, BLOCK: tl.constexpr):
    """LayerNormFunction.backward: xh = (x - x[0] - mu) r, g = grad_y w,
    grad_x = r (g - mean(g) - xh mean(g xh)); partial sums over this program's rows of
    grad_y xh (grad_w) and grad_y (grad_b)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    m = cols < D
    w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32) if HAS_W else tl.full((BLOCK,), 1.0, tl.float32)
    gw = tl.zeros((BLOCK,), tl.float32)
    gb = tl.zeros((BLOCK,), tl.float32)
    r0 = pid.to(tl.int64) * rows_per_prog
    r1 = tl.minimum(r0 + rows_per_prog, N)
    for row in range(r0, r1):
        x = tl.load(X + row * D + cols, mask=m, other=0.0).to(tl.float32)
        x0 = tl.load(X + row * D).to(tl.float32)
        gy = tl.load(GY + row * D + cols, mask=m, other=0.0).to(tl.float32)
        mu = tl.load(MEAN + row)
        rstd = tl.load(RSTD + row)
        xh = tl.where(m, (x - x0 - mu) * rstd, 0.0)
        if NEED_X:
            g = gy * w
            gx = rstd * (g - tl.sum(g, 0) / D - xh * (tl.sum(g * xh, 0) / D))
            tl.store(GX + row * D + cols, gx.to(GX.dtype.element_ty), mask=m)
        if NEED_W:
            gw += gy * xh
        if NEED_B:
            gb += gy
    if NEED_W:
        tl.store(GW_PART + pid * D + cols, gw, mask=m)
    if NEED_B:
        tl.store(GB_PART + pid * D + cols, gb, mask=m)


@triton.jit
def _rms_norm_fwd_kernel(X, W, Y, RSTD, D, eps, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    """RMSNormFunction.forward (torch_bp/ops/normalization.py): r = (mean(x^2) + eps)^(-1/2), y = x r w."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < D
    x = tl.load(X + row * D + cols, mask=m, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / D + eps)
    y = x * rstd
    if HAS_W:
        y = y * tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(Y + row * D + cols, y.to(Y.dtype.element_ty), mask=m)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_norm_bwd_kernel(GY, X, W, RSTD, GX, GW_PART, N, D, rows_per_prog,
                         HAS_W: tl.constexpr, NEED_X: tl.constexpr, NEED_W: tl.constexpr, BLOCK: tl.constexpr):
    """RMSNormFunction.backward: g = grad_y w, grad_x = r (g - x r^2 mean(g x)); partial sums over
    this program's rows of grad_y x r (grad_w)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    m = cols < D
    w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32) if HAS_W else tl.full((BLOCK,), 1.0, tl.float32)
    gw = tl.zeros((BLOCK,), tl.float32)
    r0 = pid.to(tl.int64) * rows_per_prog
    r1 = tl.minimum(r0 + rows_per_prog, N)
    for row in range(r0, r1):
        x = tl.load(X + row * D + cols, mask=m, other=0.0).to(tl.float32)
        gy = tl.load(GY + row * D + cols, mask=m, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        if NEED_X:
            g = gy * w
            gx = rstd * (g - x * (rstd * rstd) * (tl.sum(g * x, 0) / D))
            tl.store(GX + row * D + cols, gx.to(GX.dtype.element_ty), mask=m)
        if NEED_W:
            gw += gy * x * rstd
    if NEED_W:
        tl.store(GW_PART + pid * D + cols, gw, mask=m)


def _c(t):
    return None if t is None else t.contiguous()


def _check(x, d, name):
    if d > MAX_D:
        raise NotImplementedError(f"torch_bp::{name} (Triton): rows of more than {MAX_D} elements "
                                  f"(got {d}); the row is held in registers")


def layer_norm_fwd(x, weight, bias, d, eps):
    _check(x, d, "layer_norm_fwd")
    xc = x.contiguous()
    n = x.numel() // d
    y = torch.empty_like(xc)
    mean = torch.empty((n, 1), dtype=torch.float32, device=x.device)
    rstd = torch.empty((n, 1), dtype=torch.float32, device=x.device)
    if n:
        _layer_norm_fwd_kernel[(n,)](xc, _c(weight), _c(bias), y, mean, rstd, d, eps,
                                     HAS_W=weight is not None, HAS_B=bias is not None, BLOCK=block(d))
    return y, mean, rstd


def layer_norm_bwd(grad_y, x, weight, mean, rstd, d, output_mask):
    _check(x, d, "layer_norm_bwd")
    xc, gy = x.contiguous(), grad_y.contiguous()
    n = x.numel() // d
    need_x, need_w, need_b = output_mask
    need_w = bool(need_w) and weight is not None
    gx = torch.empty_like(xc) if need_x else None
    p = programs(x, n)
    gw_part = torch.zeros((p, d), dtype=torch.float32, device=x.device) if need_w else None
    gb_part = torch.zeros((p, d), dtype=torch.float32, device=x.device) if need_b else None
    if n:
        _layer_norm_bwd_kernel[(p,)](gy, xc, _c(weight), mean.contiguous(), rstd.contiguous(), gx, gw_part, gb_part,
                                     n, d, triton.cdiv(n, p),
                                     HAS_W=weight is not None, NEED_X=bool(need_x), NEED_W=need_w,
                                     NEED_B=bool(need_b), BLOCK=block(d))
    gw = gw_part.sum(0).to(weight.dtype).reshape(weight.shape) if need_w else None
    gb = gb_part.sum(0).to(x.dtype) if need_b else None
    return gx, gw, gb


def rms_norm_fwd(x, weight, d, eps):
    _check(x, d, "rms_norm_fwd")
    xc = x.contiguous()
    n = x.numel() // d
    y = torch.empty_like(xc)
    rstd = torch.empty((n, 1), dtype=torch.float32, device=x.device)
    if n:
        _rms_norm_fwd_kernel[(n,)](xc, _c(weight), y, rstd, d, eps, HAS_W=weight is not None, BLOCK=block(d))
    return y, rstd


def rms_norm_bwd(grad_y, x, weight, rstd, d, output_mask):
    _check(x, d, "rms_norm_bwd")
    xc, gy = x.contiguous(), grad_y.contiguous()
    n = x.numel() // d
    need_x, need_w = output_mask
    need_w = bool(need_w) and weight is not None
    gx = torch.empty_like(xc) if need_x else None
    p = programs(x, n)
    gw_part = torch.zeros((p, d), dtype=torch.float32, device=x.device) if need_w else None
    if n:
        _rms_norm_bwd_kernel[(p,)](gy, xc, _c(weight), rstd.contiguous(), gx, gw_part, n, d, triton.cdiv(n, p),
                                   HAS_W=weight is not None, NEED_X=bool(need_x), NEED_W=need_w, BLOCK=block(d))
    gw = gw_part.sum(0).to(weight.dtype).reshape(weight.shape) if need_w else None
    return gx, gw


OPS = {
    "layer_norm_fwd": layer_norm_fwd,
    "layer_norm_bwd": layer_norm_bwd,
    "rms_norm_fwd": rms_norm_fwd,
    "rms_norm_bwd": rms_norm_bwd,
}
