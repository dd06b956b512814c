"""`msa report`: the paired t-test over seeds and the FmlMSN table in the layout of Tables 7-8.

Result folders are written by hand here (per_seed.csv through ``write_seed_tables``; pipeline stage
folders as ``msa pipeline`` + the CSV logger leave them), so nothing trains.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from msa_lightning.errors import MSAError
from msa_lightning.experiments.results import paired_ttest, ttest_table, write_seed_tables
from msa_lightning.papers.fmlmsn.report import fmlmsn_results, fmlmsn_table

# ---------------------------------------------------------------------------------------------- t-test
A = {1111: {"mae": 0.40, "acc2": 0.80}, 1112: {"mae": 0.42, "acc2": 0.78}, 1113: {"mae": 0.39, "acc2": 0.81}}
# B in another row order, with a seed A lacks: pairs must follow the seed number, not the row
B = {
    1113: {"mae": 0.43, "acc2": 0.80},
    1114: {"mae": 0.10, "acc2": 0.99},
    1111: {"mae": 0.44, "acc2": 0.76},
    1112: {"mae": 0.44, "acc2": 0.77},
}


def _hand_ttest(x, y):
    """t and the two-sided p of a paired t-test, by hand: the t distribution's tail has a closed form
    for 1 degree of freedom (Cauchy) and for 2."""
    d = [a - b for a, b in zip(x, y)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    if n == 2:
        p = 1 - 2 / math.pi * math.atan(abs(t))
    elif n == 3:
        p = 1 - abs(t) / math.sqrt(2 + t * t)
    else:
        raise ValueError(n)
    return mean, t, p


@pytest.fixture
def seed_runs(tmp_path):
    write_seed_tables(A, tmp_path / "a", "model_a")
    write_seed_tables(B, tmp_path / "b", "model_b")
    return tmp_path / "a", tmp_path / "b"


def test_paired_ttest_matches_a_hand_computation(seed_runs):
    a, b = seed_runs
    result = paired_ttest(a, b)
    assert result["seeds"] == [1111, 1112, 1113]  # 1114 is only in B
    for name in ("mae", "acc2"):
        x = [A[s][name] for s in (1111, 1112, 1113)]
        y = [B[s][name] for s in (1111, 1112, 1113)]
        mean, t, p = _hand_ttest(x, y)
        got = result["metrics"][name]
        assert got["mean_diff"] == pytest.approx(mean)
        assert got["t"] == pytest.approx(t)
        assert got["p"] == pytest.approx(p, rel=1e-9)
        assert got["mean_a"] == pytest.approx(sum(x) / 3) and got["mean_b"] == pytest.approx(sum(y) / 3)
    # mae: A lower by 0.04, 0.02, 0.04 -> t = -0.0333 / (0.01155 / sqrt 3) = -5.0, p = 1 - 5 / sqrt 27
    assert result["metrics"]["mae"]["t"] == pytest.approx(-5.0)
    assert result["metrics"]["mae"]["p"] == pytest.approx(1 - 5 / math.sqrt(27))
    table = ttest_table(a, b)
    assert "3 seeds (1111, 1112, 1113)" in table and "df = 2" in table
    row = next(line for line in table.splitlines() if line.startswith("| mae |"))
    assert "-0.0333" in row and "-5.000" in row and "| yes |" in row  # p = 0.0377 < 0.05


def test_two_shared_seeds_and_too_few(tmp_path, seed_runs):
    a, _ = seed_runs
    write_seed_tables({1112: {"mae": 0.5}, 1111: {"mae": 0.41}, 7: {"mae": 0.0}}, tmp_path / "c", "c")
    result = paired_ttest(a, tmp_path / "c")
    assert result["seeds"] == [1111, 1112] and list(result["metrics"]) == ["mae"]  # acc2 only in A
    mean, t, p = _hand_ttest([0.40, 0.42], [0.41, 0.5])
    assert result["metrics"]["mae"]["t"] == pytest.approx(t) and result["metrics"]["mae"]["p"] == pytest.approx(p)

    write_seed_tables({1111: {"mae": 0.5}, 9: {"mae": 0.4}}, tmp_path / "d", "d")
    with pytest.raises(MSAError, match=r"share 1 seed\(s\); it needs at least 2") as err:
        paired_ttest(a, tmp_path / "d")
    assert "seeds 1111, 1112, 1113" in str(err.value) and "seeds 9, 1111" in str(err.value)
    with pytest.raises(MSAError, match="no per_seed.csv there"):
        paired_ttest(a, tmp_path)


# ---------------------------------------------------------------------------------------------- FmlMSN table
def _metrics(prefix, tasks, base):
    """A metric row as the stage modules log it: the bimodal task plain, unimodal tasks as ``A_mae``."""
    row = {f"{prefix}/{k}": v + base for k, v in dict(acc2=0.7, acc3=0.5, acc5=0.3, f1=0.69, mae=0.4, corr=0.5).items()}
    row[f"{prefix}/loss"] = 1.0
    row[f"{prefix}/mae_vs_M"] = 0.45
    for i, task in enumerate(tasks):
        row.update({f"{prefix}/{task}_{k}": v + base + 0.01 * (i + 1) for k, v in dict(acc2=0.6, mae=0.5).items()})
    return row


def _logged_run(folder: Path, rows: list[dict], hparams: dict, ckpt_path=None) -> None:
    """A CSV-logger folder: metrics.csv (train and eval rows interleaved), hparams.yaml, config.yaml."""
    folder.mkdir(parents=True)
    names = ["epoch", "step"] + sorted({k for r in rows for k in r} - {"epoch", "step"})
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, names)
        w.writeheader()
        w.writerows(rows)
    (folder / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    (folder / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": ckpt_path, "model": {"init_args": hparams}}))


def _stage(out: Path, name: str, hparams: dict, best_epoch: int, tasks=(), epochs=3) -> Path:
    folder = out / name
    (folder / "checkpoints").mkdir(parents=True)
    best = folder / "checkpoints" / f"best-{best_epoch:02d}.ckpt"
    torch.save({"epoch": best_epoch, "global_step": 5 * (best_epoch + 1)}, best)
    rows = []
    for epoch in range(epochs):
        rows.append({"epoch": epoch, "step": 5 * epoch + 4, **_metrics("val", tasks, base=0.1 * epoch)})
        rows.append({"epoch": epoch, "step": 5 * epoch + 4, "train/loss_epoch": 1.0})
    _logged_run(folder / "msa" / "version_0", rows, hparams)
    record = {
        "stage": name,
        "status": "finished",
        "best_ckpt": str(best),
        "dir": str(folder),
        "last_ckpt": str(folder / "checkpoints" / "last.ckpt"),
        "command": ["fit"],
    }
    (folder / "stage.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def pipeline_out(tmp_path):
    out = tmp_path / "fmlmsn"
    for pair, best in (("AV", 1), ("AT", 0), ("VT", 2)):
        _stage(out, f"stage_{pair.lower()}", {"pair": pair, "label_source": "fine"}, best, tasks=pair)
    meta = _stage(out, "meta", {"stages": ["AV", "AT", "VT"], "retrain_threshold": 0.74}, 2)
    (meta / "msa" / "version_0" / "eq8.json").write_text(
        json.dumps(
            {
                "p": 0.78,
                "threshold": 0.74,
                "total": 10,
                "draws": 5,
                "seed": 0,
                "epoch": 2,
                "decision": "reuse the stages",
            }
        )
    )
    (out / "unfinished").mkdir()
    (out / "unfinished" / "stage.json").write_text(json.dumps({"status": "running"}))
    return out


def test_fmlmsn_table_rows_come_from_each_stage_best_epoch(pipeline_out):
    res = fmlmsn_results(pipeline_out)
    assert res["split"] == "valid" and res["label_source"] == "fine"
    assert [(g, t) for g, t, _ in res["rows"]] == [
        ("AV", "A"),
        ("AV", "V"),
        ("AV", "A+V"),
        ("AT", "A"),
        ("AT", "T"),
        ("AT", "A+T"),
        ("VT", "V"),
        ("VT", "T"),
        ("VT", "V+T"),
        ("M", "A+V+T"),
    ]
    assert res["columns"] == ["acc2", "acc3", "acc5", "f1", "mae", "corr"]  # the paper's order, no losses
    rows = {(g, t): m for g, t, m in res["rows"]}
    assert rows[("AV", "A+V")]["mae"] == pytest.approx(0.5)  # best epoch 1: 0.4 + 0.1
    assert rows[("AV", "V")]["mae"] == pytest.approx(0.62)  # V is AV's second task: 0.5 + 0.1 + 0.02
    assert rows[("AT", "A")]["acc2"] == pytest.approx(0.61)  # best epoch 0
    assert rows[("M", "A+V+T")]["corr"] == pytest.approx(0.7)  # epoch 2
    table = fmlmsn_table(pipeline_out)
    lines = table.splitlines()
    assert "valid split" in lines[0] and "Table 7" in lines[0]
    assert lines[2] == "| stage | task | acc2 | acc3 | acc5 | f1 | mae | corr |"
    assert lines[4].startswith("| A, V | A | 0.7100 |") and lines[5].startswith("|  | V |")
    assert lines[-1].startswith("Eq. 8: p = 0.780") and lines[-1].endswith("threshold 0.74 -> reuse the stages")


def test_fmlmsn_table_test_split_only_from_a_test_of_the_best_checkpoint(pipeline_out):
    def tested(stage, ckpt, mae, version):
        row = {"epoch": 0, "step": 0, **{k: v for k, v in _metrics("test", (), 0.0).items()}, "test/mae": mae}
        hparams = yaml.safe_load((pipeline_out / stage / "msa" / "version_0" / "hparams.yaml").read_text())
        _logged_run(pipeline_out / stage / "msa" / version, [row], hparams, ckpt_path=str(ckpt))

    for stage in ("stage_av", "stage_at", "stage_vt", "meta"):
        best = json.loads((pipeline_out / stage / "stage.json").read_text())["best_ckpt"]
        tested(stage, best, 0.25, "version_1")
    assert fmlmsn_results(pipeline_out)["split"] == "test"
    assert {m["mae"] for _, t, m in fmlmsn_results(pipeline_out)["rows"] if "+" in t} == {0.25}
    # a test of another checkpoint (an older stage) does not count
    stale = pipeline_out / "stage_vt" / "msa" / "version_1"
    cfg = yaml.safe_load((stale / "config.yaml").read_text())
    cfg["ckpt_path"] = str(pipeline_out / "stage_vt" / "checkpoints" / "best-00.ckpt")
    (stale / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert fmlmsn_results(pipeline_out)["split"] == "valid"  # auto: not every stage has a test
    with pytest.raises(MSAError, match=r"stage_vt: no test metrics of the best checkpoint \(test its best"):
        fmlmsn_results(pipeline_out, "test")


def test_fmlmsn_table_on_a_folder_without_stages(tmp_path):
    with pytest.raises(MSAError, match="no finished FmlMSN stage or meta-learner there"):
        fmlmsn_results(tmp_path)
    with pytest.raises(MSAError, match="no such folder"):
        fmlmsn_results(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- the command
def _msa(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", "report", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_msa_report_command(tmp_path, seed_runs):
    """The real command in a subprocess: a t-test (a missing folder as one `msa: error:` line: below, in-process)."""
    a, b = seed_runs
    done = _msa(a, b, "--ttest", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    mae = next(line for line in done.stdout.splitlines() if line.startswith("| mae |"))
    assert f"| {1 - 5 / math.sqrt(27):.4g} | yes |" in mae  # p of the hand computation above


def _main(*args):
    """``msa report ...`` in-process through the command's entry point (its exit code and error boundary)."""
    from msa_lightning.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", *map(str, args)])
    return exit_.value.code


