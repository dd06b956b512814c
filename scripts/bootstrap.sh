#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs the suite (CPU torch first where
# there is no NVIDIA GPU, so pip never pulls CUDA wheels), then runs what you asked for.
#   bash scripts/bootstrap.sh quickstart   # synthetic MOSI -> fit -> test -> metric table
#   bash scripts/bootstrap.sh test         # the test suite
#   bash scripts/bootstrap.sh              # set-up only
# Idempotent: a second run reuses .venv and reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
LITDATA_VERSION=${LITDATA_VERSION:-0.2.76}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.msa-install-stamp"
want="$(sha256sum pyproject.toml | cut -c1-16)-$TORCH_VERSION-$LITDATA_VERSION"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  if ! "$PY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      "$PY" -m pip install -q "torch==$TORCH_VERSION"
    elif "$PY" -m pip install -q --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
      # a CPU wheel provided locally (pip's find-links, as on our CI machines); then its dependencies
      "$PY" -m pip install -q "torch==$TORCH_VERSION"
    else
      # other CPU machines: the PyTorch CPU index (it also serves torch's own dependencies), never
      # the multi-GB CUDA build
      "$PY" -m pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  "$PY" -m pip install -q -e ".[dev]"
  # litdata's metadata asks for torchvision (and so a CUDA torch); it runs without it, and pyproject.toml
  # lists the packages it does import.
  "$PY" -m pip install -q --no-deps "litdata==$LITDATA_VERSION"
  echo "$want" > "$stamp"
fi

export WANDB_MODE=${WANDB_MODE:-offline}
case "${1:-setup}" in
  quickstart) shift; exec "$VENV/bin/msa" quickstart "$@" ;;
  test) shift; exec "$PY" -m pytest -q "$@" ;;
  setup) echo "ready: source $VENV/bin/activate" ;;
  *) echo "usage: bash scripts/bootstrap.sh [setup|quickstart|test] [args...]" >&2; exit 2 ;;
esac
