"""TwoStepMSA without silent defaults: Video Swin weights converted and checked key by key (`msa weights
convert-swin3d`), no random Swin unless asked for, no step 2 on extractors step 1 never tuned, an audio-only model on
clips without video, TFN as in the paper and MulT's reference dropouts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

pytest.importorskip("av")

from conftest import assert_one_line_error, msa_in_process, run_msa  # noqa: E402
from test_raw_media import _dm, make_dataset  # noqa: E402

from msa_lightning.errors import ConfigError, DataError, MSAError  # noqa: E402
from msa_lightning.media.synthetic import write_synthetic_clip  # noqa: E402
from msa_lightning.nn.video_swin import (  # noqa: E402
    CONFIGS,
    SwinTransformer3d,
    VideoSwinEncoder,
    build_video_swin,
    convert_swin3d,
)
from msa_lightning.papers.twostep.module import TwoStepMSA  # noqa: E402

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs" / "twostep"


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny raw release (one clip without a video stream) and its store, shared by this module's runs."""
    root = tmp_path_factory.mktemp("weights")
    release = make_dataset(root / "raw")
    write_synthetic_clip(release / "Raw" / "vidA" / "2.mp4", seconds=0.6, video=False)
    return release, root / "cache"


def _torchvision_layout_file(path: Path, drop: str | None = None, extra: str | None = None) -> dict:
    """A state dict in torchvision's ``SwinTransformer3d`` key layout (tiny size, 5 classes, every tensor
    perturbed), saved with ``torch.save`` as the published ``.pth`` files are."""
    torch.manual_seed(7)
    state = {k: v + torch.rand_like(v.float()).to(v.dtype) if v.is_floating_point() else v for k, v in
             SwinTransformer3d(**CONFIGS["tiny-swin3d"], num_classes=5).state_dict().items()}  # fmt: skip
    saved = {k: v for k, v in state.items() if k != drop}
    if extra:
        saved[extra] = torch.zeros(3)
    torch.save(saved, path)
    return state


