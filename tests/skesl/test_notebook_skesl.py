"""notebooks/skesl.ipynb runs top to bottom on a tiny synthetic corpus: `msa fit` pretraining with the
shipped config, the loss plot from the run's metrics.csv, and the table of masked words with their true
(VADER x 3/4) and predicted intensities."""

import re

import pytest
from conftest import execute_notebook

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

EPOCHS = 2


@pytest.mark.slow
def test_skesl_notebook_executes(tmp_path, monkeypatch):
    # no seeds: the closing `msa report --paper skesl` shows the paper's numbers only (the stored notebook has our
    # row from two seeds: tests/experiments/test_notebooks_stored.py)
    nb = execute_notebook(
        "skesl.ipynb",
        tmp_path,
        {"MSA_NOTEBOOK_CLIPS": "16", "MSA_NOTEBOOK_EPOCHS": str(EPOCHS), "MSA_NOTEBOOK_SEEDS": ""},
    )

    assert (tmp_path / "skesl_pretraining_loss.png").stat().st_size > 1000
    metrics = next((tmp_path / "runs").rglob("metrics.csv")).read_text()
    assert "train/loss_epoch" in metrics and "val/loss" in metrics
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "16 of 16 clips used" in printed and "audio 33-d, vision 709-d" in printed
    epochs = re.findall(r"^\s*(\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)$", printed, flags=re.MULTILINE)
    assert [int(e) for e, _, _ in epochs] == list(range(EPOCHS)), printed  # one train and one valid loss per epoch

    tables = [
        o["data"]["text/markdown"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "text/markdown" in o.get("data", {})
    ]
    assert len(tables) == 2 and tables[1].startswith("Qian et al., Sentiment Knowledge Enhanced")
    assert "| Ours (SKESL) | Unaligned | ours |  |" in tables[1]  # the row we reproduce, empty without a run
    rows = [line.strip("|").split(" | ") for line in tables[0].splitlines()[2:]]
    assert rows, tables[0]
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer().lexicon
    for clip, text, word, raw, true, predicted in (map(str.strip, r) for r in rows):
        assert "[MASK]" in text and word not in text.lower().split(), (clip, text, word)
        if raw == "-":  # the random fallback
            assert float(true) == 0.0
        else:  # the lexicon's valence, scaled from [-4, 4] to [-3, 3]
            assert float(raw) == pytest.approx(vader[word], abs=0.05)
            assert float(true) == pytest.approx(vader[word] * 3 / 4, abs=1e-3)
        assert abs(float(predicted)) < 10  # a finite number from the model
    assert any(raw != "-" for _, _, _, raw, _, _ in rows)
