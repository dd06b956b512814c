"""The ``msa`` command as a researcher runs it: where files go, run folders as ``--ckpt_path``, predictions,
settings that follow the data, switching the data class, and ``msa seeds`` (also under 2-process DDP)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml

from msa_lightning.data.reader import read_feature_file

MSA = str(Path(sys.executable).with_name("msa"))
TESTS = Path(__file__).resolve().parent
CONFIGS = TESTS.parents[1] / "configs"
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
}
ENV.pop("MSA_DEBUG", None)
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


class FailOnSeed(L.Callback):
    """Fails the fit of one seed (imported by the ``msa`` subprocesses from this file)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_start(self, trainer, pl_module) -> None:
        if int(os.environ.get("PL_GLOBAL_SEED", "-1")) == self.seed:
            raise RuntimeError(f"planted failure for seed {self.seed}")


def run_msa(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([MSA, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    return proc


def one_error(proc_or_code, err: str | None = None, *needles: str) -> str:
    """Exit status 2, exactly one ``msa: error:`` line holding ``needles``, no traceback."""
    code, err = (proc_or_code.returncode, proc_or_code.stderr) if err is None else (proc_or_code, err)
    assert code == 2 and "Traceback" not in err, (code, err[-3000:])
    lines = [line for line in err.splitlines() if line.startswith("msa: error:")]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), err[-3000:]
    return lines[0]


def in_process(argv: list, capsys) -> tuple[int, str]:
    """``main(argv)`` as the console script runs it: the exit status and stderr."""
    from msa_lightning.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code or 0, capsys.readouterr().err


def data_args(path: Path, cache_dir: Path) -> list[str]:
    return [
        "--model=TFNModule",
        "--data=MOSIDataModule",
        f"--data.path={path}",
        f"--data.cache_dir={cache_dir}",
        "--data.batch_size=16",
        *QUIET,
    ]


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory, synthetic_mosi, cache_dir) -> Path:
    """One epoch of TFN with ``--trainer.default_root_dir`` somewhere else than the working folder."""
    work = tmp_path_factory.mktemp("work")
    root = tmp_path_factory.mktemp("elsewhere")
    ok(
        run_msa(
            "fit",
            *data_args(synthetic_mosi, cache_dir),
            "--trainer.max_epochs=2",
            f"--trainer.default_root_dir={root}",
            cwd=work,
        )
    )
    assert not (work / "runs").exists()  # the CSVLogger's default save_dir no longer wins
    return root


def test_default_root_dir_holds_logs_checkpoints_and_config(fitted_run):
    run = fitted_run / "msa" / "version_0"
    assert (run / "metrics.csv").is_file() and (run / "config.yaml").is_file()
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"last.ckpt"}
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    epoch_means = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(epoch_means) == 2  # the epoch mean of the training loss, once per epoch


def test_settings_follow_the_data(fitted_run, synthetic_mosi):
    """audio_dim/vision_dim/metric_family were not given: the saved config holds the file's values."""
    saved = yaml.safe_load(open(fitted_run / "msa" / "version_0" / "config.yaml"))
    train = read_feature_file(synthetic_mosi)["train"]
    init_args = saved["model"]["init_args"]
    assert init_args["audio_dim"] == train.audio.shape[-1] == 5
    assert init_args["vision_dim"] == train.vision.shape[-1] == 20
    assert init_args["metric_family"] == "mosi"


def test_settings_follow_another_dataset(synthetic_sims, cache_dir, tmp_path):
    proc = ok(
        run_msa(
            "fit",
            "--model=LFDNNModule",
            "--data=SIMSDataModule",
            f"--data.path={synthetic_sims}",
            f"--data.cache_dir={cache_dir}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
            cwd=tmp_path,
        )
    )
    saved = yaml.safe_load(open(next(tmp_path.rglob("config.yaml"))))["model"]["init_args"]
    assert (saved["audio_dim"], saved["vision_dim"], saved["metric_family"]) == (33, 709, "sims"), proc.stderr


