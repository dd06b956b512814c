#!/usr/bin/env bash
# Re-resolve requirements/lock-cpu.txt from pyproject.toml (needs `uv`: pip install uv).
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 --fork-strategy fewest \
  --override requirements/overrides.txt --no-emit-package torch -o requirements/lock-cpu.txt "$@"
