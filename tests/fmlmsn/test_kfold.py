"""FmlMSN's K-fold stacking (``stacking: kfold``): fold runs as pipeline stages, out-of-fold training features for
the meta-learner, and the fold assignment they share. One tiny pipeline (the AV stage, K = 2) serves the run tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, cli_calls_in_process, msa_in_process

from msa_lightning.data.folds import fold_assignment, video_of
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.experiments.results import stage_metrics
from msa_lightning.papers.fmlmsn.data import StageFeaturesDataModule, TextFeaturesDataModule
from msa_lightning.papers.fmlmsn.report import fmlmsn_results
from msa_lightning.store import Entry, Store

CONFIGS = REPO / "configs" / "fmlmsn"


def _msa(args, cwd, cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MSA_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _pipeline(folder, data, stacking="kfold", stage_data=(), file="pipeline.yaml"):
    """The shipped pipeline's shape cut to one stage (AV: no text, no BERT) and the meta-learner, tiny sizes."""
    common = [
        f"--data.init_args.path={data}",
        "--data.init_args.batch_size=16",
        "--data.init_args.num_workers=0",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    tiny = [f"--model.init_args.{k}=8" for k in ("ahid", "vhid", "adim", "vdim", "fdim")]
    spec = {
        "name": "kfold",
        "out": str(folder / "runs"),
        "stacking": stacking,
        "folds": 2,
        "fold_seed": 3,
        "stages": [
            {
                "name": "stage_av",
                "args": ["--config", str(CONFIGS / "sims_stage.yaml"), "--model.init_args.pair=AV", *common, *tiny],
                "export": {"outputs": ["features.H"], "splits": ["train", "valid", "test"]},
            },
            {
                "name": "meta",
                "needs": ["stage_av"],
                "args": [
                    "--config",
                    str(CONFIGS / "sims_meta.yaml"),
                    "--model.init_args.stages=[AV]",
                    "--data.init_args.stages=[AV]",
                    "--data.init_args.exports=[${stage_av.export}]",
                    "--data.init_args.fold_exports=[${stage_av.fold_exports}]",
                    "--model.init_args.stage_fdim=8",
                    "--model.init_args.fdim=8",
                    *common,
                ],
            },
        ],
    }
    spec["stages"][0]["args"] += list(stage_data)
    path = folder / file
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def sims_data(tmp_path_factory):
    from msa_lightning.data.synthetic import make_synthetic

    folder = tmp_path_factory.mktemp("kfold")
    return make_synthetic("sims", folder / "sims.pkl", size_factor=0.05, seed=5, bimodal_labels=True), folder


@pytest.fixture(scope="module")
def kfold_run(sims_data):
    """`msa pipeline` with stacking: kfold: stage_av, its fold runs stage_av.fold0/1 and meta. Through the console
    script's entry point in this process, its stages too (as ``stages_in_process``): five Python starts would
    cost more than the runs; `msa pipeline` with kfold as a subprocess is the bad-input test below."""
    from msa_lightning.cli import main

    data, folder = sims_data
    path = _pipeline(folder, data)
    ran, saved = [], dict(os.environ)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "call", cli_calls_in_process(ran))
        patch.setenv("MSA_CACHE_DIR", str(folder / "cache"))
        try:
            main(["pipeline", str(path)])
        except SystemExit as exit_info:
            assert exit_info.code in (0, None)
        finally:
            os.environ.clear()  # and what the runs set (PL_GLOBAL_SEED)
            os.environ.update(saved)
    records = {p.parent.name: json.loads(p.read_text()) for p in (folder / "runs").glob("*/stage.json")}
    return path, records, folder, ran