def test_run_folder_as_ckpt_path(fitted_run, synthetic_mosi, cache_dir, tmp_path, capsys):
    run = fitted_run / "msa" / "version_0"
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    common = ["test", *data_args(synthetic_mosi, cache_dir), f"--trainer.default_root_dir={tmp_path}"]
    proc = ok(run_msa(*common, f"--ckpt_path={run}", cwd=tmp_path))
    assert f"checkpoint path at {best}" in proc.stdout + proc.stderr
    assert "test/mae" in proc.stdout
    proc = ok(run_msa(*common, f"--ckpt_path={fitted_run}/last", cwd=tmp_path))  # a logger folder above the run
    assert f"checkpoint path at {run / 'checkpoints' / 'last.ckpt'}" in proc.stdout + proc.stderr

    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "checkpoints" / "notes.txt").write_text("nothing here")
    from msa_lightning.cli import main

    with pytest.raises(SystemExit) as exit_info:  # in-process: the same boundary as the console script
        main([*common, f"--ckpt_path={empty}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith("msa: error:") and "no best checkpoint" in err and "notes.txt" in err


def test_predict_writes_a_csv_for_any_split(fitted_run, synthetic_mosi, cache_dir, tmp_path, capsys):
    run = fitted_run / "msa" / "version_0"
    common = [
        "predict",
        *data_args(synthetic_mosi, cache_dir),
        f"--trainer.default_root_dir={tmp_path}",
        f"--ckpt_path={run}",
    ]
    proc = ok(run_msa(*common, cwd=tmp_path))
    out = run / "predictions_test.csv"
    assert f"to {out}" in proc.stdout
    rows = list(csv.DictReader(open(out)))
    test = read_feature_file(synthetic_mosi)["test"]
    assert [r["id"] for r in rows] == list(test.ids)
    assert [float(r["label"]) for r in rows] == pytest.approx(test.labels["M"].tolist(), abs=1e-5)
    assert all(-10 < float(r["score"]) < 10 for r in rows)

    target = tmp_path / "valid_predictions.csv"
    # the same command in-process (the console script's entry point) for the other split and path
    from conftest import msa_in_process

    extra = ["--data.init_args.predict_split=valid", f"--predictions={target}"]
    proc = ok(msa_in_process(capsys, *common, *extra, cwd=tmp_path))
    assert f"to {target}" in proc.stdout
    assert [r["id"] for r in csv.DictReader(open(target))] == list(read_feature_file(synthetic_mosi)["valid"].ids)


def test_switching_data_class_starts_from_its_defaults(synthetic_mosi, synthetic_sims, cache_dir, tmp_path):
    """A MOSI config with a tokenizer, switched to CH-SIMS on the command line: the tokenizer and the
    ``dataset: mosi`` of the config are not carried into the new class, and a notice says so."""
    config = tmp_path / "mosi.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"class_path": "msa_lightning.papers.baselines.module.LFDNNModule"},
                "data": {
                    "class_path": "msa_lightning.data.MOSIDataModule",
                    "init_args": {
                        "path": str(synthetic_mosi),
                        "tokenizer": "tiny-bert",
                        "normalize": True,
                        "batch_size": 16,
                    },
                },
            }
        )
    )
    proc = ok(
        run_msa(
            "fit",
            "--config",
            config,
            "--data=SIMSDataModule",
            f"--data.path={synthetic_sims}",
            f"--data.cache_dir={cache_dir}",
            "--data.batch_size=8",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
            cwd=tmp_path,
        )
    )
    notice = [line for line in proc.stderr.splitlines() if line.startswith("msa: note:")]
    assert len(notice) == 1 and "SIMSDataModule" in notice[0]
    assert "tokenizer='tiny-bert'" in notice[0] and "normalize=True" in notice[0]
    saved = yaml.safe_load(open(next(tmp_path.rglob("config.yaml"))))["data"]["init_args"]
    assert saved["tokenizer"] is None and saved["normalize"] is False
    assert saved["batch_size"] == 8 and saved["path"] == str(synthetic_sims)  # given on the command line


def seeds_config(tmp_path: Path, synthetic_mosi: Path, cache_dir: Path, fail_seed: int | None = None) -> Path:
    trainer = {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
    if fail_seed is not None:
        trainer["callbacks"] = [{"class_path": "test_cli_runs.FailOnSeed", "init_args": {"seed": fail_seed}}]
    config = tmp_path / "lfdnn.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"class_path": "msa_lightning.papers.baselines.module.LFDNNModule"},
                "data": {
                    "class_path": "msa_lightning.data.MOSIDataModule",
                    "init_args": {"path": str(synthetic_mosi), "cache_dir": str(cache_dir), "batch_size": 16},
                },
                "trainer": trainer,
            }
        )
    )
    return config


