"""`msa infer` for TwoStepMSA runs on raw clips: one tiny `msa fit` (BERT and HuBERT saved to folders, loaded
through from_pretrained), then new synthetic videos scored by the command, offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("av")

from conftest import assert_one_line_error, run_msa  # noqa: E402
from test_twostep import msa_in_process  # noqa: E402

from msa_lightning.media.synthetic import make_synthetic_raw, write_synthetic_clip  # noqa: E402


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    """A text + audio TwoStepMSA (single task, SF fusion) fitted by `msa fit` for one epoch on the tiny raw release."""
    import torch

    from msa_lightning.nn.audio_encoder import AudioEncoder
    from msa_lightning.nn.pretrained import load_tokenizer
    from msa_lightning.nn.text_encoder import TextEncoder

    root = tmp_path_factory.mktemp("twostep_infer")
    torch.manual_seed(0)
    bert, hubert = root / "models" / "bert", root / "models" / "hubert"
    TextEncoder("tiny-bert").model.save_pretrained(bert)
    load_tokenizer("tiny-bert").save_pretrained(bert)
    AudioEncoder("tiny-hubert").model.save_pretrained(hubert)
    release, cache = make_synthetic_raw(root / "sims_raw"), root / "cache"
    fit = run_msa(
        "fit",
        "--model=TwoStepMSA",
        "--model.init_args.regime=single",
        "--model.init_args.fusion=sf",
        "--model.init_args.modalities=TA",
        f"--model.init_args.text_model={bert}",
        f"--model.init_args.audio_model={hubert}",
        "--model.init_args.head_hidden=8",
        "--data=RawMediaDataModule",
        f"--data.init_args.path={release}",
        f"--data.init_args.tokenizer={bert}",
        "--data.init_args.text_max_length=12",
        "--data.init_args.sample_rate=8000",
        "--data.init_args.size=16",
        "--data.init_args.batch_size=2",
        f"--trainer.default_root_dir={root / 'runs'}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        cache=cache,
        cwd=root,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    videos = root / "new"
    for name, tone in (("happy", 300.0), ("calm", 500.0)):
        write_synthetic_clip(videos / f"{name}.mp4", seconds=0.8, tone=tone)
    write_synthetic_clip(videos / "silent.mp4", audio=False)
    (videos / "notes.mp4").write_text("not a video\n")
    (videos / "said.tsv").write_text("happy\tthis is great\ncalm\tso boring\n")
    run = next((root / "runs").glob("*/version_0"))
    return {"run": run, "videos": videos, "cache": cache, "root": root, "bert": bert}


def test_infer_scores_new_videos_with_a_raw_clip_run(fitted, tmp_path):
    """Two new videos, decoded as the run's training clips were: exit 0, the table, the CSV, finite scores."""
    videos = [fitted["videos"] / "happy.mp4", fitted["videos"] / "calm.mp4"]
    out = tmp_path / "scores.csv"
    proc = run_msa(
        "infer", *videos, "--ckpt", fitted["run"], "--transcripts", fitted["videos"] / "said.tsv", "--out", out,
        cache=fitted["cache"], cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "class (simsv2 family)" in proc.stdout and all(str(v) in proc.stdout for v in videos)
    rows = list(csv.DictReader(out.open()))
    assert [r["clip"] for r in rows] == [str(v) for v in videos]
    assert [r["text"] for r in rows] == ["this is great", "so boring"]
    assert all(math.isfinite(float(r["score"])) and r["class"] in ("negative", "neutral", "positive") for r in rows)


@pytest.mark.parametrize(
    "video, needles",
    [
        ("notes.mp4", ["notes.mp4", "cannot decode the clip"]),
        ("silent.mp4", ["silent.mp4", "no audio stream", "waveform"]),
    ],
)
def test_a_video_the_run_cannot_read_is_one_error(fitted, tmp_path, video, needles, monkeypatch, capsys):
    """Not a video, or no audio stream for a model that reads audio: exit 2, one line naming the file, no CSV
    (`msa infer` through the console script's entry point in this process: the subprocess is the test above)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = msa_in_process(
        "infer", fitted["videos"] / "happy.mp4", fitted["videos"] / video, "--ckpt", fitted["run"],
        "--out", tmp_path / "scores.csv", "--cache-dir", fitted["cache"], capsys=capsys,
    )  # fmt: skip
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "scores.csv").exists()


def test_a_missing_pretrained_folder_or_openface_csvs_are_one_error(fitted, tmp_path):
    """The checkpoint holds every weight, but the BERT architecture comes from its folder: gone, one error naming it.
    OpenFace CSVs for a raw-clip model: refused, not ignored."""
    from msa_lightning.errors import ConfigError
    from msa_lightning.experiments.infer import infer

    video, run, out = str(fitted["videos"] / "happy.mp4"), str(fitted["run"]), str(tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="--openface: the model of --ckpt .* was trained on raw clips"):
        infer([video], run, out, openface=str(tmp_path))
    moved = fitted["root"] / "bert_moved"
    shutil.move(fitted["bert"], moved)
    try:
        with pytest.raises(ConfigError, match=str(fitted["bert"])) as err:
            infer([video], run, out, echo=lambda s: None)
    finally:
        shutil.move(moved, fitted["bert"])
    assert "--ckpt" in str(err.value) and not (tmp_path / "x.csv").exists()


def test_a_checkpoint_without_extraction_or_decoding_settings_is_one_error(tmp_path):
    """Neither a feature file's extraction nor a raw-clip DataModule in the checkpoint: one error saying so."""
    import torch

    from msa_lightning.errors import ConfigError
    from msa_lightning.experiments.infer import infer

    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "TwoStepMSA"}}, ckpt)
    with pytest.raises(ConfigError, match="neither extraction nor decoding settings"):
        infer([str(tmp_path / "a.mp4")], str(ckpt), str(tmp_path / "x.csv"), echo=lambda s: None)
    assert not (tmp_path / "x.csv").exists()
