"""The quickstart notebook runs top to bottom (small data, few epochs).

notebooks/fmlmsn.ipynb is executed in tests/test_fmlmsn.py, whose `msa pipeline` test checks the run folder
of the pipeline the notebook runs (one pipeline run for both)."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("MSA_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("MSA_NOTEBOOK_SIZE", "0.05")
    monkeypatch.setenv("MSA_NOTEBOOK_EPOCHS", "2")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "pred_vs_label.png").stat().st_size > 1000
    tables = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    assert tables and "acc2_has0" in tables[0]["data"]["text/markdown"]