def test_seeds_under_two_process_ddp(synthetic_mosi, cache_dir, tmp_path):
    config = seeds_config(tmp_path, synthetic_mosi, cache_dir)
    out = tmp_path / "out"
    proc = ok(
        run_msa(
            "seeds",
            "--config",
            config,
            "--seeds",
            1111,
            1112,
            "--out",
            out,
            "--",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",
            cwd=tmp_path,
            timeout=600,
        )
    )
    rows = list(csv.DictReader(open(out / "per_seed.csv")))
    assert [r["seed"] for r in rows] == ["1111", "1112"]
    assert all(0 < float(r["mae"]) < 3 for r in rows)
    assert "mean ± std, n=2" in (out / "summary.md").read_text()
    assert proc.stdout.count("mean ± std, n=2") == 1  # rank 0 alone prints (and writes) the tables
    for seed in (1111, 1112):  # logs and checkpoints under --out
        assert (out / f"seed{seed}" / "checkpoints" / "last.ckpt").is_file()
        assert list((out / f"seed{seed}").rglob("metrics.csv"))
    assert not (tmp_path / "runs").exists()


def test_failed_seed_keeps_the_finished_ones(synthetic_mosi, cache_dir, tmp_path):
    config = seeds_config(tmp_path, synthetic_mosi, cache_dir, fail_seed=1112)
    out = tmp_path / "out"
    proc = run_msa("seeds", "--config", config, "--seeds", 1111, 1112, 1113, "--out", out, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("msa: error:")]
    assert len(error) == 1 and "seed 1112 failed: RuntimeError: planted failure for seed 1112" in error[0]
    assert [r["seed"] for r in csv.DictReader(open(out / "per_seed.csv"))] == ["1111", "1113"]
    assert "planted failure" in (out / "seed1112" / "error.log").read_text()  # the traceback, for a bug
    report = ok(run_msa("report", out, cwd=tmp_path)).stdout
    assert "n=2" in report and "lfdnn" in report


def test_seeds_keep_earlier_results_and_refuse_another_config(synthetic_mosi, cache_dir, tmp_path):
    """A second `msa seeds` into the same --out keeps the seeds already there (a seed run again replaces its
    own row), refuses another config's tables, and --out naming a file is one error line."""
    from msa_lightning.experiments.results import write_seed_tables
    from msa_lightning.experiments.seeds import RECORD, run_record

    config = seeds_config(tmp_path, synthetic_mosi, cache_dir)
    out = tmp_path / "out"
    write_seed_tables({1111: {"mae": 9.5, "corr": 0.1}, 4242: {"mae": 1.25, "corr": 0.5}}, out, "lfdnn")
    (out / RECORD).write_text(__import__("json").dumps(run_record([str(config)], [], "lfdnn")))
    proc = ok(run_msa("seeds", "--config", config, "--seeds", 1111, "--out", out, cwd=tmp_path))
    kept = [line for line in proc.stderr.splitlines() if line.startswith("msa: seeds:")]
    assert kept == [
        f"msa: seeds: keeping the earlier results of seeds 1111, 4242 in {out / 'per_seed.csv'}; "
        "seed 1111 is run again and replaces its row"
    ], proc.stderr[-3000:]
    rows = {r["seed"]: r for r in csv.DictReader(open(out / "per_seed.csv"))}
    assert list(rows) == ["1111", "4242"] and float(rows["4242"]["mae"]) == 1.25  # kept as it was
    assert 0 < float(rows["1111"]["mae"]) < 3 and "acc2_has0" in rows["1111"]  # replaced by the new run
    summary = next(csv.DictReader(open(out / "summary.csv")))
    assert summary["n_seeds"] == "2" and float(summary["mae_mean"]) == pytest.approx(
        (float(rows["1111"]["mae"]) + 1.25) / 2
    )

    before = {name: (out / name).read_bytes() for name in ("per_seed.csv", "summary.csv", RECORD)}
    refused = run_msa(
        "seeds", "--config", config, "--seeds", 1112, "--out", out, "--", "--trainer.max_epochs=2", cwd=tmp_path
    )
    from conftest import assert_one_line_error

    assert_one_line_error(
        refused,
        f"--out {out}: per_seed.csv holds seeds 1111, 4242 of another config",
        "overrides (none) -> --trainer.max_epochs=2",
        "--force",
    )
    assert {name: (out / name).read_bytes() for name in before} == before and not (out / "seed1112").exists()

    assert_one_line_error(
        run_msa("seeds", "--config", config, "--seeds", 1112, "--out", config, cwd=tmp_path),
        f"--out {config}: an existing file, not a folder",
    )