def test_msa_report_names_a_missing_folder_in_one_line(tmp_path, seed_runs, capsys):
    """Through the command's error boundary (``main``, in-process: the subprocess of the test above would only
    add seconds of imports): exit status 2 and exactly one ``msa: error:`` line on stderr."""
    a, _ = seed_runs
    assert _main(a, tmp_path / "missing", "--ttest") == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"msa: error: {tmp_path / 'missing'}: no such file or folder (give a folder written by `msa seeds`, or its "
        "per_seed.csv)"
    ], err[-2000:]


def test_msa_report_fmlmsn_and_wrong_number_of_runs(pipeline_out, seed_runs, capsys):
    assert _main(pipeline_out, "--fmlmsn") == 0
    out = capsys.readouterr().out
    assert "| M | A+V+T | 0.9000 |" in out and "Eq. 8: p = 0.780" in out
    assert _main(seed_runs[0], "--ttest") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msa: error: report --ttest compares two result folders, got 1")


def test_msa_report_on_tables_it_cannot_read(tmp_path, seed_runs):
    """A summary.csv with a header only (no seed finished) and another tool's CSV: one error line each."""
    header_only = tmp_path / "header_only"
    header_only.mkdir()
    (header_only / "summary.csv").write_text("run,n_seeds,mae_mean,mae_std\r\n")
    proc = _msa(seed_runs[0], header_only, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"msa: error: {header_only / 'summary.csv'}: a header and no results (no seed has finished: rerun "
        "`msa seeds` or wait for it)"
    ]
    other = tmp_path / "metrics.csv"
    other.write_text("epoch,step,val/mae\n0,3,0.7\n")
    proc = _msa(other, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"msa: error: {other}, line 1: columns ['epoch', 'step', 'val/mae']")
    assert "another tool's CSV?" in lines[0]


def test_report_reads_every_row_and_names_bad_ones(tmp_path, seed_runs):
    from msa_lightning.experiments.results import report

    table = report([seed_runs[0], seed_runs[1] / "summary.csv"])
    assert "model_a (a, n=3)" in table and "model_b (b, n=4)" in table
    bad = tmp_path / "bad.csv"
    bad.write_text("run,n_seeds,mae_mean\nx,2,0.5\n")
    with pytest.raises(MSAError, match=r"bad.csv, line 1: unknown or unpaired columns \['mae_std'\]"):
        report([bad])
    bad.write_text("run,n_seeds,mae_mean,mae_std\nx,two,0.5,0.1\n")
    with pytest.raises(MSAError, match="bad.csv, line 2: not a number"):
        report([bad])
    bad.write_bytes(b"run,n_seeds,mae_mean,mae_std\nmod\xe8le,2,0.5,0.1\n")
    with pytest.raises(MSAError, match="bad.csv, line 2: the summary file is not UTF-8"):
        report([bad])
