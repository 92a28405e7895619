"""GPU benchmark of the Triton kernels: forward+backward time and peak memory per kernel against
torch eager and torch.compile, and the Transformer block.

    python -m experiments.benchmarks.cuda                    # on a CUDA machine (scripts/gpu_check.sh)
    python -m experiments.benchmarks.cuda --quick --device cpu --no-compile   # plumbing only (tests)

Each case runs torch's own ops ("eager"), the same under ``torch.compile`` ("compile") and the
torch_bp Function ("ours": the Triton kernel where the compiled backend runs it on CUDA, the
Python rule otherwise; ``ops`` lists the torch_bp ops that really ran). Times: interleaved
medians (experiments/benchmarks/measure.py). Peak: ``torch.cuda.max_memory_allocated`` during
one forward+backward, minus the memory allocated before it (inputs and parameters), in MiB.
Writes ``experiments/results/bench_cuda.json`` (``--out``) and prints a table.

Targets (issue 25): layer_norm, rms_norm, cross_entropy >= 1.5x torch eager forward+backward;
linear_cross_entropy peak <= 0.25x eager's; attention backward within 1.3x of torch's SDPA
backward at T = 2048, d = 64. The table reports the ratios; it asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as TF
from torch.utils._python_dispatch import TorchDispatchMode

import torch_bp
import torch_bp.functional as BF
from torch_bp.ops.linear import BiasActivationFunction

from .measure import format_table, interleaved_median

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bench_cuda.json"


def _r(*shape, dtype, device, grad=True, scale=1.0):
    t = torch.randn(shape, dtype=torch.float32, device=device).mul_(scale).to(dtype)
    return t.requires_grad_(grad)


def cases(device, dtype, quick):
    """name -> (make() -> (inputs needing grad, torch fn, ours fn)); shapes per ``quick``."""
    n, d = (64, 96) if quick else (16384, 1024)
    nc, vocab = (32, 300) if quick else (8192, 32000)
    hd = (64, 256) if quick else (16384, 4096)
    B, H, T, E = (1, 2, 64, 16) if quick else (4, 16, 2048, 64)
    N, V, Dm = (64, 300, 32) if quick else (8192, 32000, 1024)

    def norm(kind):
        def make():
            x, w, b = _r(n, d, dtype=dtype, device=device), _r(d, dtype=dtype, device=device), \
                _r(d, dtype=dtype, device=device)
            if kind == "layer_norm":
                return [x, w, b], lambda: TF.layer_norm(x, (d,), w, b), lambda: BF.layer_norm(x, (d,), w, b)
            return [x, w], lambda: TF.rms_norm(x, (d,), w, 1e-6), lambda: BF.rms_norm(x, (d,), w, 1e-6)
        return make

    def ce():
        x = _r(nc, vocab, dtype=dtype, device=device, scale=2.0)
        y = torch.randint(0, vocab, (nc,), device=device)
        return [x], lambda: TF.cross_entropy(x, y), lambda: BF.cross_entropy(x, y)

    def softmax():
        x = _r(nc, vocab, dtype=dtype, device=device)
        return [x], lambda: TF.softmax(x, -1), lambda: BF.softmax(x, -1)

    def bias_gelu():
        h, b = _r(*hd, dtype=dtype, device=device), _r(hd[1], dtype=dtype, device=device)
        return ([h, b], lambda: TF.gelu(h + b, approximate="tanh"),
                lambda: BiasActivationFunction.apply(h, b, "gelu", "tanh")[0])

    def relu():
        x = _r(*hd, dtype=dtype, device=device)
        return [x], lambda: TF.relu(x), lambda: BF.relu(x)

    def dropout():
        x = _r(*hd, dtype=dtype, device=device)
        return [x], lambda: TF.dropout(x, 0.1), lambda: BF.dropout(x, 0.1)

    def attention():
        q, k, v = (_r(B, H, T, E, dtype=dtype, device=device) for _ in range(3))
        return ([q, k, v], lambda: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
                lambda: BF.scaled_dot_product_attention(q, k, v, is_causal=True))

    def linear_ce():
        x = _r(N, Dm, dtype=dtype, device=device)
        w = _r(V, Dm, dtype=dtype, device=device, scale=Dm ** -0.5)
        y = torch.randint(0, V, (N,), device=device)
        return [x, w], lambda: TF.cross_entropy(TF.linear(x, w), y), lambda: BF.linear_cross_entropy(x, w, y)

    def linear_ce_triton():
        """The fused head with its chunk step in Triton (kernels/triton/loss.py), which the
        LinearCrossEntropyFunction does not call yet: timed through _FusedHead below."""
        x = _r(N, Dm, dtype=dtype, device=device)
        w = _r(V, Dm, dtype=dtype, device=device, scale=Dm ** -0.5)
        y = torch.randint(0, V, (N,), device=device)
        return [x, w], lambda: TF.cross_entropy(TF.linear(x, w), y), lambda: _FusedHead.apply(x, w, y)

    def block():
        from .models import transformer_block
        torch.manual_seed(0)
        ref, (x,) = transformer_block()
        if quick:
            x = x[:1, :16]
        ref = ref.to(device=device, dtype=dtype)
        ours = torch_bp.convert(ref)
        x = x.to(device=device, dtype=dtype).requires_grad_()
        return [x, *ref.parameters(), *ours.parameters()], lambda: ref(x), lambda: ours(x)

    return {"layer_norm": norm("layer_norm"), "rms_norm": norm("rms_norm"), "cross_entropy": ce,
            "softmax": softmax, "bias_gelu_tanh": bias_gelu, "relu": relu, "dropout": dropout,
            "attention_causal": attention, "linear_cross_entropy": linear_ce,
            "linear_cross_entropy_triton_chunks": linear_ce_triton, "transformer_block": block}


class _FusedHead(torch.autograd.Function):
    """Measurement wrapper only: the loss and gradients of kernels.triton.loss.linear_cross_entropy_fused
    (the rule is LinearCrossEntropyFunction's fused mode, torch_bp/ops/loss.py), scaled by grad_out."""

    @staticmethod
    def forward(x, w, y):
        from torch_bp.kernels.triton.loss import linear_cross_entropy_fused
        loss, gx, gw, _ = linear_cross_entropy_fused(x, w, None, y, need=(True, True, False))
        return loss, gx, gw

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(*output[1:])

    @staticmethod
    def backward(ctx, g, _gx, _gw):
        gx, gw = ctx.saved_tensors
        return gx * g, gw * g, None


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "torch_bp":
            self.names.add(func._opname)
        return func(*args, **(kwargs or {}))


def _step(fn, grads_of, backward=True):
    def step():
        out = fn()
        if isinstance(out, tuple):
            out = out[0]
        if backward:
            out.float().sum().backward()
            for t in grads_of:
                t.grad = None
    return step


def _peak_mib(step, device):
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def run(device="cuda", dtype=torch.bfloat16, quick=False, compile_ref=True, reps=10, only=None, compile_only=None):
    rows = []
    for name, make in cases(device, dtype, quick).items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        torch.manual_seed(0)
        inputs, ref, ours = make()
        log = _Ops()
        if name.endswith("_triton_chunks") and not torch_bp.backend.CUDA_OPS:
            print(f"  {name}: skipped (no Triton kernels on this device)")
            continue
        with log:
            _step(ours, inputs)()
        cands = {"eager": _step(ref, inputs), "ours": _step(ours, inputs)}
        fwd = {"eager_fwd": _step(ref, inputs, False), "ours_fwd": _step(ours, inputs, False)}
        compiled = compile_ref and (not compile_only or name in compile_only)
        if compiled:
            cands["compile"] = _step(torch.compile(ref), inputs)
        with torch.no_grad():
            t_fwd = interleaved_median(fwd, reps=reps, device=device)
        t = interleaved_median(cands, reps=reps, device=device)
        peak = {k: _peak_mib(s, device) for k, s in cands.items()}
        row = {"case": name, "dtype": str(dtype).replace("torch.", ""), "ops": ",".join(sorted(log.names)) or "-",
               "eager_ms": 1e3 * t["eager"], "ours_ms": 1e3 * t["ours"],
               "compile_ms": 1e3 * t["compile"] if compiled else None,
               "speedup_vs_eager": t["eager"] / t["ours"],
               "speedup_vs_compile": t["compile"] / t["ours"] if compiled else None,
               "bwd_ratio_vs_eager": (t["ours"] - t_fwd["ours_fwd"]) / max(t["eager"] - t_fwd["eager_fwd"], 1e-9),
               "peak_MiB_eager": peak["eager"], "peak_MiB_ours": peak["ours"],
               "peak_MiB_compile": peak.get("compile"),
               "peak_ratio_vs_eager": peak["ours"] / peak["eager"] if peak["eager"] else None,
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"  {name}: {row['speedup_vs_eager']:.2f}x eager ({row['ops']})", flush=True)
        del inputs, cands, fwd
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return rows


COLUMNS = [("case", "case"), ("dtype", "dtype"), ("eager_ms", "eager ms"), ("compile_ms", "compile ms"),
           ("ours_ms", "ours ms"), ("speedup_vs_eager", "x eager"), ("speedup_vs_compile", "x compile"),
           ("bwd_ratio_vs_eager", "bwd/eager bwd"), ("peak_MiB_eager", "peak eager MiB"),
           ("peak_MiB_ours", "peak ours MiB"), ("peak_ratio_vs_eager", "peak ratio"), ("ops", "torch_bp ops")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--quick", action="store_true", help="tiny shapes (checks the plumbing, measures nothing)")
    p.add_argument("--no-compile", dest="compile_ref", action="store_false")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--only", nargs="*", help="these cases only")
    p.add_argument("--compile-only", nargs="*", help="torch.compile only these cases (default: all)")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures the GPU kernels (see --device)")
    info = torch_bp.backend_info()
    print(info)
    rows = run(a.device, getattr(torch, a.dtype), a.quick, a.compile_ref, a.reps, a.only, a.compile_only)
    print(format_table(rows, COLUMNS))
    meta = {"device": torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "backend": str(info), "quick": a.quick, "reps": a.reps,
            "peak": "max_memory_allocated during one forward+backward minus the memory allocated before, MiB"}
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
    print(f"wrote {a.out}")
    return rows


if __name__ == "__main__":
    main()