def test_fold_assignment_keeps_videos_whole_and_is_seeded():
    ids = [f"vid_{v}_{c}" for v in range(9) for c in range(v % 3 + 1)]  # video ids holding '_', as MOSI's
    folds = fold_assignment(ids, 3, seed=1)
    assert video_of("5W7Z1C_fDaE_12") == "5W7Z1C_fDaE"
    by_video = {}
    for i, k in zip(ids, folds):
        by_video.setdefault(video_of(i), set()).add(int(k))
    assert all(len(k) == 1 for k in by_video.values()) and len(by_video) == 9
    assert sorted(np.bincount(folds)) == [6, 6, 6]  # 18 clips, near-equal folds
    assert np.array_equal(folds, fold_assignment(ids, 3, seed=1))
    assert not np.array_equal(folds, fold_assignment(ids, 3, seed=2))
    with pytest.raises(DataError, match="4 folds need at least 4 videos, but the training split has 3"):
        fold_assignment(["a_1", "a_2", "b_1", "c_1"], 4)
    with pytest.raises(ConfigError, match=r"data.init_args.fold: expected a fold in 0\.\.1 \(folds=2\), found 2"):
        TextFeaturesDataModule("x.pkl", fold=2, folds=2)
    with pytest.raises(ConfigError, match=r"data.init_args.folds: expected an integer >= 2 \(K folds\), found 1"):
        TextFeaturesDataModule("x.pkl", fold=0, folds=1)


def test_msa_pipeline_kfold_feeds_the_meta_learner_out_of_fold_features(kfold_run):
    path, records, folder, ran = kfold_run
    assert sorted(records) == ["meta", "stage_av", "stage_av.fold0", "stage_av.fold1"]
    assert [c[0] for c in ran] == ["fit"] * 4
    assert all(r["status"] == "finished" for r in records.values())
    for k in (0, 1):
        record = records[f"stage_av.fold{k}"]
        assert record["fold"] == {"of": "stage_av", "index": k, "folds": 2, "seed": 3}
        assert f"--data.init_args.fold={k}" in record["command"]
    full = Entry(records["stage_av"]["export"])
    folds = [Entry(records[f"stage_av.fold{k}"]["export"]) for k in (0, 1)]
    assert [e.meta["fold"]["index"] for e in folds] == [0, 1] and all(e.names == ["heldout/features.H"] for e in folds)
    meta_command = " ".join(records["meta"]["command"])
    assert f"--data.init_args.fold_exports=[[{folds[0].path},{folds[1].path}]]" in meta_command

    # the fold runs held out every training clip exactly once, whole videos per fold
    train_ids = full.meta["ids"]["train"]
    held = [e.meta["ids"]["heldout"] for e in folds]
    assert sorted(held[0] + held[1]) == sorted(train_ids)
    assert not {video_of(i) for i in held[0]} & {video_of(i) for i in held[1]}

    # the meta-learner's DataModule, as its command line built it: fold k's training rows are fold k's export
    dm = StageFeaturesDataModule(
        str(sims_data_file(records)),
        exports=[str(full.path)],
        fold_exports=[[str(e.path) for e in folds]],
        stages=["AV"],
        cache_dir=str(folder / "cache"),
    )
    dm.setup("fit")
    assert dm.stacking == "kfold"
    train = dm.datasets["train"]
    features = np.asarray(train.extras["H_AV"])
    full_rows = {i: r for r, i in enumerate(train_ids)}
    for entry in folds:
        rows = [train.arrays.ids.index(i) for i in entry.meta["ids"]["heldout"]]
        np.testing.assert_array_equal(features[rows], np.asarray(entry["heldout/features.H"]))
        in_sample = np.asarray(full["train/features.H"])[[full_rows[i] for i in entry.meta["ids"]["heldout"]]]
        assert not np.allclose(features[rows], in_sample)  # not the full stage's in-sample features
    # `msa report --fmlmsn` reads the stage and the meta-learner, never a fold run (which has the same pair)
    table = fmlmsn_results(folder / "runs", "valid")
    expected = stage_metrics(folder / "runs" / "stage_av", records["stage_av"], "valid")
    assert [(g, t) for g, t, _ in table["rows"]] == [("AV", "A"), ("AV", "V"), ("AV", "A+V"), ("M", "A+V+T")]
    assert table["rows"][2][2] == expected
    np.testing.assert_array_equal(  # validation: the stage trained on the whole training split
        np.asarray(dm.datasets["valid"].extras["H_AV"]),
        np.asarray(full["valid/features.H"])[[full.meta["ids"]["valid"].index(i) for i in dm.splits["valid"].ids]],
    )


