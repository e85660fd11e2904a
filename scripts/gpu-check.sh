#!/usr/bin/env bash
# The CUDA paths end to end in a few minutes (scripts/gpu_check.py): a distill job through a real
# worker on the GPU (bf16), the student served on CUDA over HTTP, and GPU against CPU figures.
# On a machine without CUDA it runs the same on the CPU. Arguments go to gpu_check.py, e.g.
#   bash scripts/gpu-check.sh --json "$OUT/gpu-check.json"
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
if [ ! -x "$python" ]; then
  # A fresh machine (the lent GPU one): the README's install step, then the check.
  python3 -m venv .venv
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e .
  python=.venv/bin/python
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$python" scripts/gpu_check.py "$@"
