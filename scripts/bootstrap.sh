#!/usr/bin/env bash
# One entry point for a fresh machine: creates a virtual environment, installs the suite (CPU torch first
# where there is no NVIDIA GPU, so pip never pulls CUDA wheels), then runs what you asked for.
#   bash scripts/bootstrap.sh quickstart        # synthetic MOSI -> fit -> test -> metric table
#   bash scripts/bootstrap.sh test              # the test suite, on the locked versions (.venv)
#   bash scripts/bootstrap.sh test --latest     # the test suite on the newest releases pyproject.toml allows
#                                               # (.venv-latest)
#   bash scripts/bootstrap.sh                   # set-up only
# Idempotent: a second run reuses the environment and reinstalls only when pyproject.toml or the lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

command=${1:-setup}
[ $# -gt 0 ] && shift
latest=0
args=()
for a in "$@"; do
  if [ "$a" = "--latest" ]; then latest=1; else args+=("$a"); fi
done
if [ "$latest" = 1 ]; then VENV=${VENV:-.venv-latest}; else VENV=${VENV:-.venv}; fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.msa-install-stamp"
want="$(cat pyproject.toml requirements/*.txt | sha256sum | cut -c1-16)-$TORCH_VERSION-latest$latest"
if [ "$latest" = 1 ]; then want="$want-$(date +%F)"; fi  # the newest releases: looked up again each day
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
  # whatever else pip installs must leave the torch above in place (never a CUDA build)
  torch_pin="$VENV/torch-constraint.txt"
  "$PY" -c "import torch; print('torch==' + torch.__version__)" > "$torch_pin" 2>/dev/null
  if [ "$latest" = 1 ]; then
    "$PY" -m pip install -q --upgrade --upgrade-strategy eager -c "$torch_pin" -e ".[dev]"
  else
    # the lock is complete (every dependency pinned), so nothing is resolved anew: what CI tested
    "$PY" -m pip install -q --no-deps -r requirements/lock-cpu.txt
    "$PY" -m pip install -q --no-deps -e .
  fi
  "$PY" -m pip install -q --no-deps -r requirements/no-deps.txt
  echo "$want" > "$stamp"
fi

export WANDB_MODE=${WANDB_MODE:-offline}
case "$command" in
  quickstart) exec "$VENV/bin/msa" quickstart "${args[@]}" ;;
  test)
    "$PY" -c "import transformers, lightning, torch; print(f'testing with torch {torch.__version__}, ' \
      f'lightning {lightning.__version__}, transformers {transformers.__version__}')"
    exec "$PY" -m pytest -q "${args[@]}" ;;
  setup) echo "ready: source $VENV/bin/activate" ;;
  *) echo "usage: bash scripts/bootstrap.sh [setup|quickstart|test] [--latest] [args...]" >&2; exit 2 ;;
esac
