"""TwoStepMSA (models/twostep.py) on tiny mp4 files written with PyAV, tiny-bert / tiny-hubert / tiny-swin3d."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

pytest.importorskip("av")

from conftest import assert_one_line_error  # noqa: E402
from test_raw_media import ROWS, _dm, _feature_dm, make_dataset  # noqa: E402

from msa_lightning.data.raw import RawMediaDataModule  # noqa: E402
from msa_lightning.errors import ConfigError, DataError  # noqa: E402
from msa_lightning.papers.twostep.module import TwoStepMSA  # noqa: E402

TINY = dict(
    text_model="tiny-bert",
    audio_model="tiny-hubert",
    video_arch="tiny-swin3d",
    head_hidden=8,
    tfn_dim=4,
    mult_dim=8,
    mult_heads=2,
    mult_layers=1,
)
DIMS = {"T": 32, "A": 32, "V": 128}  # tiny-bert, tiny-hubert, tiny-swin3d widths


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, Path]:
    """The CH-SIMS-v2-like raw release (label.csv with T/A/V labels + Raw/*.mp4) and a store folder."""
    root = tmp_path_factory.mktemp("twostep")
    return make_dataset(root / "sims_raw"), root / "cache"


@pytest.fixture(scope="module")
def batch(raw):
    dm = _dm(*raw)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def _trainer(**kwargs) -> L.Trainer:
    kwargs = {"max_epochs": 1, **kwargs}
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kwargs,
    )


@pytest.mark.parametrize(
    "fusion, modalities, fused",
    [
        ("sf", "TAV", sum(DIMS.values())),  # concatenated global vectors
        ("tfn", "TAV", 5**3),  # outer product of [W g; 1], W g of 4 units each
        ("sf", "AV", DIMS["A"] + DIMS["V"]),  # Table 4 subset
        ("mult", "AV", 2 * 8),  # MulT over a pair: two memory streams of width 8
    ],
)
def test_fusion_shapes_heads_and_parameter_groups(batch, fusion, modalities, fused):
    torch.manual_seed(0)
    model = TwoStepMSA(regime="joint", fusion=fusion, modalities=modalities, metric_family="simsv2", **TINY)
    out = model(batch)
    b = len(batch)
    assert out.M.shape == (b,) and out.features["M"].shape == (b, fused)
    assert sorted(out.unimodal) == sorted(modalities) and all(v.shape == (b,) for v in out.unimodal.values())
    for m in modalities:
        assert out.features[m].shape == (b, DIMS[m])
    # Section 4.2: the extractors at 1e-5, everything else at 1e-4
    groups = {g["name"]: g for g in model.configure_optimizers().param_groups}
    assert groups["extractors"]["lr"] == 1e-5 and groups["default"]["lr"] == 1e-4
    extractor_ids = {id(p) for g in groups.values() if g["name"].startswith("extractors") for p in g["params"]}
    names = {"T": "text", "A": "audio", "V": "vision"}
    assert extractor_ids == {id(p) for m in modalities for p in getattr(model.net, names[m]).parameters()}
    # Eq. 2: the loss is the alpha-weighted sum of the four L1 losses
    loss, parts = model.compute_loss(out, batch)
    expected = sum(
        torch.nn.functional.l1_loss(out.unimodal[k] if k != "M" else out.M, batch.labels[k]) for k in ("M", *modalities)
    )
    torch.testing.assert_close(loss, expected)
    assert sorted(parts) == sorted(f"loss_{k}" for k in ("M", *modalities))


def test_tfn_without_projection_and_alphas(batch):
    model = TwoStepMSA(
        regime="joint",
        fusion="tfn",
        modalities="TA",
        **{**TINY, "tfn_dim": None},
        alpha_M=1.0,
        alpha_T=0.0,
        alpha_A=0.5,
        metric_family="simsv2",
    )
    out = model(batch)
    assert out.features["M"].shape == (len(batch), 33 * 33)
    loss, parts = model.compute_loss(out, batch)
    assert sorted(parts) == ["loss_A", "loss_M"]  # alpha_T = 0 drops the task
    torch.testing.assert_close(loss, parts["loss_M"] + 0.5 * parts["loss_A"])


def test_extractors_from_saved_folders(batch, tmp_path):
    """Pretrained extractors by local folder (as a downloaded checkpoint is used)."""
    from msa_lightning.nn.audio_encoder import AudioEncoder
    from msa_lightning.nn.text_encoder import TextEncoder

    torch.manual_seed(0)
    text, audio = TextEncoder("tiny-bert"), AudioEncoder("tiny-hubert")
    text.model.save_pretrained(tmp_path / "bert")
    audio.model.save_pretrained(tmp_path / "hubert")
    model = TwoStepMSA(
        regime="single",
        fusion="sf",
        modalities="TA",
        metric_family="simsv2",
        **{**TINY, "text_model": str(tmp_path / "bert"), "audio_model": str(tmp_path / "hubert")},
    )
    for mine, saved in ((model.net.text, text), (model.net.audio, audio)):
        for (name, a), (_, b) in zip(mine.state_dict().items(), saved.state_dict().items()):
            assert torch.equal(a, b), name
    model.eval()
    with torch.no_grad():
        out = model(batch)
        torch.testing.assert_close(
            out.features["T"], text.eval()(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state[:, 0]
        )
    assert out.unimodal == {}  # single-task: M only


def test_step2_no_gradient_reaches_an_extractor(raw, batch, tmp_path):
    """Step 2 with the frozen extractors inside the model (raw batches): the step-1 weights are loaded,
    the extractors stay in eval mode and get no gradient, the fusion and M head do; the optimiser holds
    only the fusion network and the head."""
    torch.manual_seed(1)
    step1 = TwoStepMSA(regime="step1", step1_modality="A", metric_family="simsv2", **TINY)
    assert step1.required_inputs == {"waveform", "waveform_mask"} and not hasattr(step1.net, "text")
    ckpt = tmp_path / "step1_audio.ckpt"
    torch.save({"state_dict": step1.state_dict()}, ckpt)

    torch.manual_seed(2)
    model = TwoStepMSA(
        regime="step2",
        step2_inputs="raw",
        fusion="mult",
        metric_family="simsv2",
        step1_checkpoints={"text": "pretrained", "audio": str(ckpt), "vision": "pretrained"},
        **TINY,
    )
    for key, value in step1.net.audio.state_dict().items():
        assert torch.equal(model.net.audio.state_dict()[key], value), key
    model.train()
    extractors = [model.net.text, model.net.audio, model.net.vision]
    assert all(not m.training for e in extractors for m in e.modules() if m is not e)
    out = model(batch)
    loss, parts = model.compute_loss(out, batch)
    assert list(parts) == ["loss_M"] and out.unimodal == {}
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for e in extractors for p in e.parameters())
    assert all(p.grad is not None for p in model.net.fusion.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in model.net.head_m.parameters())
    optimised = {id(p) for g in model.configure_optimizers().param_groups for p in g["params"]}
    assert optimised == {id(p) for p in [*model.net.fusion.parameters(), *model.net.head_m.parameters()]}


def test_table3_frozen_extractor_trains_only_its_head(batch):
    """Table 3's snowflake rows: step 1 with the extractor frozen; only the unimodal head gets gradients."""
    model = TwoStepMSA(regime="step1", step1_modality="T", freeze_extractors=True, metric_family="simsv2", **TINY)
    model.train()
    out = model(batch)
    loss, parts = model.compute_loss(out, batch)
    assert list(parts) == ["loss_T"] and torch.equal(out.M, out.unimodal["T"])
    loss.backward()
    assert all(p.grad is None for p in model.net.text.parameters()) and not model.net.text.model.training
    assert all(p.grad is not None for p in model.net.heads["T"].parameters())
    assert [g["name"] for g in model.configure_optimizers().param_groups] == ["default", "default/no_decay"]


def test_step2_on_stored_features_trains_only_the_fusion(raw, tmp_path):
    """Step 2 on ExtractedFeaturesDataModule batches: the model holds no extractor, takes the feature
    widths from the data, and each clip passes each extractor once over several epochs."""
    from test_raw_media import _counting

    dm = _feature_dm(*raw)
    counts = _counting(dm)
    model = TwoStepMSA(regime="step2", fusion="tfn", **TINY)
    assert model.net is None and model.required_inputs >= {"text_feats", "audio", "vision_lengths"}
    trainer = _trainer(max_epochs=3)
    trainer.fit(model, datamodule=dm)
    assert counts == {"text": len(ROWS), "audio": len(ROWS), "vision": len(ROWS)}
    assert (model.hparams.text_dim, model.hparams.audio_dim, model.hparams.vision_dim) == (32, 32, 128)
    assert not any(hasattr(model.net, name) for name in ("text", "audio", "vision"))
    assert np.isfinite(float(trainer.callback_metrics["val/mae"]))

    raw_dm = _dm(*raw)  # a raw batch is not what step 2 on features reads: one clear error
    raw_dm.setup("fit")
    with pytest.raises(DataError, match="ExtractedFeaturesDataModule"):
        model(next(iter(raw_dm.val_dataloader())))


def _mosi_release(root: Path) -> Path:
    make_dataset(root, unimodal=False)
    with open(root / "label.csv") as f:
        assert "label_T" not in next(csv.reader(f))
    return root


@pytest.mark.parametrize("regime", ["joint", "step1"])
def test_multitask_on_mosi_labels_fails_naming_them(regime, raw, tmp_path):
    mosi = _mosi_release(tmp_path / "mosi_raw")
    dm = RawMediaDataModule(
        str(mosi),
        dataset="mosi",
        batch_size=2,
        tokenizer="tiny-bert",
        text_max_length=12,
        size=16,
        cache_dir=str(raw[1]),
    )
    model = TwoStepMSA(regime=regime, step1_modality="V", **TINY)
    missing = "T, A, V labels" if regime == "joint" else "V labels"
    with pytest.raises(DataError, match=rf"regime='{regime}' trains on the labels .* has no {missing}"):
        _trainer(limit_train_batches=1).fit(model, datamodule=dm)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="model.init_args.step1_modality"):
        TwoStepMSA(regime="step1", **TINY)
    with pytest.raises(ConfigError, match="model.init_args.modalities: expected a non-empty subset"):
        TwoStepMSA(modalities="TX", **TINY)
    with pytest.raises(ConfigError, match="fusion.*=mult needs at least two modalities"):
        TwoStepMSA(fusion="mult", modalities="T", **TINY)
    with pytest.raises(ConfigError, match="model.init_args.regime"):
        TwoStepMSA(regime="three-step", **TINY)


# ------------------------------------------------------------------------------------------- the msa command
MODEL_TINY = [
    "--model=TwoStepMSA",
    "--model.init_args.text_model=tiny-bert",
    "--model.init_args.audio_model=tiny-hubert",
    "--model.init_args.video_arch=tiny-swin3d",
    "--model.init_args.head_hidden=8",
    "--model.init_args.mult_dim=8",
    "--model.init_args.mult_heads=2",
    "--model.init_args.mult_layers=1",
]


def _data_args(path: Path, cls: str = "RawMediaDataModule") -> list[str]:
    return [
        f"--data={cls}",
        f"--data.init_args.path={path}",
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.text_max_length=12",
        "--data.init_args.size=16",
        "--data.init_args.batch_size=2",
    ]


def msa_in_process(*args, capsys) -> SimpleNamespace:
    """``msa ARGS`` through :func:`msa_lightning.cli.main`, the console script's own entry point and error
    boundary, in this process (the process boundary itself: test_cli_errors and test_cli_runs for `msa fit` /
    `msa test`, the FmlMSN pipeline's stages in test_fmlmsn); returns what a subprocess would."""
    from msa_lightning.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    code = exit_info.value.code
    return SimpleNamespace(returncode=0 if code is None else code, stdout=out.out, stderr=out.err)


def _trainer_args(root: Path) -> list[str]:
    return [
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu",
    ]


@pytest.mark.slow
def test_msa_pipeline_step1_then_step2_with_mult_then_test(raw, tmp_path, capfd, stages_in_process):
    """The two-step recipe from the command line, as configs/twostep/simsv2_twostep_pipeline.yaml runs it:
    `msa pipeline` fine-tunes the video extractor on label_V (step 1), then step 2 reads that stage's best
    checkpoint through the extracted-features DataModule and trains MulT; then `msa test`. The pipeline and
    its stages run in-process (``run_pipeline``, what `msa pipeline` calls; see ``stages_in_process``)."""
    import yaml

    from msa_lightning.experiments.pipeline import run_pipeline

    path, cache = raw
    store = f"--data.init_args.cache_dir={cache}"  # the stages' store (the saved config keeps it for `msa test`)
    features = [
        *_data_args(path, "ExtractedFeaturesDataModule"),
        store,
        "--data.init_args.text_model=tiny-bert",
        "--data.init_args.audio_model=tiny-hubert",
        "--data.init_args.video_arch=tiny-swin3d",
        "--data.init_args.step1_checkpoints={text: pretrained, audio: pretrained, vision: ${step1_V.best_ckpt}}",
    ]
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
    pipeline = {
        "name": "tiny_twostep",
        "out": str(tmp_path / "runs"),
        "stages": [
            {
                "name": "step1_V",
                "args": [
                    *MODEL_TINY,
                    "--model.init_args.regime=step1",
                    "--model.init_args.step1_modality=V",
                    *_data_args(path),
                    store,
                    *quiet,
                    "--trainer.max_epochs=1",
                ],
            },
            {
                "name": "step2_mult",
                "needs": ["step1_V"],
                "args": [
                    *MODEL_TINY,
                    "--model.init_args.regime=step2",
                    "--model.init_args.fusion=mult",
                    *features,
                    *quiet,
                    "--trainer.max_epochs=2",
                ],
            },
        ],
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    records = run_pipeline(tmp_path / "pipeline.yaml")
    assert list(records) == ["step1_V", "step2_mult"] and all(r["status"] == "finished" for r in records.values())
    assert [c[0] for c in stages_in_process] == ["fit", "fit"]
    assert (
        "--data.init_args.step1_checkpoints={text: pretrained, audio: pretrained, vision: "
        f"{records['step1_V']['best_ckpt']}}}" in records["step2_mult"]["command"]
    )  # ${step1_V.best_ckpt} substituted

    step1 = sorted((tmp_path / "runs" / "step1_V" / "checkpoints").glob("best*.ckpt"))
    state = torch.load(step1[0], map_location="cpu", weights_only=False)["state_dict"]
    assert any(k.startswith("net.vision.") for k in state) and not any(k.startswith("net.text.") for k in state)
    run = tmp_path / "runs" / "step2_mult"
    step2 = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert step2["epoch"] == 1  # two epochs
    assert not any(k.startswith(("net.text.", "net.audio.", "net.vision.")) for k in step2["state_dict"])
    assert [g["name"] for g in step2["optimizer_states"][0]["param_groups"]] == ["default", "default/no_decay"]

    config = next(run.rglob("config.yaml"))
    capfd.readouterr()
    tested = msa_in_process("test", "--config", config, "--ckpt_path", run, capsys=capfd)
    assert tested.returncode == 0, tested.stderr[-3000:]
    row = [line for line in tested.stdout.splitlines() if "test/mae" in line]
    assert row and np.isfinite(float(row[0].split("│")[2]))


def test_msa_joint_on_a_mosi_release_is_one_clear_error(raw, tmp_path, capsys):
    mosi = _mosi_release(tmp_path / "mosi_raw")
    result = msa_in_process(
        "fit",
        *MODEL_TINY,
        "--model.init_args.regime=joint",
        *_data_args(mosi),
        "--data.init_args.dataset=mosi",
        f"--data.init_args.cache_dir={raw[1]}",
        *_trainer_args(tmp_path / "runs"),
        "--trainer.max_epochs=1",
        capsys=capsys,
    )
    assert_one_line_error(result, "regime='joint'", "has no T, A, V labels", str(mosi / "label.csv"))


# ------------------------------------------------------------------------------------------- shipped configs
TINY_MODEL_ARGS = [
    "--model.init_args.text_model=tiny-bert",
    "--model.init_args.audio_model=tiny-hubert",
    "--model.init_args.video_arch=tiny-swin3d",
    "--model.init_args.video_checkpoint=null",  # the shipped configs name the converted Kinetics folder
]
TINY_FEATURE_ARGS = [
    "--data.init_args.text_model=tiny-bert",
    "--data.init_args.audio_model=tiny-hubert",
    "--data.init_args.video_arch=tiny-swin3d",
    "--data.init_args.step1_checkpoints={text: pretrained, audio: pretrained, vision: pretrained}",
]


@pytest.mark.parametrize(
    "config, extra",
    [
        ("simsv2_mult_joint.yaml", TINY_MODEL_ARGS),  # Table 1, joint multi-task
        ("simsv2_step1_T.yaml", TINY_MODEL_ARGS),  # two-step, step 1
        ("simsv2_table4_AV_step2.yaml", TINY_MODEL_ARGS + TINY_FEATURE_ARGS),  # Table 4, two-step MulT on a pair
        ("mosi_tfn_single.yaml", TINY_MODEL_ARGS),  # Table 2 on a MOSI release (M only)
    ],
)
def test_shipped_configs_fit_on_tiny_clips(config, extra, raw, tmp_path):
    """The paper's configs as shipped, with tiny pretrained stand-ins and the tiny raw release."""
    import yaml

    from msa_lightning.experiments.lightning_cli import make_cli

    path = raw[0] if not config.startswith("mosi") else _mosi_release(tmp_path / "mosi_raw")
    file = Path(__file__).resolve().parents[2] / "configs" / "twostep" / config
    cli = make_cli(
        [
            "fit",
            "--config",
            str(file),
            *extra,
            f"--data.init_args.path={path}",
            "--data.init_args.tokenizer=tiny-bert",
            "--data.init_args.size=16",
            "--data.init_args.batch_size=2",
            f"--data.init_args.cache_dir={raw[1]}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={tmp_path}",
            f"--checkpoint.dirpath={tmp_path / 'ckpt'}",
        ]
    )
    assert cli.trainer.global_step == 2 and np.isfinite(float(cli.trainer.callback_metrics["val/mae"]))
    given = yaml.safe_load(file.read_text())["model"]["init_args"]
    for key in ("regime", "fusion", "modalities", "lr", "extractor_lr", "step1_modality"):
        if key in given:
            assert cli.model.hparams[key] == given[key], key
    # msa infer on the run's checkpoint (the subprocess and its errors: test_infer_twostep): clips decoded as
    # the run's DataModule decodes them (step 2: through its extractors), scored in batches of eval_batch_size
    from msa_lightning.experiments.infer import infer

    clips = {f.stem: f for f in sorted(Path(path, "Raw").glob("*/*.mp4"))}
    videos = [str(f) for f in list(clips.values())[:3]]
    rows = infer(videos, str(next((tmp_path / "ckpt").glob("*.ckpt"))), str(tmp_path / "infer.csv"), echo=print)
    assert [r["clip"] for r in rows] == videos and all(np.isfinite(r["score"]) for r in rows)


# ------------------------------------------------------------------------------------------- the two quirks
def test_the_data_must_come_from_the_models_extractors(raw, tmp_path):
    """BERT in the model reads the data's token ids; step 2 reads what the data's extractors stored; the
    step-2 DataModule's tokenizer follows its text_model. Any mismatch is one ConfigError naming both keys."""
    from msa_lightning.papers.twostep.data import ExtractedFeaturesDataModule

    with pytest.raises(
        ConfigError,
        match=r"data.init_args.tokenizer='bert-base-uncased' differs from "
        r"data.init_args.text_model='tiny-bert'",
    ):
        ExtractedFeaturesDataModule(str(raw[0]), text_model="tiny-bert", tokenizer="bert-base-uncased")
    pretrained = dict.fromkeys(("text", "audio", "vision"), "pretrained")
    follows = ExtractedFeaturesDataModule(
        str(raw[0]), text_model="tiny-bert", video_arch="tiny-swin3d", step1_checkpoints=pretrained
    )
    assert follows.tokenizer_name == "tiny-bert"

    features = _feature_dm(*raw)
    model = TwoStepMSA(regime="step2", fusion="sf", **{**TINY, "audio_model": "facebook/hubert-base-ls960"})
    with pytest.raises(
        ConfigError,
        match=r"model.init_args.audio_model='facebook/hubert-base-ls960' but step 2 "
        r"reads the stored outputs of data.init_args.audio_model='tiny-hubert'",
    ):
        _trainer(limit_train_batches=1).fit(model, datamodule=features)
    other_tokens = _dm(*raw)
    other_tokens.tokenizer_name = "tiny-xlnet"
    model = TwoStepMSA(regime="single", fusion="sf", modalities="TA", **TINY)
    with pytest.raises(
        ConfigError,
        match=r"data.init_args.tokenizer='tiny-xlnet' differs from "
        r"model.init_args.text_model='tiny-bert'",
    ):
        _trainer(limit_train_batches=1).fit(model, datamodule=other_tokens)


def test_step1_checkpoints_accept_a_run_folder(tmp_path):
    """A step-1 run folder stands for its best checkpoint (resolved as `msa test`/`msa export` do)."""
    from msa_lightning.nn.audio_encoder import AudioEncoder
    from msa_lightning.papers.twostep.data import load_encoder_weights

    torch.manual_seed(3)
    tuned = AudioEncoder("tiny-hubert", finetune=False)
    run = tmp_path / "step1_A"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": {f"net.audio.{k}": v for k, v in tuned.state_dict().items()}},
        run / "checkpoints" / "best-epoch=0.ckpt",
    )
    torch.save({"state_dict": {}}, run / "checkpoints" / "last.ckpt")
    fresh = AudioEncoder("tiny-hubert", finetune=False)
    assert load_encoder_weights(fresh, run, "data.init_args.step1_checkpoints.audio") == "net.audio."
    for key, value in tuned.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(
        ConfigError,
        match=r"data.init_args.step1_checkpoints.audio: ckpt_path=.*empty_run.*"
        r"no checkpoints found",
    ):
        load_encoder_weights(fresh, tmp_path / "empty_run", "data.init_args.step1_checkpoints.audio")
    with pytest.raises(ConfigError, match=r"step1_checkpoints.audio: checkpoint .*nowhere.ckpt.* does not exist"):
        load_encoder_weights(fresh, tmp_path / "nowhere.ckpt", "data.init_args.step1_checkpoints.audio")


