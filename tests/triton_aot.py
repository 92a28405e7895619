"""Compile every Triton kernel for a CUDA GPU (sm_90) without one: Triton's own compiler and ptxas,
no device needed. Catches what the interpreter cannot: typing, constexpr branches, layouts.

Run as a script (tests/test_triton.py does, with ``--quick``: the most involved configuration of
a few kernels); prints one line per compiled kernel and exits non-zero on the first failure.
"""
from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton
from triton.backends.compiler import GPUTarget

from torch_bp.kernels.triton import activation as ka
from torch_bp.kernels.triton import attention as kattn
from torch_bp.kernels.triton import dropout as kd
from torch_bp.kernels.triton import linear as kl
from torch_bp.kernels.triton import loss as kloss
from torch_bp.kernels.triton import normalization as kn

TARGET = GPUTarget("cuda", 90, 32)


def sig(spec: str, **constexprs):
    """'X:*bf16 D:i32 ...' plus constexprs -> (signature, constexprs) for triton.compile."""
    s = dict(item.split(":") for item in spec.split())
    for k in constexprs:
        s[k] = "constexpr"
    return s, constexprs


def cases():
    t = "bf16"
    for has_w in (True, False):
        yield kn._layer_norm_fwd_kernel, sig(f"X:*{t} W:*{t} B:*{t} Y:*{t} MEAN:*fp32 RSTD:*fp32 D:i32 eps:fp32",
                                             HAS_W=has_w, HAS_B=has_w, BLOCK=1024)
        yield kn._layer_norm_bwd_kernel, sig(f"GY:*{t} X:*{t} W:*{t} MEAN:*fp32 RSTD:*fp32 GX:*{t} GW_PART:*fp32 "
                                             "GB_PART:*fp32 N:i32 D:i32 rows_per_prog:i32",
                                             HAS_W=has_w, NEED_X=True, NEED_W=has_w, NEED_B=has_w, BLOCK=1024)
        yield kn._rms_norm_fwd_kernel, sig(f"X:*{t} W:*{t} Y:*{t} RSTD:*fp32 D:i32 eps:fp32", HAS_W=has_w, BLOCK=1024)
        yield kn._rms_norm_bwd_kernel, sig(f"GY:*{t} X:*{t} W:*{t} RSTD:*fp32 GX:*{t} GW_PART:*fp32 N:i32 D:i32 "
                                           "rows_per_prog:i32", HAS_W=has_w, NEED_X=True, NEED_W=has_w, BLOCK=1024)
    for act in (ka.RELU, ka.GELU, ka.GELU_TANH, ka.SILU):
        yield ka._act_fwd_kernel, sig("X:*fp32 Y:*fp32 n:i32", ACT=act, BLOCK=ka.ELEM_BLOCK)
        yield ka._act_bwd_kernel, sig("GY:*fp32 X:*fp32 GX:*fp32 n:i32", ACT=act, BLOCK=ka.ELEM_BLOCK)
        yield kl._bias_act_fwd_kernel, sig(f"H:*{t} B:*{t} Y:*{t} N:i32 C:i32", HAS_B=True, ACT=act,
                                           BLOCK_M=kl.BLOCK_M, BLOCK_C=kl.BLOCK_C)
        yield kl._bias_act_bwd_kernel, sig(f"GY:*{t} H:*{t} BITS:*u8 B:*{t} GZ:*{t} GB_PART:*fp32 N:i32 C:i32",
                                           HAS_B=True, ACT=act, NEED_B=True, BLOCK_M=kl.BLOCK_M, BLOCK_C=kl.BLOCK_C)
    yield ka._pack_kernel, sig("V:*fp32 BITS:*u8 n:i32", KIND=0, BLOCK=ka.BYTE_BLOCK)
    yield ka._pack_kernel, sig("V:*u8 BITS:*u8 n:i32", KIND=1, BLOCK=ka.BYTE_BLOCK)
    for has_s in (True, False):
        yield ka._mask_bwd_kernel, sig(f"GY:*{t} BITS:*u8 S:*{t} GX:*{t} n:i32", HAS_S=has_s, BLOCK=ka.ELEM_BLOCK)
    yield kd._dropout_fwd_kernel, sig(f"X:*{t} M:*u8 S:*{t} Y:*{t} n:i32", BLOCK=ka.ELEM_BLOCK)
    for log in (False, True):
        yield ka._softmax_fwd_kernel, sig(f"X:*{t} Y:*{t} D:i32", LOG=log, BLOCK=ka.MAX_BLOCK)
        yield ka._softmax_bwd_kernel, sig(f"GY:*{t} Y:*{t} GX:*{t} D:i32", LOG=log, BLOCK=ka.MAX_BLOCK)
    for has_w, smooth in ((False, False), (True, True)):
        yield kloss._ce_fwd_kernel, sig(f"X:*{t} T:*i64 W:*{t} WSUM:*fp32 E:*fp32 WY:*fp32 M:*fp32 S:*fp32 C:i32 "
                                        "ignore_index:i32 a:fp32", HAS_W=has_w, SMOOTH=smooth, BLOCK=ka.MAX_BLOCK)
        yield kloss._ce_bwd_kernel, sig(f"G:*fp32 X:*{t} T:*i64 W:*{t} WSUM:*fp32 M:*fp32 S:*fp32 GX:*{t} C:i32 "
                                        "ignore_index:i32 a:fp32", HAS_W=has_w, PER_ROW=not has_w, SMOOTH=smooth,
                                        BLOCK=ka.MAX_BLOCK)
    yield kloss._head_chunk_kernel, sig(f"Z:*{t} T:*i64 GE:*fp32 E:*fp32 V:i32 ignore_index:i32 a:fp32",
                                        BLOCK=ka.MAX_BLOCK)
    for dt, prec in (("bf16", "tf32"), ("fp32", "ieee")):
        for causal, extra in ((False, False), (True, True)):
            common = {"CAUSAL": causal, "HAS_KEEP": extra, "HAS_KPM": extra, "PREC": prec, "BLOCK_E": 64,
                      "BLOCK_EV": 64}
            yield kattn._attn_fwd_kernel, sig(f"Q:*{dt} K:*{dt} V:*{dt} KEEP:*u8 KP:*u8 O:*{dt} LSE:*fp32 L:i32 S:i32 "
                                              "E:i32 EV:i32 scale:fp32 keep_scale:fp32", BLOCK_M=128, BLOCK_N=64,
                                              **common)
            bwd = f"Q:*{dt} K:*{dt} V:*{dt} DO:*{dt} KEEP:*u8 KP:*u8 LSE:*fp32 DELTA:*fp32"
            tail = "L:i32 S:i32 E:i32 EV:i32 scale:fp32 keep_scale:fp32"
            yield kattn._attn_bwd_dkdv_kernel, sig(f"{bwd} DK:*{dt} DV:*{dt} {tail}", BLOCK_M=64, BLOCK_N=64,
                                                   **common)
            yield kattn._attn_bwd_dq_kernel, sig(f"{bwd} DQ:*{dt} {tail}", BLOCK_M=64, BLOCK_N=64, **common)


QUICK = {"_ce_fwd_kernel", "_attn_fwd_kernel",
         "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel"}


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    n, seen = 0, set()
    for fn, (signature, constexprs) in cases():
        if quick:  # one configuration (the first with every option on) of each kernel in QUICK
            on = all(v for v in constexprs.values() if isinstance(v, bool))
            if fn.__name__ not in QUICK or fn.__name__ in seen or not on:
                continue
            seen.add(fn.__name__)
        src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
        try:
            k = triton.compile(src, target=TARGET)
        except Exception as e:  # noqa: BLE001 - reported with the kernel's name
            print(f"FAILED {fn.__name__} {constexprs}: {type(e).__name__}: {e}", flush=True)
            return 1
        assert "cubin" in k.asm
        n += 1
        print(f"ok {fn.__name__} {constexprs}", flush=True)
    print(f"compiled {n} kernels for {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
