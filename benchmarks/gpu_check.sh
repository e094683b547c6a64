#!/usr/bin/env bash
# One-GPU check of k15 (see benchmarks/gpu_check.py): packed training tok/s + MFU on the 0.5b preset,
# packed rows under flash_attention_2 vs padded SDPA (loss and log-prob agreement, tok/s; skipped
# without flash-attn), rollout tok/s ours vs HF generate, a one-process FSDP2 run with fp32 weights,
# then the real pipeline (`experiments.run quickstart`, tiny sizes) under trainer=fsdp (pretrain, sft,
# eval) and trainer=fsdp2 (pretrain, rl, eval). Under 10 minutes on an H200 (stopped at 560 s, the
# figures so far kept); the last lines are `gpu_check summary {JSON}` and `gpu_check ratio=X.XX`.
#
# Uses the machine's own python3 and packages (no venv travels). The pipeline needs packages the GPU
# image lacks (omegaconf, math-verify, webdataset, datasets, ... : benchmarks/fetch_gpu_wheels.sh
# lists them); they travel as pure-Python wheels in benchmarks/wheels/, which git ignores, so the
# device call must carry it. Here, then through the device tool:
#
#   benchmarks/fetch_gpu_wheels.sh                                                   # here: ~1.6 MB of wheels
#   run(command="benchmarks/gpu_check.sh", carry=["benchmarks/wheels"], timeout_s=600)  # $OUT: json + logs
#
# They are installed with --no-deps into a folder of their own put first on PYTHONPATH, so nothing
# the image has is changed. Without them the first four phases still run and the pipeline phases
# fail, naming what is missing.
#
#   benchmarks/gpu_check.sh --cpu-dry-run   # tiny sizes on CPU with .venv: the same code paths (fsdp skipped)
#   benchmarks/gpu_check.sh --only pipeline_fsdp2   # one phase again (names: gpu_check.py --help)
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
for a in "$@"; do [ "$a" = "--cpu-dry-run" ] && dry=1; done
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ $dry = 1 ] && PY="${PYTHON:-.venv/bin/python}"
export PYTHONUNBUFFERED=1 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1  # commands run as root there

if [ $dry = 0 ]; then
  if ls benchmarks/wheels/*.whl >/dev/null 2>&1; then
    site="${TMPDIR:-/tmp}/k15-gpu-site"
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" benchmarks/wheels/*.whl; then
      echo "gpu_check: installing benchmarks/wheels failed (two versions of one package? run benchmarks/fetch_gpu_wheels.sh again)" >&2
      exit 2
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check: installed $(ls benchmarks/wheels/*.whl | wc -l) carried wheels into $site"
  else
    echo "gpu_check: no benchmarks/wheels/*.whl (run benchmarks/fetch_gpu_wheels.sh, then carry=[\"benchmarks/wheels\"]):" \
         "the pipeline phases will fail on missing packages" >&2
  fi
fi

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
if [ "$rc" = 124 ]; then
  echo "gpu_check: stopped at its 560 s limit (figures so far in \$OUT/gpu_check.json)"
  # The summary line gpu_check.py did not get to print: the phases that had finished.
  [ -n "${OUT:-}" ] && [ -f "$OUT/gpu_check.json" ] && "$PY" - "$OUT/gpu_check.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
done = {k: ("failed" if "error" in v else "skipped" if "skipped" in v else "ok")
        for k, v in report.items() if isinstance(v, dict) and "phase_s" in v}
print("gpu_check summary " + json.dumps({"ok": False, "timed_out": True, "finished": done}))
PY
fi
exit "$rc"
