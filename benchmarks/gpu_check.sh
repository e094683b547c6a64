#!/usr/bin/env bash
# One-GPU check of k15 (see benchmarks/gpu_check.py): packed training tok/s + MFU on the 0.5b preset,
# packed rows under flash_attention_2 vs padded SDPA (loss and log-prob agreement, tok/s; skipped
# without flash-attn), rollout tok/s ours vs HF generate, a one-process FSDP2 run. Uses the machine's
# own python3 and packages (no venv); stops at once, naming them, if any it needs is missing. Under
# 10 minutes on an H200.
#
#   benchmarks/gpu_check.sh                 # on the GPU machine; figures in $OUT/gpu_check.json and .log
#   benchmarks/gpu_check.sh --cpu-dry-run   # tiny sizes on CPU: exercises the same code paths
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ "${1:-}" = "--cpu-dry-run" ] && PY="${PYTHON:-.venv/bin/python}"
export PYTHONUNBUFFERED=1 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824

missing=$("$PY" - <<'PY'
import importlib.util
need = ["torch", "transformers", "yaml", "tokenizers", "safetensors"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages for $PY: $missing (carry them as wheels, see the device README)" >&2
  echo "gpu_check ratio=nan"
  exit 2
fi
"$PY" -c "import torch, transformers; print('python', __import__('sys').version.split()[0], '| torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

log=/dev/null
[ -n "${OUT:-}" ] && mkdir -p "$OUT" && log="$OUT/gpu_check.log"
timeout 560 "$PY" benchmarks/gpu_check.py "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "gpu_check: stopped at its 560 s limit (figures so far in \$OUT/gpu_check.json)"
exit "$rc"