def test_seeds_force_moves_another_configs_tables_aside(tmp_path, caplog):
    from msa_lightning.errors import MSAError
    from msa_lightning.experiments.results import write_seed_tables
    from msa_lightning.experiments.seeds import RECORD, earlier_results, run_record

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("# comments do not count\nmodel: {init_args: {lr: 0.001}}\n")
    b.write_text("model:\n  init_args:\n    lr: 0.002\n")
    out = tmp_path / "out"
    write_seed_tables({1111: {"mae": 0.5}}, out, "x")
    with caplog.at_level("INFO", logger="msa_lightning"):
        assert earlier_results(out, run_record([str(a)], [], "x"), [1112], False) == {1111: {"mae": 0.5}}
    assert "(no record of their config" in caplog.text  # tables from before the record existed
    caplog.clear()
    (out / RECORD).write_text(__import__("json").dumps(run_record([str(a)], [], "x")))
    a.write_text("model: {init_args: {lr: 0.001}}  # the same config\n")
    assert earlier_results(out, run_record([str(a)], [], "y"), [1112], False) == {1111: {"mae": 0.5}}
    with pytest.raises(MSAError, match=r"config 1 \(b.yaml\) model.init_args.lr: 0.001 -> 0.002"):
        earlier_results(out, run_record([str(b)], [], "x"), [1112], False)
    with caplog.at_level("INFO", logger="msa_lightning"):
        assert earlier_results(out, run_record([str(b)], [], "x"), [1112], True) == {}
    aside = [p for p in out.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == sorted(
        ["per_seed.csv", "summary.csv", "summary.md", RECORD]
    )
    assert f"moved to {aside[0]}" in caplog.text and not (out / "per_seed.csv").exists()


@pytest.mark.parametrize(
    "fragment", ["trainer/ddp.yaml", "trainer/gpu.yaml", "loggers/tensorboard.yaml", "loggers/wandb.yaml"]
)
def test_trainer_and_logger_fragments_parse_with_a_model_config(fragment, capsys):
    """configs/trainer/* and configs/loggers/* are used together with a model config."""
    from msa_lightning.experiments.lightning_cli import make_cli

    base = Path(__file__).resolve().parents[2] / "configs"
    with pytest.raises(SystemExit) as exit_info:
        make_cli(
            [
                "fit",
                "--config",
                str(base / "baselines" / "tfn_mosi.yaml"),
                "--config",
                str(base / fragment),
                "--print_config",
            ]
        )
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    printed = yaml.safe_load(capsys.readouterr().out)
    if fragment == "trainer/ddp.yaml":
        strategy = printed["trainer"]["strategy"]
        assert strategy["class_path"].endswith("DDPStrategy")
        assert strategy["init_args"]["broadcast_buffers"] is False


@pytest.mark.parametrize(
    "config, dataset",
    [
        ("baselines/tfn_mosei.yaml", "mosei"),
        ("baselines/tfn_mosi.yaml", "mosi"),
        ("hybrid_shift/mosei_bert.yaml", "mosei"),
    ],
)
def test_config_data_class_resolves_its_dataset(config, dataset, capsys):
    """MOSEIDataModule from the command line must not inherit the base class's ``dataset: mosi``."""
    from msa_lightning.experiments.lightning_cli import make_cli

    with pytest.raises(SystemExit):
        make_cli(["fit", "--config", str(Path(__file__).resolve().parents[2] / "configs" / config), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["dataset"] == dataset


def test_fill_data_facts_rules():
    from jsonargparse import Namespace

    from msa_lightning.data.base import DataFacts
    from msa_lightning.errors import ConfigError
    from msa_lightning.experiments.lightning_cli import fill_data_facts

    facts = DataFacts(audio_dim=74, vision_dim=35, label_bound=3.0, metric_family="mosi", num_train_samples=100)
    cfg = Namespace(
        model=Namespace(
            class_path="X",
            init_args=Namespace(audio_dim=None, vision_dim=35, metric_family="auto", num_train_samples=7),
        )
    )
    fill_data_facts(cfg, facts, "data file f.pkl")
    args = cfg["model.init_args"]
    assert (args.audio_dim, args.vision_dim, args.metric_family) == (74, 35, "mosi")  # unset -> data, equal -> kept
    assert args.num_train_samples == 7 and "label_bound" not in args  # never added where __init__ lacks it
    cfg["model.init_args.audio_dim"] = 5
    with pytest.raises(
        ConfigError,
        match=r"model.init_args.audio_dim=5 does not match the data: data file f.pkl has audio features of size 74",
    ):
        fill_data_facts(cfg, facts, "data file f.pkl")


def test_print_config_shows_the_class_switch_reset(tmp_path, capsys):
    """What --print_config shows after --data switches the class is what a run would use."""
    from msa_lightning.experiments.lightning_cli import make_cli

    config = tmp_path / "asr.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"class_path": "msa_lightning.papers.baselines.module.TFNModule"},
                "data": {
                    "class_path": "msa_lightning.data.MOSIDataModule",
                    "init_args": {"path": "somewhere/mosi.pkl", "tokenizer": "bert-base-uncased", "batch_size": 64},
                },
            }
        )
    )
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", "--config", str(config), "--data=SIMSDataModule", "--data.batch_size=8", "--print_config"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    data = yaml.safe_load(captured.out)["data"]
    assert data["class_path"].endswith("SIMSDataModule")
    assert data["init_args"]["tokenizer"] is None and data["init_args"]["batch_size"] == 8
    assert "tokenizer='bert-base-uncased'" in captured.err


