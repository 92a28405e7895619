#!/usr/bin/env bash
# The one-GPU check of torch_bp's CUDA path (docs/gpu.md). Needs one CUDA GPU, torch (>= 2.11,
# with CUDA; its triton) and lightning; no network, no jsonargparse, no install: the checkout is
# imported through PYTHONPATH. About 8 minutes at most; every step has its own time limit.
#
#   scripts/gpu_check.sh              # PYTHON=python3.12 scripts/gpu_check.sh to pick the interpreter
#
# Steps (each prints PASS / FAIL / SKIP with the reason; the exit status is 1 if any failed):
#   1. set-up: versions, the GPU, triton; builds the C++ kernels once if a compiler and ninja are
#      there (else the CUDA kernels' op schemas are defined from csrc/ops.cpp, see torch_bp/backend.py)
#   2. the CUDA tests: tests/test_triton.py on CUDA (every Triton kernel against its Python rule;
#      the layer harness on CUDA in float32/bfloat16; opcheck on CUDA tensors)
#   3. the default Lightning job (BPModule + the default net on digits) through the Python API,
#      precision="bf16-mixed", GradientMonitor and GradientCheck on
#   4. the GPU benchmark: experiments/benchmarks/cuda.py -> experiments/results/bench_cuda.json
#   5. (optional) a converted Hugging Face model, only if `transformers` imports
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
START=$(date +%s)
DEADLINE=$(( START + ${GPU_CHECK_SECONDS:-480} ))   # the whole check: 8 minutes
STATUS=0
declare -a SUMMARY

step() {  # step NAME LIMIT_SECONDS COMMAND...: run with a time limit (capped by the deadline), record PASS/FAIL
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  local left=$(( DEADLINE - t0 ))
  if [ $left -lt 20 ]; then SUMMARY+=("FAIL  $name: not started, the 8 minutes are spent"); STATUS=1; return; fi
  [ $limit -gt $left ] && limit=$left
  echo; echo "=== $name (limit ${limit}s) ==="
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  local rc=$? dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then SUMMARY+=("PASS  $name (${dt}s)")
  elif [ $rc -eq 124 ] || [ $rc -eq 130 ]; then SUMMARY+=("FAIL  $name: over its ${limit}s limit"); STATUS=1
  else SUMMARY+=("FAIL  $name: exit status $rc (${dt}s)"); STATUS=1; fi
}

skip() { SUMMARY+=("SKIP  $1: $2"); echo; echo "=== $1: skipped ($2) ==="; }

# --- 1. set-up ---
if ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False)"; exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L
step "set-up" 150 $PY - <<'PY'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "|", torch.cuda.get_device_name())
try:
    import triton
    print("triton", triton.__version__)
except ImportError as e:
    raise SystemExit(f"triton is not importable ({e}): the CUDA kernels cannot run")
import torch_bp
info = torch_bp.backend_info(build=True)   # builds the C++ kernels once where a compiler and ninja are
print(info)
from torch_bp import backend
if not backend.CUDA_OPS:
    raise SystemExit("no CUDA kernels registered: " + info.cuda)
print("CUDA kernels:", ", ".join(sorted(backend.CUDA_OPS)))
PY

# --- 2. the CUDA tests ---
if $PY -c 'import pytest' 2>/dev/null; then
  step "CUDA tests (tests/test_triton.py)" 200 $PY -m pytest -q -p no:cacheprovider --maxfail=25 -rfs tests/test_triton.py
else
  skip "CUDA tests" "pytest is not installed (and there is no network to install it)"; STATUS=1
fi

# --- 3. the default Lightning job, bf16-mixed, with GradientMonitor and GradientCheck ---
step "Lightning: default job, bf16-mixed, GradientMonitor + GradientCheck" 100 $PY - <<'PY'
import warnings
import lightning.pytorch as L
import torch
from torch_bp.lightning import BPModule, DigitsDataModule, GradientCheck, GradientMonitor, TensorDataModule

warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
try:
    import sklearn  # noqa: F401  (the digits are bundled with scikit-learn: no download)
    data, what = DigitsDataModule(), "digits"
