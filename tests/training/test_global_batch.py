"""``global_batch_size``: per-device batch x accumulation from the world size, and DDP equivalence: the same global
batch on 1 and on 2 gloo processes gives the same validation metrics (LF-DNN; Self-MM with ULGM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from msa_lightning.data.sampling import split_global_batch
from msa_lightning.errors import ConfigError
from tests.conftest import REPO, assert_one_line_error, run_msa


def test_split_global_batch():
    assert split_global_batch(32, 1, 8) == (8, 4)  # SKESL on one GPU: Table 9's 32 as 8 x 4
    assert split_global_batch(32, 4, 8) == (8, 1)
    assert split_global_batch(32, 2, 32) == (16, 1)
    assert split_global_batch(48, 2, 16) == (12, 2)  # the largest per-device batch that divides the share
    assert split_global_batch(7, 1, 2) == (1, 7)
    with pytest.raises(ConfigError, match="cannot be split evenly over 3 devices"):
        split_global_batch(32, 3, 32)
    with pytest.raises(ConfigError, match="positive integer"):
        split_global_batch(0, 1, 8)


def test_global_batch_with_explicit_accumulation_is_one_line(synthetic_mosi, cache_dir, tmp_path):
    proc = run_msa(
        "fit",
        "--config",
        "configs/baselines/lf_dnn_mosi.yaml",
        f"--data.path={synthetic_mosi}",
        "--global_batch_size=32",
        "--trainer.accumulate_grad_batches=2",
        f"--trainer.default_root_dir={tmp_path}",
        cache=cache_dir,
        cwd=REPO,
    )
    assert_one_line_error(proc, "global_batch_size 32", "accumulate_grad_batches: 2")


# No dropout anywhere: ranks draw their own masks, which would differ from one process's. LF-DNN and TFN are left
# out: their audio/vision pooling is batch-normalised (MMSA's SubNet), and on CPU torch has no SyncBatchNorm
# ("SyncBatchNorm layers only work with GPU modules"), so each rank normalises its own half of the batch; on GPUs,
# configs/trainer/ddp.yaml's sync_batchnorm: true computes the statistics over the global batch.
MODELS = {
    "selfmm_ulgm": [
        "--config=configs/swrm/selfmm_mosi.yaml",
        "--model.text_model=tiny-bert",
        "--model.finetune_text=false",  # a frozen encoder runs in eval mode: no dropout inside BERT
        "--model.text_dropout=0.0",
        "--model.audio_dropout=0.0",
    ],
}


def _fit(args: list[str], devices: int, folder, cache_dir) -> tuple[subprocess.CompletedProcess, list[dict]]:
    history = folder / "history.jsonl"
    env = {**os.environ, "MSA_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["MSA_METRICS_HISTORY"] = str(history)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "msa_lightning.cli",
            "fit",
            *args,
            "--global_batch_size=single_device",
            "--trainer.accelerator=cpu",
            f"--trainer.devices={devices}",
            *(["--trainer.strategy=ddp"] if devices > 1 else []),
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={folder}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    rows = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []
    return proc, rows


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
def test_same_global_batch_same_validation_on_one_and_two_processes(model, synthetic_mosi, cache_dir, tmp_path):
    args = [*MODELS[model], f"--data.path={synthetic_mosi}", "--data.batch_size=16", "--data.num_workers=0"]
    one, one_rows = _fit(args, 1, tmp_path / "one", cache_dir)
    assert one.returncode == 0, one.stderr[-3000:]
    two, two_rows = _fit(args, 2, tmp_path / "two", cache_dir)
    assert two.returncode == 0, two.stderr[-3000:]
    # Self-MM's config: batch 16, accumulate_grad_batches 4 (MMSA's update_epochs): 64 samples per step
    said = (two.stdout + two.stderr).count("msa: global batch 64 = 16 per device x 2 device(s) x 2 accumulated")
    assert said == 1, two.stderr[-3000:]  # once, by rank 0
    assert "msa: global batch 64 = 16 per device x 1 device(s) x 4 accumulated" in one.stdout + one.stderr
    assert [r["epoch"] for r in one_rows] == [r["epoch"] for r in two_rows] == [0, 1]
    assert [r["step"] for r in one_rows] == [r["step"] for r in two_rows] == [1, 2]  # 64 samples, 64 per step
    for a, b in zip(one_rows, two_rows):
        metrics = [k for k in a if k.startswith("val/")]
        assert metrics and set(metrics) <= set(b)
        for key in metrics:
            assert b[key] == pytest.approx(a[key], abs=2e-5, rel=1e-4), (model, a["epoch"], key)
