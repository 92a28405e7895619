"""``torch_bp.functional``: elementwise products. See the package docstring."""
from __future__ import annotations

import numbers

import torch

from ..ops import pointwise as _pw


def mul(input, other):
    """``torch.mul(input, other)`` (``input * other``) for floating tensors and numbers: the product by
    :class:`torch_bp.ops.pointwise.MulFunction`. Operands of different dtypes are first cast to the
    promoted dtype, as torch's type promotion would."""
    if not isinstance(input, torch.Tensor):
        input, other = other, input
    if not isinstance(input, torch.Tensor) or not input.is_floating_point():
        raise TypeError(f"torch_bp.functional.mul: expected a floating tensor operand, got {type(input).__name__}")
    if isinstance(other, torch.Tensor):
        dtype = torch.promote_types(input.dtype, other.dtype)
        if dtype != input.dtype:
            input = input.to(dtype)
        if dtype != other.dtype:
            other = other.to(dtype)
        if other.dim() == 0 and not other.requires_grad and other.device != input.device:
            other = other.to(input.device)
    elif isinstance(other, bool) or not isinstance(other, numbers.Real):
        raise TypeError(f"torch_bp.functional.mul: expected a tensor or a real number, got {type(other).__name__}")
    else:
        other = float(other)
    return _pw.MulFunction.apply(input, other)


def where(condition, input, other):
    """``torch.where(condition, input, other)`` for floating tensors and numbers, by
    :class:`torch_bp.ops.pointwise.WhereFunction`. Tensor operands of different dtypes are first cast to
    the promoted dtype; a number takes the tensor operand's dtype, as torch's type promotion would."""
    if not isinstance(condition, torch.Tensor) or condition.dtype != torch.bool:
        raise RuntimeError("where expected condition to be a boolean tensor")
    tensors = [t for t in (input, other) if isinstance(t, torch.Tensor)]
    if not tensors or not all(t.is_floating_point() for t in tensors):
        raise TypeError("torch_bp.functional.where: expected floating tensor operands")
    dtype = tensors[0].dtype if len(tensors) == 1 else torch.promote_types(tensors[0].dtype, tensors[1].dtype)
    input, other = (t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype != dtype else t for t in (input, other))
    for t in (input, other):
        if not isinstance(t, torch.Tensor) and (isinstance(t, bool) or not isinstance(t, numbers.Real)):
            raise TypeError(f"torch_bp.functional.where: expected a tensor or a real number, got {type(t).__name__}")
    return _pw.WhereFunction.apply(condition, input, other)
