"""End-to-end: synthetic file -> real reader -> DataModule -> fit -> test, plus the CLI, DDP, resume."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from msa_lightning.data import MOSIDataModule, SIMSDataModule
from msa_lightning.data.reader import read_feature_file
from msa_lightning.experiments.lightning_cli import make_cli
from msa_lightning.metrics import compute_msa_metrics
from msa_lightning.nn.pretrained import PretrainedNotAvailable, load_model
from msa_lightning.papers.baselines.module import BertLSTMModule, LFDNNModule, TFNModule

REPO = Path(__file__).resolve().parents[2]


def _trainer(tmp_path, epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def _mean_predictor_mae(path) -> float:
    splits = read_feature_file(path)
    labels = torch.from_numpy(splits["test"].labels["M"])
    mean = float(splits["train"].labels["M"].mean())
    return float(compute_msa_metrics(torch.full_like(labels, mean), labels, "mosi")["mae"])


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: LFDNNModule(lr=3e-3),
        lambda: TFNModule(lr=3e-3),
        lambda: BertLSTMModule(text_model="tiny-bert", lr=3e-3, encoder_lr=1e-3),
    ],
    ids=["lf_dnn", "tfn", "bert_lstm"],
)
def test_baselines_learn_on_synthetic_mosi(make_model, synthetic_mosi, cache_dir, tmp_path):
    L.seed_everything(0)
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=16, normalize=True, cache_dir=str(cache_dir))
    model = make_model()
    # 8 epochs (32 steps): test MAE / mean predictor's = 0.48 (lf_dnn), 0.64 (tfn), 0.74 (bert_lstm), corr >= 0.73
    trainer = _trainer(tmp_path, epochs=8, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    expected = {
        "test/acc2_has0",
        "test/f1_has0",
        "test/acc2_non0",
        "test/f1_non0",
        "test/acc7",
        "test/acc5",
        "test/mae",
        "test/corr",
    }
    assert expected <= set(result)
    # a model that learns beats the mean predictor clearly on the planted signal
    assert result["test/mae"] < 0.85 * _mean_predictor_mae(synthetic_mosi)
    assert result["test/corr"] > 0.3


def test_sims_family_metrics_and_unimodal_labels(synthetic_sims, cache_dir, tmp_path):
    dm = SIMSDataModule(str(synthetic_sims), version=1, batch_size=16, cache_dir=str(cache_dir))
    model = LFDNNModule(audio_dim=33, vision_dim=709, lr=3e-3)
    trainer = _trainer(tmp_path, epochs=2, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/acc2", "test/acc3", "test/acc5", "test/f1", "test/mae", "test/corr"} <= set(result)
    assert "test/acc7" not in result  # MOSI-family metric must not appear for CH-SIMS
    assert set(next(iter(dm.train_dataloader())).labels) == {"M", "T", "A", "V"}


def test_predict_returns_ids_and_scores(synthetic_mosi, cache_dir, tmp_path):
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=16, cache_dir=str(cache_dir))
    model = TFNModule(metric_family="mosi")
    out = _trainer(tmp_path, epochs=1).predict(model, datamodule=dm)
    ids = [i for batch in out for i in batch["ids"]]
    scores = torch.cat([batch["score"] for batch in out])
    assert ids == read_feature_file(synthetic_mosi)["test"].ids
    assert scores.shape == (len(ids),) and torch.isfinite(scores).all()


def test_parameter_groups_give_encoder_its_own_lr():
    model = BertLSTMModule(
        audio_dim=5,
        vision_dim=20,
        text_model="tiny-bert",
        lr=1e-3,
        encoder_lr=5e-5,
        weight_decay=0.1,
        encoder_weight_decay=0.0,
    )
    groups = {g["name"]: g for g in model.parameter_groups()}
    encoder = {id(p) for p in model.net.text_encoder.parameters()}
    assert {id(p) for g in ("encoder", "encoder/no_decay") for p in groups[g]["params"]} == encoder
    assert groups["encoder"]["lr"] == 5e-5 and groups["default"]["lr"] == 1e-3
    assert groups["default"]["weight_decay"] == 0.1 and groups["encoder"]["weight_decay"] == 0.0
    assert groups["default/no_decay"]["weight_decay"] == 0.0  # biases and norm weights
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_warmup_schedule_rises_then_decays(synthetic_mosi, cache_dir, tmp_path):
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=16, cache_dir=str(cache_dir))
    model = TFNModule(lr=1e-2, scheduler="linear", warmup_ratio=0.25)
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    _trainer(tmp_path, epochs=4, enable_checkpointing=False, callbacks=[Record()]).fit(model, datamodule=dm)
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and max(lrs) <= 1e-2
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs) / 2


def test_print_config_round_trip(tmp_path, capsys):
    config = REPO / "configs" / "baselines" / "tfn_mosi.yaml"
    with pytest.raises(SystemExit):
        make_cli(["fit", "--config", str(config), "--model.dropout=0.3", "--print_config"])
    first = capsys.readouterr().out
    printed = tmp_path / "printed.yaml"
    printed.write_text(first)
    with pytest.raises(SystemExit):
        make_cli(["fit", "--config", str(printed), "--print_config"])
    second = capsys.readouterr().out
    assert first == second
    parsed = yaml.safe_load(first)
    assert parsed["model"]["class_path"].endswith("TFNModule")
    assert parsed["model"]["init_args"]["dropout"] == 0.3
    assert parsed["checkpoint"]["monitor"] == "val/mae"


class _Built(Exception):
    pass


@pytest.fixture(scope="module")
def parse_fit_args():
    """``make_cli(args)`` up to the end of parsing (``--print_config`` exits there), with the parser that
    ``make_cli`` builds made once for the module: building it is two thirds of such a call, and parsing
    leaves it as it was (jsonargparse drops its print request after printing)."""
    import msa_lightning.experiments.lightning_cli as cli  # where make_cli finds the CLI class

    real = cli.MSACLI

    class StopAfterSetup(real):
        def parse_arguments(self, parser, args) -> None:
            raise _Built(self)

    cli.MSACLI = StopAfterSetup
    try:
        with pytest.raises(_Built) as built:
            make_cli(["fit"])
    finally:
        cli.MSACLI = real
    instance = built.value.args[0]

    def parse(args: list[str]) -> None:
        cli.quiet_known_noise()  # as make_cli does (pytest resets warning filters for each test)
        with cli.process_command(args):
            real.parse_arguments(instance, instance.parser, args)

    return parse


@pytest.mark.parametrize(
    "config", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO / "configs"))
)
def test_every_shipped_model_config_parses(config, parse_fit_args, capsys):
    text = config.read_text()
    if "model:" not in text:  # logger/trainer fragments are combined with a model config
        pytest.skip("config fragment")
    with pytest.raises(SystemExit) as exit_info:
        parse_fit_args(["fit", "--config", str(config), "--print_config"])
    out, err = capsys.readouterr()
    assert exit_info.value.code in (0, None), err
    assert "model:" in out and "trainer:" in out  # the resolved config was printed


def test_shared_parser_rejects_a_bad_config(parse_fit_args, tmp_path, capsys):
    """The shared parser of the test above still fails a config that does not parse."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: TFNModule\n  init_args:\n    dropout: abc\n")
    with pytest.raises(SystemExit) as exit_info:
        parse_fit_args(["fit", "--config", str(bad), "--print_config"])
    assert exit_info.value.code == 2 and "model.init_args.dropout" in capsys.readouterr().err
    good = REPO / "configs" / "baselines" / "tfn_mosi.yaml"  # and parses the next one as before
    with pytest.raises(SystemExit) as exit_info:
        parse_fit_args(["fit", "--config", str(good), "--print_config"])
    assert exit_info.value.code in (0, None) and "TFNModule" in capsys.readouterr().out


