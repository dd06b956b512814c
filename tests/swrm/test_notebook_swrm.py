"""notebooks/swrm.ipynb runs top to bottom: synthetic MOSI through `msa data synth`, made-up ASR transcripts scored
by `msa data wer`, the ablation switches of the shipped configs, then `msa seeds` of the shipped SWRM config (one
seed here, tiny) and `msa report --paper swrm` with our row filled."""

import pytest
from conftest import execute_notebook

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")


@pytest.mark.slow
def test_swrm_notebook_executes(tmp_path):
    nb = execute_notebook(
        "swrm.ipynb", tmp_path, {"MSA_NOTEBOOK_SIZE": "0.05", "MSA_NOTEBOOK_EPOCHS": "1", "MSA_NOTEBOOK_SEEDS": "1111"}
    )
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "| toy_asr | 109 | 0 |" in printed  # msa data wer: every utterance scored
    assert (
        "mosi_speechbrain_wo_position.yaml: model.use_position: True -> False, data.positions: True -> False" in printed
    )
    assert "mosi_speechbrain_wo_attention.yaml: model.use_attention: True -> False\n" in printed
    table = nb.cells[-2].outputs[-1]["data"]["text/markdown"]
    assert table.startswith("Wu et al., Sentiment Word Aware Multimodal Refinement")
    ours = [line for line in table.splitlines() if line.startswith("| MOSI-SpeechBrain | Ours | ours (n=1) |")]
    assert len(ours) == 1 and (tmp_path / "swrm_speechbrain" / "summary.csv").is_file()
    assert "- Ours, MOSI-SpeechBrain: swrm_speechbrain (1 seeds; overrides: " in table