def test_msa_weights_convert_swin3d_checks_every_key_and_the_suite_loads_it(tmp_path, capsys):
    """The conversion in-process (the console script's entry point); its one error as a person sees it."""
    state = _torchvision_layout_file(tmp_path / "swin3d_tiny.pth")
    proc = msa_in_process(
        capsys, "weights", "convert-swin3d", tmp_path / "swin3d_tiny.pth", "--out", tmp_path / "converted"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny-swin3d" in proc.stdout and f"{len(state)} tensors, every key and shape checked" in proc.stdout
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["arch"] == "tiny-swin3d" and config["num_classes"] == 5 and config["source"] == "swin3d_tiny.pth"

    # the folder is what video_checkpoint names: every tensor arrives unchanged, with or without the head
    loaded = build_video_swin("tiny-swin3d", tmp_path / "converted", num_classes=5).state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    encoder = VideoSwinEncoder("auto", str(tmp_path / "converted"), finetune=False)
    assert torch.equal(encoder.model.norm.weight, state["norm.weight"])
    with pytest.raises(MSAError, match="holds tiny-swin3d weights, but the architecture asked for is 'swin3d_t'"):
        build_video_swin("swin3d_t", tmp_path / "converted")

    # a key missing from the download: one line naming it, nothing written
    _torchvision_layout_file(tmp_path / "cut.pth", drop="features.2.0.attn.qkv.weight")
    proc = run_msa("weights", "convert-swin3d", tmp_path / "cut.pth", "--out", tmp_path / "cut")
    assert_one_line_error(proc, "cut.pth", "1 missing", "features.2.0.attn.qkv.weight")
    assert not (tmp_path / "cut").exists()
    _torchvision_layout_file(tmp_path / "extra.pth", extra="features.0.0.attn.extra_bias")
    with pytest.raises(MSAError, match=r"1 unexpected \(e.g. \['features.0.0.attn.extra_bias'\]\)"):
        convert_swin3d(tmp_path / "extra.pth", tmp_path / "extra")
    with pytest.raises(MSAError, match=r"as swin3d_t.*do not fit the architecture.*another shape"):
        convert_swin3d(tmp_path / "swin3d_tiny.pth", tmp_path / "wrong", arch="swin3d_t")
    with pytest.raises(MSAError, match=r"nope\.pth does not exist; convert-swin3d reads one of torchvision's"):
        convert_swin3d(tmp_path / "nope.pth", tmp_path / "nope")  # the source named, not a config path


def test_a_proposed_extractor_config_without_swin_weights_is_one_error(raw, tmp_path):
    """The shipped configs name the converted folder; without it, or with no checkpoint at all, `msa fit` stops
    before anything is built, naming the key and the conversion (never a random Swin called Kinetics)."""
    data = [f"--data.init_args.path={raw[0]}", "--data.init_args.size=16", f"--trainer.default_root_dir={tmp_path}"]
    config = ["fit", "--config", str(CONFIGS_DIR / "simsv2_step1_V.yaml")]
    unset = run_msa(*config, "--model.init_args.video_checkpoint=null", *data, cache=raw[1])
    assert_one_line_error(
        unset, "model.init_args.video_checkpoint is not set", "swin3d_t-7615ae03.pth", "msa weights convert-swin3d"
    )
    with pytest.raises(MSAError, match=r"'weights/swin3d_t_kinetics400' does not exist.*msa weights convert-swin3d"):
        TwoStepMSA(regime="step1", step1_modality="V", modalities="V", video_checkpoint="weights/swin3d_t_kinetics400")

    for name in sorted(CONFIGS_DIR.glob("*.yaml")):  # every proposed-extractor config names the expected folder
        text = name.read_text()
        if "RawMediaDataModule" in text and "video_checkpoint" in text:
            assert "video_checkpoint: weights/swin3d_t_kinetics400" in text, name.name


def test_random_swin_only_when_asked_and_logged(caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # BERT and HuBERT by name: a missing one is one clear error
    with pytest.raises(MSAError, match=r"pretrained model 'no-such-org/no-such-hubert' is not available.*hf download"):
        TwoStepMSA(regime="step1", step1_modality="A", modalities="A", audio_model="no-such-org/no-such-hubert")
    with pytest.raises(ConfigError, match="model.init_args.video_checkpoint is not set"):
        TwoStepMSA(regime="step1", step1_modality="V", modalities="V", video_arch="swin3d_t")
    with caplog.at_level(logging.WARNING):
        model = TwoStepMSA(
            regime="step1", step1_modality="V", modalities="V", video_arch="swin3d_t", video_random_init=True
        )
    assert "Video Swin swin3d_t has RANDOM weights" in caplog.text and model.net.vision.hidden_size == 768


def test_step2_needs_every_step1_checkpoint_or_an_explicit_pretrained(tmp_path):
    """Stored-features path through `msa fit`: a missing entry is one error naming it; the raw path likewise."""
    proc = run_msa(
        "fit",
        "--config",
        str(CONFIGS_DIR / "simsv2_sf_step2.yaml"),
        "--data.init_args.step1_checkpoints={text: runs/t, audio: runs/a, vision: null}",
        f"--trainer.default_root_dir={tmp_path}",
        cache=tmp_path / "cache",
    )
    assert_one_line_error(
        proc, "data.init_args.step1_checkpoints.vision missing or null", "never fine-tuned by step 1", "'pretrained'"
    )
    tiny = dict(text_model="tiny-bert", audio_model="tiny-hubert", video_arch="tiny-swin3d", head_hidden=8)
    with pytest.raises(ConfigError, match=r"model.init_args.step1_checkpoints.audio missing or null"):
        TwoStepMSA(regime="step2", step2_inputs="raw", modalities="TA", step1_checkpoints={"text": "x"}, **tiny)
    model = TwoStepMSA(  # the explicit choice: both extractors as pretrained (Table 3's frozen extractors + fusion)
        regime="step2",
        step2_inputs="raw",
        modalities="TA",
        step1_checkpoints={"text": "pretrained", "audio": "pretrained"},
        **tiny,
    )
    assert model.net.extractor_modalities == ("T", "A")


def test_an_audio_only_model_trains_on_clips_without_video(raw, tmp_path, capsys):
    root, cache = raw
    with pytest.raises(DataError, match=r"clip vidA_2: .*2.mp4: the clip has no video stream, and the model reads"):
        _dm(root, cache, inputs=["frames", "frame_mask"]).setup("fit")
    audio_only = _dm(root, cache, inputs=["waveform", "waveform_mask"])
    audio_only.setup("fit")
    assert audio_only.num_train_samples() == 5

    proc = msa_in_process(
        capsys,
        "fit",
        "--model=TwoStepMSA",
        "--model.init_args.regime=single",
        "--model.init_args.modalities=A",
        "--model.init_args.audio_model=tiny-hubert",
        "--model.init_args.head_hidden=8",
        "--data=RawMediaDataModule",
        f"--data.init_args.path={root}",
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.size=16",
        "--data.init_args.batch_size=2",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        env={"MSA_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "runs").rglob("last.ckpt"))


def test_tfn_is_parameter_free_by_default_and_projects_on_request():
    """Section 3.3: TFN adds no trainable parameters (outer product of the [g; 1] global vectors); the learned
    projection is the switch tfn_dim; a product too large to hold is one error naming tfn_dim."""
    dims = dict(text_dim=4, audio_dim=3, vision_dim=2)
    free = TwoStepMSA(regime="step2", fusion="tfn", head_hidden=8, **dims)
    assert free.net.fusion is None and free.net.head_m[1].in_features == 5 * 4 * 3
    projected = TwoStepMSA(regime="step2", fusion="tfn", head_hidden=8, tfn_dim=2, **dims)
    assert projected.net.head_m[1].in_features == 3**3 and sum(p.numel() for p in projected.net.fusion.parameters())
    with pytest.raises(ConfigError, match=r"tfn_dim=null .* 454,756,609 entries per sample .* set model.init_args"):
        TwoStepMSA(regime="step2", fusion="tfn", text_dim=768, audio_dim=768, vision_dim=768)


def test_mult_dropouts_follow_the_reference_or_the_target_rule():
    dims = dict(text_dim=4, audio_dim=3, vision_dim=2, mult_dim=8, mult_heads=2, mult_layers=1)
    reference = TwoStepMSA(regime="step2", fusion="mult", **dims).net.fusion
    assert {m: t.layers[0].attn.dropout for m, t in reference.memory.items()} == {"l": 0.1, "a": 0.1, "v": 0.1}
    assert reference.cross["l_with_a"].layers[0].attn.dropout == 0.0  # the source's (audio) attention dropout
    assert reference.text_dropout == 0.25  # MulT's embed dropout on the raw text
    target = TwoStepMSA(regime="step2", fusion="mult", mult_reference_dropouts=False, **dims).net.fusion
    assert {m: t.layers[0].attn.dropout for m, t in target.memory.items()} == {"l": 0.1, "a": 0.0, "v": 0.0}
    assert target.text_dropout == 0.0
