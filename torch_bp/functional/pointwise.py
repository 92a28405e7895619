"""``torch_bp.functional``: elementwise products and selection. See the package docstring.

What has no gradient (integer or bool operands, complex numbers, a non-bool condition) is torch's
own ``mul``/``where``: no backward node exists for a rule to run, and torch's errors stay torch's.
"""
from __future__ import annotations

import numbers

import torch

from ..ops import pointwise as _pw


def _real_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _result_dtype(a, b):
    """torch's result dtype for two floating tensors (``torch.result_type``, which torch.compile cannot
    trace): a 0-d tensor does not raise the dtype of a dimensioned one of the same category."""
    if a.dtype == b.dtype:
        return a.dtype
    if (a.dim() == 0) == (b.dim() == 0):
        return torch.promote_types(a.dtype, b.dtype)
    return (b if a.dim() == 0 else a).dtype


def mul(input, other):
    """``torch.mul(input, other)`` (``input * other``): for floating tensors and real numbers the product
    by :class:`torch_bp.ops.pointwise.MulFunction`. Tensor operands of different dtypes are first cast to
    torch's result dtype; anything else is torch's ``mul``."""
    a, b = (input, other) if isinstance(input, torch.Tensor) else (other, input)
    if not (isinstance(a, torch.Tensor) and a.is_floating_point()
            and ((isinstance(b, torch.Tensor) and b.is_floating_point()) or _real_number(b))):
        return torch.mul(input, other)
    if isinstance(b, torch.Tensor):
        dtype = _result_dtype(a, b)
        a, b = (t if t.dtype == dtype else t.to(dtype) for t in (a, b))
        if b.dim() == 0 and b.device != a.device:
            b = b.to(a.device)
    else:
        b = float(b)
    return _pw.MulFunction.apply(a, b)


def where(condition, input, other):
    """``torch.where(condition, input, other)``: for a bool condition and floating tensors or real numbers
    the selection by :class:`torch_bp.ops.pointwise.WhereFunction`. Tensor operands of different dtypes are
    first cast to the promoted dtype; a number takes the tensor operand's dtype, as torch's type promotion
    would; anything else is torch's ``where``."""
    tensors = [t for t in (input, other) if isinstance(t, torch.Tensor)]
    if (not isinstance(condition, torch.Tensor) or condition.dtype != torch.bool or not tensors
            or not all(t.is_floating_point() for t in tensors)
            or not all(isinstance(t, torch.Tensor) or _real_number(t) for t in (input, other))):
        return torch.where(condition, input, other)
    dtype = tensors[0].dtype if len(tensors) == 1 else _result_dtype(input, other)
    input, other = (t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype != dtype else t for t in (input, other))
    return _pw.WhereFunction.apply(condition, input, other)
