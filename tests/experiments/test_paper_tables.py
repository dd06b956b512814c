"""``msa report --paper NAME [RESULT DIRS]``: each paper's table with its published numbers (checked against the
paper's text where ../shared is present), ours from result folders as mean ± std in the paper's units."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import assert_one_line_error, msa_in_process, run_msa  # noqa: E402

from msa_lightning.experiments.paper_tables import PAPERS, load_published, paper_table  # noqa: E402

PAPER_TEXTS = Path(__file__).resolve().parents[3] / "shared" / "papers"
TEXT_OF = {
    "skesl": "skesl-acl2023-findings.txt",
    "fmlmsn": "fmlmsn-eswa2023.txt",
    "twostep": "twostep-boosting-msa-icassp.txt",
    "swrm": "swrm-acl2022-findings.txt",
    "hybrid_shift": "hybrid-shift-hma-tmm2024.txt",
}
REPO = Path(__file__).resolve().parents[2]


def _result_folder(folder: Path, configs: list[str], per_seed: dict[int, dict[str, float]], **record) -> Path:
    """A folder as `msa seeds` leaves it: per_seed.csv, summary.csv and seeds.json naming the configs it ran."""
    from msa_lightning.experiments.results import write_seed_tables

    write_seed_tables(per_seed, folder, "run")
    seeds = {"format": 1, "name": "run", "configs": [{"path": c, "yaml": {}} for c in configs], "overrides": []}
    (folder / "seeds.json").write_text(json.dumps({**seeds, **record}))
    return folder


@pytest.mark.parametrize("paper", PAPERS)
def test_published_numbers_are_the_papers(paper):
    """Every published number is in the paper's text as printed, each row's numbers in the paper's order on one
    line of it, and every config a row names is shipped."""
    _, tables = load_published(paper)
    text = (PAPER_TEXTS / TEXT_OF[paper]).read_text() if PAPER_TEXTS.is_dir() else None
    lines = [re.sub(r"<[^>]+>|\[[^\]]*\]", " ", line).split() for line in (text or "").splitlines()]
    for table in tables:
        for row in table.rows:
            for dataset, values in row.published.items():
                printed = [v for v in values if v is not None]
                if text is not None and len(printed) > 1:
                    assert any(_in_order(printed, line) for line in lines), (paper, table.id, row.name, dataset)
            for specs in row.runs.values():
                for spec in specs:
                    assert (REPO / spec.partition(":")[0]).is_file(), spec


def _in_order(values: list[str], words: list[str]) -> bool:
    it = iter(words)
    return all(any(w == v for w in it) for v in values)


def test_fmlmsn_table_4_with_our_runs_as_hand_computed(tmp_path):
    """Self-MM over two seeds (acc2 0.80/0.82, mae 0.40/0.42, ...): mean ± sample std in %, MAE as is; a row we
    did not run (FmlMSN) has an empty `ours` line."""
    folder = _result_folder(
        tmp_path / "selfmm_sims",
        ["/home/me/msa_lightning/configs/swrm/selfmm_sims.yaml"],
        {
            1111: {"acc2": 0.80, "acc3": 0.60, "acc5": 0.40, "f1": 0.81, "mae": 0.40, "corr": 0.55},
            1112: {"acc2": 0.82, "acc3": 0.64, "acc5": 0.40, "f1": 0.79, "mae": 0.42, "corr": 0.59},
        },
    )
    proc = run_msa("report", "--paper", "fmlmsn", "--table", "4", str(folder))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Peng et al., A fine-grained modal label-based") and "Table 4" in lines[0]
    assert "| model | from | Acc-2 (%) | Acc-3 (%) | Acc-5 (%) | F1 (%) | MAE | Corr | reproduce |" in lines
    assert "| Self-MM | paper | 80.04 | 65.47 | 41.53 | 80.44 | 0.425 | 0.595 | swrm/selfmm_sims.yaml |" in lines
    assert (
        "| Self-MM | ours (n=2) | 81.00 ± 1.41 | 62.00 ± 2.83 | 40.00 ± 0.00 | 80.00 ± 1.41 "
        "| 0.410 ± 0.014 | 0.570 ± 0.028 |  |" in lines
    )
    assert "| FmlMSN | ours |  |  |  |  |  |  |  |" in lines  # reproducible, not run here: empty, not zero
    assert "| EF-LSTM | paper | 69.37 | 54.27 | 21.23 | 56.82 | 0.591 | 0.055 | not built |" in lines
    assert not any(line.startswith("| EF-LSTM | ours") for line in lines)
    assert f"- Self-MM, CH-SIMS: {folder} (2 seeds)" in lines
    assert any(line.startswith("- FmlMSN: needs data, ") and "bimodal" in line for line in lines)


def test_skesl_pipeline_result_side_by_side(tmp_path):
    """A folder of `msa pipeline --seeds` (seeds.json names the pipeline and its result stage) fills its dataset's
    half of the row; the other dataset's cells stay empty."""
    folder = _result_folder(
        tmp_path / "skesl",
        ["configs/skesl/pipeline_bert.yaml"],
        {1111: {"acc2_has0": 0.5, "f1_has0": 0.5, "mae": 1.0, "corr": 0.1}},
        pipeline="configs/skesl/pipeline_bert.yaml",
        stage="mosi",
        overrides=["trainer.max_epochs=1"],
    )
    table = paper_table("skesl", [folder])
    assert (
        "| Ours (SKESL) | Unaligned | ours (n=1) | 50.00 ± 0.00 | 50.00 ± 0.00 | 1.000 ± 0.000 | 0.100 ± 0.000 "
        "|  |  |  |  |  |" in table
    )
    assert f"- Ours (SKESL), CMU-MOSI: {folder} (1 seeds; overrides: trainer.max_epochs=1)" in table


def test_report_paper_errors(tmp_path, capsys):
    unknown = _result_folder(tmp_path / "tfn", ["configs/baselines/tfn_mosi.yaml"], {1111: {"mae": 1.0}})
    proc = msa_in_process(capsys, "report", "--paper", "skesl", str(unknown))
    assert_one_line_error(proc, str(unknown), "configs/baselines/tfn_mosi.yaml, which fills no row of skesl's table")
    a = _result_folder(tmp_path / "a", ["configs/swrm/selfmm_sims.yaml"], {1111: {"mae": 1.0}})
    b = _result_folder(tmp_path / "b", ["configs/swrm/selfmm_sims.yaml"], {1111: {"mae": 1.0}})
    proc = msa_in_process(capsys, "report", "--paper", "fmlmsn", "--table", "4", str(a), str(b))
    assert_one_line_error(proc, f"{a} and {b} both fill row 'Self-MM', CH-SIMS, of Table 4")
    proc = msa_in_process(capsys, "report", "--paper", "fmlmsn", "--table", "9")
    assert_one_line_error(proc, "--table 9: fmlmsn has tables 4, 5")
    (tmp_path / "bare").mkdir()
    proc = msa_in_process(capsys, "report", "--paper", "swrm", str(tmp_path / "bare"))
    assert_one_line_error(proc, "no seeds.json")


@pytest.mark.parametrize("paper", PAPERS)
def test_config_readme_lists_every_row(paper):
    """configs/<paper>/README.md holds the row notes as the published file gives them (regenerate with
    ``python -c "from msa_lightning.experiments.paper_tables import row_notes; print(row_notes('NAME'))"``)."""
    from msa_lightning.experiments.paper_tables import row_notes

    assert row_notes(paper) in (REPO / "configs" / paper / "README.md").read_text(encoding="utf-8")
