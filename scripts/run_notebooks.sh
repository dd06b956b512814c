#!/usr/bin/env bash
# Re-executes the example notebooks in place with tiny sizes (1-2 epochs, two seeds; each in a fresh temporary
# folder), so the committed notebooks carry the outputs of one run. Takes a few minutes on a laptop CPU.
#   bash scripts/run_notebooks.sh                 # all of notebooks/*.ipynb
#   bash scripts/run_notebooks.sh swrm.ipynb      # some of them
# Needs the dev extras (nbclient, nbformat, ipykernel) in the active environment.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python - "$@" <<'PY'
import logging, sys
from msa_lightning.errors import MSAError
from msa_lightning.experiments.notebooks import store_executed

logging.basicConfig(level=logging.INFO, format="%(message)s")
try:
    store_executed(sys.argv[1:])
except MSAError as error:
    sys.exit(f"run_notebooks: error: {error}")
PY
