"""Small helpers shared by the launchers (block sizes, program counts)."""
from __future__ import annotations

import torch
import triton


def block(n: int, lo: int = 16, hi: int = 1 << 16) -> int:
    """The power of two >= n (at least ``lo``, at most ``hi``): a row's block of columns."""
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def programs(t: torch.Tensor, rows: int, per_sm: int = 4) -> int:
    """Programs for a row-loop kernel over ``rows`` rows: a few per SM on a GPU, few on CPU (interpreter)."""
    if t.is_cuda:
        sms = torch.cuda.get_device_properties(t.device).multi_processor_count
        return max(1, min(rows, per_sm * sms))
    return max(1, min(rows, 4))


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype: float32 for the 16-bit floats, else the dtype itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