def test_cli_fit_then_resume_from_last_checkpoint(synthetic_mosi, cache_dir, tmp_path):
    common = [
        "--model=TFNModule",
        "--data=MOSIDataModule",
        f"--data.path={synthetic_mosi}",
        f"--data.cache_dir={cache_dir}",
        "--data.batch_size=16",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--checkpoint.dirpath={tmp_path / 'ckpt'}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    first = make_cli(["fit", *common, "--trainer.max_epochs=1"])
    steps_per_epoch = first.trainer.num_training_batches
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    assert first.trainer.checkpoint_callback.best_model_path  # monitored val/mae
    resumed = make_cli(["fit", *common, "--trainer.max_epochs=2", f"--ckpt_path={tmp_path / 'ckpt' / 'last.ckpt'}"])
    assert resumed.trainer.current_epoch == 2
    assert resumed.trainer.global_step == 2 * steps_per_epoch  # continued, not restarted
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 1 and state["optimizer_states"]


def test_ddp_fit_on_two_cpu_processes(synthetic_mosi, cache_dir, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "msa_lightning.cli",
        "fit",
        "--model=LFDNNModule",
        "--data=MOSIDataModule",
        f"--data.path={synthetic_mosi}",
        f"--data.cache_dir={cache_dir}",
        "--data.batch_size=8",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--checkpoint.dirpath={tmp_path / 'ckpt'}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    metrics_file = next(tmp_path.rglob("metrics.csv"))
    rows = list(csv.DictReader(open(metrics_file)))
    assert any(r.get("val/mae") for r in rows)
    # the train split (64 samples, batch 8) is shared between 2 ranks: 4 steps per epoch each
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2 * 4


def test_multi_seed_tables(synthetic_mosi, cache_dir, tmp_path):
    from msa_lightning.experiments.seeds import run_seeds

    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"class_path": "msa_lightning.papers.baselines.module.LFDNNModule"},
                "data": {
                    "class_path": "msa_lightning.data.MOSIDataModule",
                    "init_args": {"path": str(synthetic_mosi), "cache_dir": str(cache_dir), "batch_size": 16},
                },
                "trainer": {
                    "max_epochs": 1,
                    "accelerator": "cpu",
                    "enable_progress_bar": False,
                    "logger": {
                        "class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(tmp_path)},
                    },
                },
            }
        )
    )
    summary = run_seeds([str(config)], [1111, 1112], tmp_path / "out", name="lfdnn").summary
    per_seed = list(csv.DictReader(open(tmp_path / "out" / "per_seed.csv")))
    assert [r["seed"] for r in per_seed] == ["1111", "1112"]
    maes = [float(r["mae"]) for r in per_seed]
    assert summary["mae"][0] == pytest.approx(sum(maes) / 2)
    assert "± " in (tmp_path / "out" / "summary.md").read_text()


def test_wandb_logger_offline(synthetic_mosi, cache_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=32, cache_dir=str(cache_dir))
    logger = WandbLogger(project="msa-test", save_dir=str(tmp_path), offline=True)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=logger,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(TFNModule(), datamodule=dm)
    logger.experiment.finish()
    assert list(tmp_path.rglob("offline-run-*"))


def test_missing_pretrained_model_gives_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedNotAvailable, match="no-such-org/no-such-bert.*hf download"):
        load_model("no-such-org/no-such-bert")


def test_quickstart_runs(tmp_path):
    """`msa quickstart` as a person runs it: the metric table (the model next to the mean predictor) on stdout,
    where the synthetic data went among the progress lines on stderr."""
    from conftest import run_msa

    proc = run_msa("quickstart", "--out", tmp_path / "qs", "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| TFNModule |" in out and "| mean predictor |" in out
    header = next(line for line in out.splitlines() if line.startswith("| run |")).split("|")
    row = next(line for line in out.splitlines() if line.startswith("| TFNModule |")).split("|")
    assert 0 <= float(row[header.index(" acc2_has0 ")]) <= 1
    assert f"synthetic MOSI-shaped feature file: {tmp_path / 'qs' / 'data'}" in proc.stderr