# ------------------------------------------------------------------------------------------- Table 1, baseline rows
@pytest.fixture(scope="module")
def simsv2_file(tmp_path_factory) -> Path:
    from msa_lightning.data import make_synthetic

    return make_synthetic("simsv2", tmp_path_factory.mktemp("simsv2") / "simsv2.pkl", size_factor=0.01, seed=3)


def test_handcrafted_rows_read_audio_and_vision_from_the_feature_file(simsv2_file, tmp_path):
    """file_features=AV: BERT on the file's text, the file's hand-crafted A/V sequences (global = mean over
    valid frames, padding ignored), the same heads and fusion; step 1 on a file modality trains its head only."""
    from msa_lightning.data import MSADataModule

    dm = MSADataModule(
        str(simsv2_file),
        dataset="simsv2",
        tokenizer="tiny-bert",
        text_max_length=12,
        batch_size=4,
        cache_dir=str(tmp_path / "cache"),
    )
    model = TwoStepMSA(regime="joint", fusion="mult", file_features="AV", **TINY)
    assert model.net is None and model.net_requires == ("audio_dim", "vision_dim")
    assert model.required_inputs == {
        "text_ids",
        "text_mask",
        "text_segment",
        "audio",
        "audio_lengths",
        "vision",
        "vision_lengths",
    }
    trainer = _trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    assert (model.hparams.audio_dim, model.hparams.vision_dim) == (25, 177)  # CH-SIMS v2's feature sizes
    assert hasattr(model.net, "text") and not hasattr(model.net, "audio") and not hasattr(model.net, "vision")
    batch = next(iter(dm.val_dataloader()))
    model.eval()
    with torch.no_grad():
        out = model(batch)
        n = int(batch.audio_lengths[0])
        torch.testing.assert_close(out.features["A"][0], batch.audio[0, :n].mean(0))
        if n < batch.audio.shape[1]:  # padded frames do not count
            batch.audio[0, n:] = 1e3
            torch.testing.assert_close(model(batch).M, out.M)
    assert sorted(out.unimodal) == ["A", "T", "V"]
    handcrafted = TwoStepMSA(regime="step1", step1_modality="A", file_features="AV", audio_dim=25, **TINY)
    assert handcrafted.net.extractor_modalities == () and list(handcrafted.net.heads) == ["A"]  # Table 3's row
    with pytest.raises(ConfigError, match="file_features='AV' with model.init_args.regime=step2 needs"):
        TwoStepMSA(regime="step2", file_features="AV", **TINY)