except ImportError:
    class Digitlike(TensorDataModule):  # the default net's input shape, synthetic: scikit-learn is absent
        num_features, num_outputs = 64, 10

        def tensors(self):
            g = torch.Generator().manual_seed(0)
            x = torch.rand(1797, 1, 8, 8, generator=g)
            y = (x.flatten(1) @ torch.randn(64, 10, generator=g)).argmax(1)
            return (x[:1437], y[:1437]), (x[1437:], y[1437:])
    data, what = Digitlike(batch_size=64), "synthetic digits-shaped data (scikit-learn is not installed)"
try:
    from lightning.pytorch.loggers import TensorBoardLogger
    logger = TensorBoardLogger("runs", name="gpu_check", default_hp_metric=False)
except Exception as e:  # tensorboard absent: GradientMonitor still computes, logs nowhere
    print("no TensorBoard logger:", e)
    logger = False
L.seed_everything(0)
check = GradientCheck(every_n_steps=20)
monitor = GradientMonitor(every_n_steps=10)
trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=3, logger=logger,
                    callbacks=[monitor, check], enable_checkpointing=False, enable_progress_bar=False,
                    log_every_n_steps=10)
model = BPModule()
trainer.fit(model, datamodule=data)
res = trainer.validate(model, datamodule=data, verbose=False)[0]
print(f"data: {what}; device: {next(model.parameters()).device}; val/acc {res.get('val/acc'):.3f}, "
      f"val/loss {res.get('val/loss'):.3f}")
print(f"GradientCheck: {len(check.history)} checks, {len(check.failures)} failures")
print(f"GradientMonitor last metrics: {len(monitor.last_metrics)} values")
if check.failures:
    raise SystemExit(f"GradientCheck failed: {check.failures[:2]}")
if not check.history:
    raise SystemExit("GradientCheck never ran")
PY

# --- 4. the GPU benchmark ---
# torch.compile (about 10-30 s a case) for the cases with a target and the Transformer block
step "benchmark (experiments/benchmarks/cuda.py)" 180 $PY -m experiments.benchmarks.cuda --reps 10 \
  --compile-only layer_norm rms_norm cross_entropy attention_causal linear_cross_entropy transformer_block

# --- 5. optional: a Hugging Face model converted to torch_bp (only where transformers imports) ---
if $PY -c 'import transformers' 2>/dev/null; then
  step "Hugging Face (optional): a small GPT-2, converted, bf16, against the original" 60 $PY - <<'PY'
import torch
import transformers
import torch_bp

torch.manual_seed(0)
cfg = transformers.GPT2Config(n_layer=2, n_embd=256, n_head=4, n_positions=256, vocab_size=4096,
                              bos_token_id=0, eos_token_id=0)
ref = transformers.GPT2LMHeadModel(cfg).to("cuda", torch.bfloat16).train()   # random weights: no download
ref.config.attn_pdrop = ref.config.resid_pdrop = ref.config.embd_pdrop = 0.0
for m in ref.modules():
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
ours = torch_bp.convert(ref)
print(torch_bp.conversion_report(ours))
ids = torch.randint(0, cfg.vocab_size, (4, 128), device="cuda")
losses, grads = [], []
for net in (ref, ours):
    net.zero_grad(set_to_none=True)
    loss = net(input_ids=ids, labels=ids).loss
    loss.backward()
    losses.append(loss.item())
    grads.append(torch.cat([p.grad.float().flatten() for p in net.parameters() if p.grad is not None]))
rel = ((grads[0] - grads[1]).norm() / grads[0].norm()).item()
print(f"loss: torch {losses[0]:.4f}, torch_bp {losses[1]:.4f}; gradient relative difference {rel:.2e}")
if abs(losses[0] - losses[1]) > 0.05 or rel > 0.05:   # bfloat16: a few ulp (2^-7) per op
    raise SystemExit("the converted model disagrees with the original beyond bfloat16 rounding")
PY
else
  skip "Hugging Face (optional)" "transformers is not installed"
fi

echo; echo "=== summary ($(( $(date +%s) - START ))s) ==="
printf '%s\n' "${SUMMARY[@]}"
[ -f experiments/results/bench_cuda.json ] && echo "results: experiments/results/bench_cuda.json"
exit $STATUS
