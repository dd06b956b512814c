"""notebooks/hybrid_shift.ipynb runs top to bottom: synthetic word-aligned MOSI through `msa data synth --aligned`,
the ablation fragments listed with what they set, then `msa seeds` of the shipped config
(one seed here, tiny) and `msa report --paper hybrid_shift --table I` with our row filled."""

import pytest
from conftest import execute_notebook

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")


@pytest.mark.slow
def test_hybrid_shift_notebook_executes(tmp_path):
    nb = execute_notebook(
        "hybrid_shift.ipynb",
        tmp_path,
        {"MSA_NOTEBOOK_SIZE": "0.05", "MSA_NOTEBOOK_EPOCHS": "1", "MSA_NOTEBOOK_SEEDS": "1111"},
    )
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "no_modules.yaml    use_msg_t=False, use_msg_a=False, use_msg_v=False, use_mba=False" in printed
    assert "shift_t" in printed  # the per-seed table of msa seeds: the shifts' sizes beside the metrics
    table = nb.cells[-2].outputs[-1]["data"]["text/markdown"]
    assert table.startswith("Lin and Hu, Dynamically Shifting Multimodal Representations") and "Table I:" in table
    assert len([line for line in table.splitlines() if line.startswith("| Proposed (BERT) | BERT | ours (n=1) |")]) == 1