def test_checkpoint_of_another_model_class_is_an_error(fitted_run, synthetic_mosi, cache_dir, tmp_path, capsys):
    """An LF-DNN config with a TFN run: test/validate/predict/export refuse it, naming both classes
    (``msa test`` used to restore TFN from the checkpoint and print its metrics as LF-DNN's)."""
    run = fitted_run / "msa" / "version_0"  # TFNModule
    config = ["--config", CONFIGS / "baselines" / "lf_dnn_mosi.yaml"]
    common = [
        *config,
        f"--data.path={synthetic_mosi}",
        f"--data.cache_dir={cache_dir}",
        f"--trainer.default_root_dir={tmp_path}",
        *QUIET,
        f"--ckpt_path={run}",
    ]
    needles = ("is a checkpoint of TFNModule", "the config's model is LFDNNModule")
    one_error(run_msa("test", *common, cwd=tmp_path), None, *needles)
    for subcommand in ("validate", "predict"):
        one_error(*in_process([subcommand, *common], capsys), *needles)
    line = one_error(
        *in_process(
            [
                "export",
                run,
                *config,
                "--splits",
                "test",
                "--",
                f"--data.init_args.path={synthetic_mosi}",
                f"--data.init_args.cache_dir={cache_dir}",
            ],
            capsys,
        ),
        "TFNModule",
        "LFDNNModule",
    )
    assert "is a checkpoint of TFNModule" in line
    assert not list(tmp_path.rglob("predictions_*.csv"))


def test_model_left_out_takes_the_checkpoint_class(fitted_run, synthetic_mosi, cache_dir, tmp_path, capsys):
    run = fitted_run / "msa" / "version_0"
    code, err = in_process(
        [
            "test",
            "--data=MOSIDataModule",
            f"--data.path={synthetic_mosi}",
            f"--data.cache_dir={cache_dir}",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
            f"--ckpt_path={run}",
        ],
        capsys,
    )
    assert code == 0, err[-3000:]
    notes = [line for line in err.splitlines() if line.startswith("msa: note:")]
    assert len(notes) == 1 and "no model given; using the checkpoint's class TFNModule" in notes[0], err[-3000:]


def test_truncated_checkpoint_is_one_line(fitted_run, synthetic_mosi, cache_dir, tmp_path, capsys):
    best = next((fitted_run / "msa" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    common = [*data_args(synthetic_mosi, cache_dir), f"--trainer.default_root_dir={tmp_path}"]
    one_error(
        run_msa("predict", *common, f"--ckpt_path={cut}", cwd=tmp_path), None, str(cut), "not a readable checkpoint"
    )
    foreign = tmp_path / "notes.ckpt"
    foreign.write_text("not a checkpoint")
    one_error(
        *in_process(["test", *common, f"--ckpt_path={foreign}"], capsys), str(foreign), "not a readable checkpoint"
    )
    one_error(*in_process(["export", cut, "--splits", "test"], capsys), str(cut), "not a readable checkpoint")


def test_export_of_a_moved_run_takes_overrides_after_double_dash(
    fitted_run, synthetic_mosi, cache_dir, tmp_path, capsys
):
    """`msa export RUN ... -- --data.init_args.path=X`: the run folder copied elsewhere, its saved config
    with the overrides on top, the checkpoint before or after the options."""
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(fitted_run / "msa" / "version_0", moved)
    data = tmp_path / "data" / "mosi.pkl"
    data.parent.mkdir()
    shutil.copy(synthetic_mosi, data)
    proc = ok(
        run_msa(
            "export",
            "--store",
            tmp_path / "store",
            moved,
            "--outputs",
            "M",
            "--splits",
            "test",
            "--",
            f"--data.init_args.path={data}",
            f"--data.init_args.cache_dir={cache_dir}",
            cwd=tmp_path,
        )
    )
    assert f"msa: exported: M of {moved / 'checkpoints'}" in proc.stderr and "(test 34 rows)" in proc.stderr
    one_error(
        *in_process(["export", moved, "--splits", "test", "--", "--data.init_args.path=/nonexistent/mosi.pkl"], capsys),
        "/nonexistent/mosi.pkl",
    )
