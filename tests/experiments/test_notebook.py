"""The quickstart notebook runs top to bottom (small data, few epochs).

notebooks/fmlmsn.ipynb is executed in tests/test_fmlmsn.py, whose `msa pipeline` test checks the run folder
of the pipeline the notebook runs (one pipeline run for both)."""

import pytest
from conftest import execute_notebook

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nb = execute_notebook("quickstart.ipynb", tmp_path, {"MSA_NOTEBOOK_SIZE": "0.05", "MSA_NOTEBOOK_EPOCHS": "2"})
    assert (tmp_path / "pred_vs_label.png").stat().st_size > 1000
    tables = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "text/markdown" in o.get("data", {})
    ]
    assert tables and "acc2_has0" in tables[0]["data"]["text/markdown"]