@pytest.mark.slow
def test_msa_pipeline_handcrafted_two_step_from_a_run_folder(simsv2_file, tmp_path, capfd, caplog, stages_in_process):
    """The shipped hand-crafted two-step pipeline (tiny overrides appended): step 1 fine-tunes BERT on
    label_T of the feature file; step 2 names the step-1 run folder and freezes its best BERT inside the model.
    The pipeline and its stages run in-process (``run_pipeline``, what `msa pipeline` calls; see
    ``stages_in_process``)."""
    import yaml

    from msa_lightning.experiments.pipeline import run_pipeline

    shipped = Path(__file__).resolve().parents[2] / "configs" / "twostep" / "simsv2_handcrafted_twostep_pipeline.yaml"
    pipeline = yaml.safe_load(shipped.read_text())
    pipeline["out"] = str(tmp_path / "runs")
    pipeline["stages"] = [s for s in pipeline["stages"] if s["name"] in ("step1_T", "step2_mult")]
    tiny = [
        "--model.init_args.text_model=tiny-bert",
        "--data.init_args.tokenizer=tiny-bert",
        "--model.init_args.head_hidden=8",
        "--model.init_args.mult_dim=8",
        "--model.init_args.mult_heads=2",
        "--model.init_args.mult_layers=1",
        f"--data.init_args.path={simsv2_file}",
        "--data.init_args.batch_size=8",
        "--data.init_args.text_max_length=12",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu",
    ]
    for stage in pipeline["stages"]:
        stage["args"][1] = str(shipped.parent / Path(stage["args"][1]).name)
        stage["args"] += tiny
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="msa_lightning"):
        records = run_pipeline(tmp_path / "pipeline.yaml")
    done = capfd.readouterr()  # its stages' output
    assert [c[0] for c in stages_in_process] == ["fit", "fit", "test"]
    assert records["step2_mult"]["tested"] == records["step2_mult"]["best_ckpt"]
    assert (
        f"--model.init_args.step1_checkpoints={{text: {records['step1_T']['dir']}}}" in records["step2_mult"]["command"]
    )  # ${step1_T.dir}: the run folder stands for its best checkpoint
    best = sorted((tmp_path / "runs" / "step1_T" / "checkpoints").glob("best*.ckpt"))
    step1 = torch.load(best[0], map_location="cpu", weights_only=False)["state_dict"]
    step2 = torch.load(
        tmp_path / "runs" / "step2_mult" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    text = [k for k in step1 if k.startswith("net.text.")]
    assert text and all(torch.equal(step1[k], step2["state_dict"][k]) for k in text)  # frozen, from step 1
    assert not any(k.startswith(("net.audio.", "net.vision.")) for k in step2["state_dict"])
    assert [g["name"] for g in step2["optimizer_states"][0]["param_groups"]] == ["default", "default/no_decay"]
    assert "stage step2_mult: msa test" in caplog.text  # the shipped step-2 stages end with their test
    assert "test/mae" in done.out  # printed by the stage's `msa test`


@pytest.mark.parametrize(
    "config, override, parts",
    [
        (
            "simsv2_handcrafted_sf_single.yaml",
            "--model.init_args.file_features=AT",
            ["model.init_args.file_features: expected a subset of A, V", "'AT'"],
        ),
        (
            "simsv2_handcrafted_mult_step2.yaml",
            "--model.init_args.step1_checkpoints={text: EMPTY}",
            ["model.init_args.step1_checkpoints.text: ckpt_path=", "no checkpoints found (the folder is empty)"],
        ),
    ],
)
def test_msa_fit_handcrafted_bad_settings_are_one_line_errors(config, override, parts, simsv2_file, tmp_path, capsys):
    """`msa fit` with a shipped hand-crafted config and a wrong value: one line naming the key."""
    (tmp_path / "empty_run").mkdir()
    file = Path(__file__).resolve().parents[2] / "configs" / "twostep" / config
    result = msa_in_process(
        "fit",
        "--config",
        file,
        override.replace("EMPTY", str(tmp_path / "empty_run")),
        "--model.init_args.text_model=tiny-bert",
        "--data.init_args.tokenizer=tiny-bert",
        f"--data.init_args.path={simsv2_file}",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        *_trainer_args(tmp_path / "runs"),
        "--trainer.max_epochs=1",
        capsys=capsys,
    )
    assert_one_line_error(result, *parts)


@pytest.mark.parametrize(
    "config, dataset, extra",
    [
        ("simsv2_table3_V_handcrafted.yaml", "simsv2", []),  # Table 3's OpenFace row: the head on the file's V
        ("mosi_handcrafted_tfn_single.yaml", "mosi", ["--model.init_args.text_model=tiny-bert"]),  # Table 2 baseline
    ],
)
def test_msa_fit_new_table_rows_on_feature_files(config, dataset, extra, simsv2_file, synthetic_mosi, tmp_path, capsys):
    """The configs of Table 3's hand-crafted rows and Table 2's baseline half run through `msa fit` as shipped
    (tiny BERT); MOSI's baseline TFN is the paper's parameter-free product (no fusion parameters)."""
    file = Path(__file__).resolve().parents[2] / "configs" / "twostep" / config
    data = simsv2_file if dataset == "simsv2" else synthetic_mosi
    result = msa_in_process(
        "fit",
        "--config",
        file,
        *extra,
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.text_max_length=12",
        f"--data.init_args.path={data}",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        *_trainer_args(tmp_path / "runs"),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        capsys=capsys,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(next((tmp_path / "runs").rglob("last.ckpt")), map_location="cpu", weights_only=False)
    names = state["state_dict"]
    if dataset == "mosi":
        assert not any(k.startswith("net.fusion.") for k in names) and "net.head_m.1.weight" in names
        assert names["net.head_m.1.weight"].shape[1] == 33 * 6 * 21  # [T; 1] x [A; 1] x [V; 1], tiny BERT 32-d
    else:
        assert sorted({k.split(".")[1] for k in names}) == ["heads"] and "net.heads.V.1.weight" in names
