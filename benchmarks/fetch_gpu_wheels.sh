#!/usr/bin/env bash
# Fetches the wheels that benchmarks/gpu_check.sh installs on the GPU machine, whose image has torch,
# transformers, lightning and most of k15's other dependencies but none of these, and reaches no
# package registry. Run it here (on a machine that reaches PyPI), before the device call:
#
#   benchmarks/fetch_gpu_wheels.sh        # -> benchmarks/wheels/*.whl, about 1 MB
#
# benchmarks/wheels/ is ignored by git and travels with the device tool's `carry` argument:
#   run(command="benchmarks/gpu_check.sh", carry=["benchmarks/wheels"], timeout_s=600)
# Not committed: the versions come from requirements/cpu.lock at fetch time, so they follow the lock
# file instead of going stale in the history, and no binaries enter the repository.
#
# Which packages: requirements/cpu.lock minus the image's package list (the device docs' KINDS.md),
# minus what only huggingface_hub 2.x pulls in (the image has hub 1.x, which transformers accepts) and
# pandas' tzdata (the image has pandas). Pure-Python wheels only (`*-none-any.whl`, checked below):
# the GPU machine's Python is 3.12 on x86-64, ours may differ, and a compiled wheel from here could
# fail there. Each is installed with --no-deps, so each dependency that is missing is named here too.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  omegaconf antlr4-python3-runtime         # k15.config
  math-verify latex2sympy2_extended        # the math verifier
  webdataset braceexpand                   # image-text shards (imported by the vision data modules)
  datasets dill multiprocess               # `datasets.save_to_disk` prompt sets (pyarrow is in the image)
)
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
DEST=benchmarks/wheels

rm -rf "$DEST"
mkdir -p "$DEST"
for name in "${PACKAGES[@]}"; do
  # the lock file's pin, whatever the spelling of the name there (- _ . and case are all the same to pip)
  pattern=$(echo "$name" | sed 's/[-_.]/[-_.]/g')
  version=$(grep -iE "^${pattern}==" requirements/cpu.lock | head -1 | cut -d= -f3)
  if [ -z "$version" ]; then
    echo "fetch_gpu_wheels: $name is not in requirements/cpu.lock" >&2
    exit 1
  fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$DEST" "$name==$version"
done

compiled=$(find "$DEST" -name '*.whl' ! -name '*-none-any.whl')
if [ -n "$compiled" ]; then
  echo "fetch_gpu_wheels: not pure Python, would not install on the GPU machine: $compiled" >&2
  exit 1
fi
ls -1 "$DEST"
echo "fetch_gpu_wheels: $(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST (carry it: see the header)"
