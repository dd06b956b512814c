"""SKESL from raw videos: ``msa pipeline`` extracts MOSI-like clips the pretraining way (librosa 33-d,
OpenFace 709-d), pretrains, and fine-tunes from the pretraining checkpoint; the stages' feature sizes are
checked before the first stage runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, assert_one_line_error, run_msa

from msa_lightning.errors import ConfigError
from msa_lightning.media.openface import VISION_DIM, write_openface_csv
from msa_lightning.media.synthetic import make_synthetic_raw

EXTRACTED = REPO / "configs" / "skesl" / "pipeline_bert_base_extracted.yaml"
TINY_NET = [
    "--model.init_args.text_model=tiny-bert",
    "--model.init_args.num_blocks=2",
    "--model.init_args.ffn_dim=16",
    "--model.init_args.head_hidden=8",
    "--data.init_args.tokenizer=tiny-bert",
    "--data.init_args.text_max_length=16",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=0",
    "--trainer.max_epochs=1",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
]


def test_the_shipped_pipeline_refuses_mmsa_features_before_pretraining(synthetic_mosi, tmp_path):
    """MOSI's MMSA-shaped file (5-d audio, 20-d vision) given to the fine-tuning stage of the extracted pipeline:
    one line naming the stages, the key and both sizes; no stage ran, no folder was made."""
    out = tmp_path / "runs"
    proc = run_msa(
        "pipeline", EXTRACTED, "--out", out, "--set", f"mosi:data.init_args.path={synthetic_mosi}", cache=tmp_path
    )
    assert_one_line_error(
        proc,
        "pipeline skesl_bert_base_extracted",
        "stage 'mosi' loads the checkpoint of 'pretrain' (model.init_args.pretrained=${pretrain.last_ckpt})",
        "trained on audio 33, vision 709",
        f"its data {synthetic_mosi} gives audio 5, vision 20",
        "nothing was run",
    )
    assert "mosi_features" not in proc.stderr.replace("stage 'mosi'", "")  # no stage started
    assert not out.exists()


def test_a_stage_setting_sizes_its_data_does_not_fit_is_named(synthetic_mosi, tmp_path):
    from msa_lightning.experiments.pipeline import pipeline_plan

    with pytest.raises(ConfigError, match=r"stage 'pretrain' sets audio 33, vision 709 \(model.init_args\) but its "):
        pipeline_plan(EXTRACTED, settings=[f"pretrain:data.init_args.path={synthetic_mosi}"], out=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"no stage is named 'mosii'"):
        pipeline_plan(EXTRACTED, settings=["mosii:data.init_args.path=x"], out=tmp_path / "r")


def test_fine_tuning_audio_extracted_otherwise_than_the_pretraining_shards_is_named(tmp_path):
    """librosa's 33-d audio with another pitch column has the shards' size but other values: a fine-tuning
    stage whose features stage uses --f0 zcr under a checkpoint pretrained on pyin shards is refused before any
    stage runs; the same settings pass."""
    from msa_lightning.experiments.pipeline import pipeline_plan

    shards = tmp_path / "shards"
    shards.mkdir()
    settings = {"f0": "pyin", "sample_rate": 22050, "hop_length": 512, "audio_frames": 400, "vision_frames": 55}
    (shards / "manifest.json").write_text(json.dumps({"audio_dim": 33, "vision_dim": 709, "settings": settings}))
    given = [f"pretrain:data.init_args.path={shards}"]
    with pytest.raises(ConfigError) as refused:
        pipeline_plan(EXTRACTED, settings=[*given, "mosi_features:f0=zcr"], out=tmp_path / "r")
    message = str(refused.value)
    assert (
        "stage 'mosi' loads the checkpoint of 'pretrain' (model.init_args.pretrained=${pretrain.last_ckpt})" in message
    )
    assert f"extracted with f0 pyin, sample_rate 22050, hop_length 512 (shards {shards})" in message
    assert "features stage 'mosi_features'" in message and "f0 zcr, sample_rate 22050, hop_length 512" in message
    assert "stage 'mosei'" not in message  # its features stage keeps pyin
    assert pipeline_plan(EXTRACTED, settings=given, out=tmp_path / "r")  # the shipped settings: the shards' own


@pytest.fixture(scope="module")
def raw_mosi(tmp_path_factory) -> Path:
    """Six MOSI-like clips (no unimodal labels) and an OpenFace 2.x CSV (709 features) for each."""
    root = make_synthetic_raw(tmp_path_factory.mktemp("skesl_raw") / "raw", clips=6, unimodal=False)
    rng = np.random.default_rng(0)
    for video in sorted((root / "Raw").iterdir()):
        for clip in sorted(video.glob("*.mp4")):
            frames = rng.normal(size=(5, VISION_DIM)).round(3)
            write_openface_csv(root / "openface" / video.name / f"{clip.stem}.csv", frames, np.ones(5, bool))
    return root


def test_raw_clips_to_features_to_pretraining_to_finetuning(raw_mosi, tmp_path, stages_in_process, caplog, monkeypatch):
    """One pipeline: `msa features extract` (librosa + OpenFace), SKESL pretraining on that file, fine-tuning from
    its last checkpoint (BERT frozen there, so the fine-tuned BERT is the pretrained one); a second run skips
    every stage, the features one included."""
    from msa_lightning import store
    from msa_lightning.data import cache
    from msa_lightning.experiments.pipeline import read_record, run_pipeline

    monkeypatch.setattr(store, "DEFAULT_ROOT", tmp_path / "cache")  # the stages run in this process
    monkeypatch.setattr(cache, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    spec = {
        "name": "skesl_tiny",
        "out": "runs",
        "stages": [
            {
                "name": "mosi_features",
                "command": "features extract",
                "args": [
                    "--raw",
                    str(raw_mosi),
                    "--vision",
                    "openface:raw/openface",
                    "--f0",
                    "zcr",
                    "--tokenizer",
                    "tiny-bert",
                    "--audio-frames",
                    "40",
                    "--vision-frames",
                    "5",
                ],
            },  # fmt: skip
            {
                "name": "pretrain",
                "needs": ["mosi_features"],
                "args": [
                    "--model=msa_lightning.papers.skesl.module.SKESLPretrain",
                    "--data=msa_lightning.papers.skesl.data.SKESLMaskedDataModule",
                    "--data.init_args.path=${mosi_features.features}",
                    "--checkpoint.monitor=val/loss",
                    "--checkpoint.mode=min",
                    *TINY_NET,
                ],
            },  # fmt: skip
            {
                "name": "mosi",
                "needs": ["pretrain", "mosi_features"],
                "args": [
                    "--config",
                    str(REPO / "configs/skesl/mosi_bert_base.yaml"),
                    "--config",
                    str(REPO / "configs/skesl/mosi_extracted.yaml"),
                    "--data.init_args.path=${mosi_features.features}",
                    "--model.init_args.pretrained=${pretrain.last_ckpt}",
                    "--model.init_args.finetune_text=false",
                    *TINY_NET,
                ],
            },  # fmt: skip
        ],
    }
    (tmp_path / "raw").symlink_to(raw_mosi)  # `openface:raw/openface`: relative to the pipeline file's folder
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    records = run_pipeline(path)
    assert [c[0] for c in stages_in_process] == ["features", "fit", "fit"]
    features = Path(records["mosi_features"]["features"])
    assert features == tmp_path / "runs" / "mosi_features" / "features.pkl"
    settings = json.loads(features.with_name("features.manifest.json").read_text())["settings"]
    assert (settings["audio"]["dim"], settings["vision"]["dim"], settings["audio"]["extractor"]) == (33, 709, "librosa")
    pretrained = torch.load(records["pretrain"]["last_ckpt"], map_location="cpu", weights_only=False)
    tuned = torch.load(records["mosi"]["last_ckpt"], map_location="cpu", weights_only=False)
    assert tuned["hyper_parameters"]["pretrained"] == records["pretrain"]["last_ckpt"]
    assert (tuned["hyper_parameters"]["audio_dim"], tuned["hyper_parameters"]["vision_dim"]) == (33, 709)
    bert = [k for k in tuned["state_dict"] if k.startswith("net.encoder.text_encoder.")]
    assert bert and all(torch.equal(tuned["state_dict"][k], pretrained["state_dict"][k]) for k in bert)
    assert read_record(tmp_path / "runs" / "mosi")["status"] == "finished"

    stages_in_process.clear()
    with caplog.at_level(logging.INFO, logger="msa_lightning.experiments.pipeline"):
        run_pipeline(path)
    assert stages_in_process == []
    assert "stage mosi_features is up to date, skipped" in caplog.text


def test_data_sizes_come_from_manifests_and_array_shapes(synthetic_mosi, tmp_path):
    """Shards: their manifest.json; a file of `msa features extract`: its manifest; a feature pickle (protocol 4
    or 5): its arrays' shapes, read without building them; anything not there yet: unknown."""
    import pickle

    from msa_lightning.data.custom import MANIFEST_FORMAT
    from msa_lightning.experiments.pipeline_sizes import Sizes, data_sizes, stage_settings

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps({"audio_dim": 33, "vision_dim": 427}))
    assert data_sizes(shards) == Sizes(33, 427, f"shards {shards}")  # no settings: librosa's not known
    extracted = tmp_path / "mine.pkl"
    extracted.write_bytes(b"not read: the manifest says")
    settings = {"audio": {"dim": 33}, "vision": {"dim": 709}}
    (tmp_path / "mine.manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT, "settings": settings}))
    assert (data_sizes(extracted).audio, data_sizes(extracted).vision) == (33, 709)
    five = tmp_path / "five.pkl"
    five.write_bytes(pickle.dumps(pickle.loads(synthetic_mosi.read_bytes()), protocol=5))
    for path in (synthetic_mosi, five):
        assert (data_sizes(path).audio, data_sizes(path).vision) == (5, 20), path
    assert data_sizes(tmp_path / "absent.pkl") is None and data_sizes(tmp_path / "mine.manifest.json") is None
    # a stage's words: config files, then options; switching the data class drops the config's data arguments
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  init_args:\n    audio_dim: 5\ndata:\n  class_path: A\n  init_args:\n    path: x.pkl\n")
    assert stage_settings(["--config", str(config), "--model.init_args.audio_dim=33"])["model.audio_dim"] == 33
    assert "data.path" not in stage_settings(["--config", str(config), "--data", "B"])
