"""The paper notebooks are committed executed (``bash scripts/run_notebooks.sh``), each ending with its paper's table
from a tiny multi-seed run. A static check of the files: no kernel runs here (the execution tests are beside each
paper's tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from msa_lightning.experiments.paper_tables import PAPERS, load_published


def _text(output: dict) -> str:
    parts = [output.get("text", "")] + [output.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown")]
    return "".join("".join(p) if isinstance(p, list) else p for p in parts)


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_notebook_is_stored_executed_and_ends_with_its_table(paper):
    """Every code cell ran, in order, without an error; the last output is `msa report --paper` with our rows of two
    seeds; a markdown cell after it says that tiny runs carry no information; no output names this machine's paths."""
    nb = json.loads((REPO / "notebooks" / f"{paper}.ipynb").read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), "not executed top to bottom"
    outputs = [o for c in code for o in c["outputs"]]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, errors[0].get("evalue")
    table = "".join(code[-1]["outputs"][-1].get("data", {}).get("text/markdown", ""))
    citation, tables = load_published(paper)
    assert any(table.startswith(f"{citation}, {t.title}\n") for t in tables), table[:300]
    assert "| ours (n=2) |" in table, "no result folder of two seeds in the table"
    after = nb["cells"][nb["cells"].index(code[-1]) + 1 :]
    assert any(c["cell_type"] == "markdown" and "say nothing about the quality" in "".join(c["source"]) for c in after)
    assert not any(str(REPO) in _text(o) for o in outputs), "an output names the checkout's path"


def test_run_notebooks_refuses_an_unknown_name():
    """`bash scripts/run_notebooks.sh NAME`: a name it does not know is one error line, before any kernel starts."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "run_notebooks.sh"), "nope.ipynb"],
        capture_output=True,
        text=True,
        timeout=120,
        # the script runs the `python` of the active environment: this one's, as after `source .venv/bin/activate`
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "run_notebooks: error: unknown notebook(s) nope.ipynb: expected some of quickstart.ipynb, "
        "custom_dataset.ipynb, skesl.ipynb, fmlmsn.ipynb, twostep.ipynb, swrm.ipynb, hybrid_shift.ipynb"
    ]