def sims_data_file(records):
    command = records["stage_av"]["command"]
    return next(a.split("=", 1)[1] for a in command if a.startswith("--data.init_args.path="))


def test_fold_runs_are_stages_planned_skipped_and_run_alone(kfold_run, capsys, stages_in_process):
    """The plan lists the fold runs; a second run and `--only stage_av.fold1` (a real `msa pipeline` subprocess)
    skip them (up to date)."""
    path, _, folder, _ = kfold_run
    plan = msa_in_process(capsys, "pipeline", path, "--dry-run")
    assert plan.returncode == 0, plan.stderr[-2000:]
    lines = plan.stdout.splitlines()
    assert [re.match(r"\[([^]]+)\]", x).group(1) for x in lines if " msa fit " in x] == [
        "stage_av",
        "stage_av.fold0",
        "stage_av.fold1",
        "meta",
    ]
    assert any("held-out fold 1 of 2 of stage_av's training clips" in x for x in lines)
    env = {"MSA_CACHE_DIR": str(folder / "cache")}
    again = msa_in_process(capsys, "pipeline", path, env=env)
    assert again.returncode == 0 and again.stderr.count("is up to date, skipped") == 4, again.stderr[-2000:]
    assert stages_in_process == []  # nothing was fitted again
    one = _msa(["pipeline", path, "--only", "stage_av.fold1"], folder, folder / "cache")  # a real subprocess
    assert one.returncode == 0 and "stage stage_av.fold1 is up to date, skipped" in one.stderr, one.stderr[-2000:]
    assert one.stderr.count("skipped") == 1
    # `msa export` of a fold run's held-out fold by hand finds what the pipeline exported (the same store entry)
    fold1 = folder / "runs" / "stage_av.fold1"
    again = msa_in_process(capsys, "export", fold1, "--outputs", "features.H", "--splits", "heldout", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((fold1 / "stage.json").read_text())["export"] in again.stdout + again.stderr


def test_meta_refuses_fold_exports_that_miss_or_repeat_a_fold(kfold_run):
    _, records, folder, _ = kfold_run
    full, fold0, fold1 = (records[n]["export"] for n in ("stage_av", "stage_av.fold0", "stage_av.fold1"))

    def setup(fold_exports):
        dm = StageFeaturesDataModule(
            sims_data_file(records),
            exports=[full],
            fold_exports=[fold_exports],
            stages=["AV"],
            cache_dir=str(folder / "cache"),
        )
        dm.setup("fit")

    with pytest.raises(
        DataError, match=r"expected folds 0\.\.1 of one assignment, found fold 0 of 2 \(seed 3\), fold 0"
    ):
        setup([fold0, fold0])
    with pytest.raises(DataError, match=r"\(AV\), fold 0: .* is not the export of a fold run"):
        setup([full, fold1])
    # fold 1's export without its first clip (as from fold runs of another file): a gap naming fold and id
    source = Entry(fold1)
    gap = Store(folder / "gap_store").put(
        "export",
        {"gap": 1},
        {"heldout/features.H": np.asarray(source["heldout/features.H"])[1:]},
        {**source.meta, "ids": {"heldout": source.meta["ids"]["heldout"][1:]}},
    )
    missing = source.meta["ids"]["heldout"][0]
    with pytest.raises(DataError, match=rf"\(AV\), fold 1: training id '{missing}' is in no fold export \(1 of"):
        setup([fold0, str(gap.path)])


def test_kfold_bad_input_is_one_error_line_and_leaves_nothing(sims_data, capsys):
    """`--set folds=1` (a real `msa pipeline` subprocess) and kfold over a DataModule that cannot split."""
    data, folder = sims_data
    path = _pipeline(folder, data, stacking="in_sample", file="in_sample.yaml")
    out = folder / "bad_runs"
    proc = _msa(["pipeline", path, "--set", "stacking=kfold", "--set", "folds=1", "--out", out], folder, folder / "c")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("msa: error:")]
    assert "folds: expected an integer >= 2" in line and "found 1" in line, line
    assert not out.exists() and not (folder / "c").exists()

    plain = _pipeline(
        folder, data, stage_data=["--data=msa_lightning.data.datamodule.SIMSDataModule"], file="plain.yaml"
    )
    run = msa_in_process(capsys, "pipeline", plain, "--out", out)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("msa: error:")]
    assert "stacking: kfold: stage 'stage_av'" in line and "data.init_args.fold" in line, line
    assert not out.exists()


def test_every_shipped_fmlmsn_pipeline_switches_to_kfold_with_one_setting():
    """`--set stacking=kfold` on each shipped pipeline: K fold runs after each stage, all needed by the meta stage,
    whose fold exports they fill; the file's default is the paper's in-sample stacking."""
    from msa_lightning.experiments.pipeline import load_pipeline

    for path in sorted(CONFIGS.glob("*_pipeline.yaml")):
        assert load_pipeline(path).stacking == "in_sample"
        pipeline = load_pipeline(path, ["stacking=kfold", "folds=3"])
        names = [s.name for s in pipeline.stages]
        runs = [f"{s}.fold{k}" for s in ("stage_av", "stage_at", "stage_vt") for k in range(3)]
        assert sorted(names) == sorted(["stage_av", "stage_at", "stage_vt", *runs, "meta"]), path
        assert set(runs) <= set(pipeline.stage("meta").needs), path
        assert [s.fold["index"] for s in pipeline.fold_runs("stage_vt")] == [0, 1, 2]


def test_a_failing_fold_run_leaves_no_folder(kfold_run, capsys, stages_in_process):
    """More folds than the file has videos (7): the fold run's `msa fit` stops with one line naming
    data.init_args.folds, and the pipeline takes back the folder it made for it."""
    path, _, folder, _ = kfold_run
    run = msa_in_process(
        capsys,
        "pipeline",
        path,
        "--set",
        "folds=9",
        "--only",
        "stage_av.fold8",
        env={"MSA_CACHE_DIR": str(folder / "cache")},
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "msa: error: data.init_args.folds=9" in run.stderr and "at least 9 videos" in run.stderr, run.stderr[-2000:]
    assert "stage 'stage_av.fold8' failed" in run.stderr
    assert len(stages_in_process) == 1 and "--data.init_args.fold=8" in stages_in_process[0]
    assert not (folder / "runs" / "stage_av.fold8").exists()


def test_eq8_retrain_under_kfold_reruns_the_fold_runs_and_the_meta_reads_them(
    sims_data, tmp_path, capsys, stages_in_process
):
    """A retrain round of Eq. 8 re-runs the named stage and its fold runs with the round's seed, then the
    meta-learner, which then reads the new fold runs' held-out features."""
    data, _ = sims_data
    path = _pipeline(tmp_path, data, file="retrain.yaml")
    spec = yaml.safe_load(path.read_text())
    meta = spec["stages"][1]
    meta["retrain"] = {"stages": ["stage_av"], "max_rounds": 1, "seed": 40}
    meta["args"].append("--model.init_args.retrain_threshold=1.01")  # p <= 1: always "retrain the stages"
    path.write_text(yaml.safe_dump(spec))
    env = {"MSA_CACHE_DIR": str(tmp_path / "cache")}
    run = msa_in_process(capsys, "pipeline", path, "--set", "trainer.max_epochs=1", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    seeds = [next((a for a in args if a.startswith("--seed_everything=")), None) for args in stages_in_process]
    assert [args[0] for args in stages_in_process] == ["fit"] * 8
    assert seeds == [None] * 4 + ["--seed_everything=41"] * 3 + [None]  # stage_av, fold0, fold1 again; meta
    runs = tmp_path / "runs"
    folds = [json.loads((runs / f"stage_av.fold{k}" / "stage.json").read_text()) for k in (0, 1)]
    assert all("--seed_everything=41" in record["command"] for record in folds)
    meta_record = json.loads((runs / "meta" / "stage.json").read_text())
    assert all(record["export"] in " ".join(meta_record["command"]) for record in folds)
    assert [r["stage_seed"] for r in meta_record["retrain_rounds"]] == [None, 41]
