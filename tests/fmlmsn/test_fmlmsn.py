"""FmlMSN (Peng et al., ESWA 2023): stage learners, saved stage features, meta-learner, Eq. 8.

Everything runs on synthetic CH-SIMS files with bimodal labels at 5 % of the real size, with tiny
layer widths and the in-process ``tiny-bert``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO, execute_notebook, msa_in_process

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.experiments.export import export_outputs
from msa_lightning.papers.fmlmsn.data import StageFeaturesDataModule, TextFeaturesDataModule
from msa_lightning.papers.fmlmsn.module import FmlMSNMeta, FmlMSNStage, retrain_criterion
from msa_lightning.papers.fmlmsn.net import fix_length, outer_fusion, text_length_rule
from msa_lightning.store import Store

DATA_KEY = {"file": "sims_bimodal", "text_model": "tiny-bert"}
TINY = dict(thid=8, tout=8, ahid=8, vhid=8, tdim=8, adim=8, vdim=8, fdim=8, text_dim=32, lr=1e-2)


@pytest.fixture(scope="module")
def sims_bimodal(tmp_path_factory):
    """Synthetic CH-SIMS with all seven labels, written by the `msa data synth` command (in-process: the same
    entry point as the console script; `msa data` runs as a subprocess in test_reader)."""
    out = tmp_path_factory.mktemp("fml") / "sims_bimodal.pkl"
    from msa_lightning.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "data",
                "synth",
                "--dataset",
                "sims",
                "--bimodal-labels",
                "--size-factor",
                "0.05",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
    assert exit_info.value.code in (0, None) and out.is_file()
    return out


@pytest.fixture(scope="module")
def fml_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fml_cache")


def _dm(path, cache, **kwargs):
    """The synthetic files have token ids but no BERT features: tiny-bert computes them once."""
    return TextFeaturesDataModule(
        str(path), text_model="tiny-bert", dataset="sims", batch_size=16, normalize=True, cache_dir=str(cache), **kwargs
    )


def _trainer(root, epochs, **kwargs):
    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        **kwargs,
    )


def _batch(audio_dim=3, vision_dim=4, n=5, labels=None):
    g = torch.Generator().manual_seed(0)
    return MSABatch(
        index=torch.arange(n),
        audio=torch.randn(n, 6, audio_dim, generator=g),
        audio_lengths=torch.tensor([6, 3, 1, 6, 2][:n]),
        vision=torch.randn(n, 4, vision_dim, generator=g),
        vision_lengths=torch.tensor([4, 4, 2, 1, 3][:n]),
        labels=labels or {},
    )


# ------------------------------------------------------------------------------------------- equations
def test_outer_fusion_shape_and_values():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    b = torch.tensor([[1.0, 10.0], [2.0, 4.0]])
    r = outer_fusion(a, b)
    assert r.shape == (2, 6)  # d_alpha x d_beta, flattened (Eq. 3)
    assert r[0].tolist() == [1.0, 10.0, 2.0, 20.0, 3.0, 30.0]
    assert r[1].tolist() == [1.0, 2.0, -2.0, -4.0, 0.0, 0.0]


def test_text_length_rule_and_fixed_length():
    lengths = [2, 4, 4, 4, 5, 5, 7, 9]  # mean 5, population std 2
    assert text_length_rule(lengths, lam=3.0) == 11
    assert text_length_rule(lengths, lam=0.0) == 5
    assert text_length_rule(lengths, lam=0.25) == 6  # 5.5 rounds up to a whole token
    tokens = torch.arange(1, 13, dtype=torch.float).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    padded = fix_length(tokens, mask, 5)
    assert padded.shape == (2, 5, 2)
    assert padded[0, 2:].abs().sum() == 0 and padded[1, 3:].abs().sum() == 0  # zeros at the end
    assert torch.equal(padded[1, :3], tokens[1])
    assert torch.equal(fix_length(tokens, mask, 2), tokens[:, :2])  # long sentences keep their first L


def test_frame_mean_reads_only_valid_frames():
    from msa_lightning.papers.fmlmsn.net import masked_frame_mean

    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [99.0, 99.0]], [[5.0, 6.0], [-99.0, 7.0], [8.0, 9.0]]])
    pooled = masked_frame_mean(x, torch.tensor([2, 1]))
    assert pooled.tolist() == [[2.0, 3.0], [5.0, 6.0]]  # padding after each length is ignored


# ------------------------------------------------------------------------------------------- losses
def _stage(pair="AV", **kwargs):
    return FmlMSNStage(
        pair=pair,
        audio_dim=3,
        vision_dim=4,
        metric_family="sims",
        **{**dict(ahid=4, vhid=4, adim=4, vdim=4, fdim=4), **kwargs},
    )


def test_each_task_reads_the_label_the_config_names():
    labels = {k: torch.full((5,), v) for k, v in dict(M=0.9, A=-0.5, V=0.3, AV=-0.1).items()}
    batch = _batch(labels=labels)
    stage = _stage()
    out = stage(batch)
    assert out.M.shape == (5,) and set(out.unimodal) == {"A", "V"} and out.features["H"].shape == (5, 4)
    loss, parts = stage.compute_loss(out, batch)
    for task in ("A", "V", "AV"):
        pred = out.M if task == "AV" else out.unimodal[task]
        assert torch.allclose(parts[f"loss_{task}"], (pred - labels[task]).abs().mean())
    assert torch.allclose(loss, parts["loss_A"] + parts["loss_V"] + parts["loss_AV"])

    multimodal = _stage(label_source="multimodal")
    multimodal.load_state_dict(stage.state_dict())
    _, parts_m = multimodal.compute_loss(multimodal(batch), batch)
    assert torch.allclose(parts_m["loss_A"], (out.unimodal["A"] - labels["M"]).abs().mean())
    assert torch.allclose(parts_m["loss_AV"], (out.M - labels["M"]).abs().mean())

    # ablation switches: Eq. 6 weights
    weighted = _stage(w_alpha=0.0, w_gamma=2.0)
    weighted.load_state_dict(stage.state_dict())
    loss_w, _ = weighted.compute_loss(weighted(batch), batch)
    assert torch.allclose(loss_w, parts["loss_V"] + 2 * parts["loss_AV"])


def test_fine_labels_missing_is_one_error_naming_the_keys():
    stage = _stage(pair="AT")
    with pytest.raises(DataError, match="regression_labels_AT") as err:
        stage.check_labels({"M": 0, "T": 0, "A": 0, "V": 0}, "file.pkl")
    assert "label_source=multimodal" in str(err.value)
    _stage(pair="AT", label_source="multimodal").check_labels({"M": 0})
    with pytest.raises(ConfigError, match="model.init_args.pair"):
        _stage(pair="TA")


# ------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def stage_runs(sims_bimodal, fml_cache, tmp_path_factory):
    """The three stages fitted briefly, checkpointed and exported to a store."""
    root = tmp_path_factory.mktemp("fml_runs")
    store = Store(root / "store")
    runs = {}
    for pair in ("AV", "AT", "VT"):
        L.seed_everything(0)
        model = FmlMSNStage(pair=pair, **TINY)
        trainer = _trainer(root, 8)
        trainer.fit(model, _dm(sims_bimodal, fml_cache))
        ckpt = root / f"{pair}.ckpt"
        trainer.save_checkpoint(ckpt)
        entry, _ = export_outputs(
            model, _dm(sims_bimodal, fml_cache), ckpt, ["features.H"], store=store, data_key=DATA_KEY
        )
        runs[pair] = dict(model=model, trainer=trainer, ckpt=ckpt, export=entry)
    return runs, store, root


def test_stage_beats_the_mean_predictor(stage_runs, sims_bimodal, fml_cache):
    runs, _, _ = stage_runs
    dm = _dm(sims_bimodal, fml_cache)
    dm.setup("fit")
    for pair in ("AV", "VT"):
        metrics = runs[pair]["trainer"].validate(runs[pair]["model"], dm, verbose=False)[0]
        y = dm.splits["valid"].labels[pair]
        mean_mae = float(np.abs(y - dm.splits["train"].labels[pair].mean()).mean())
        assert metrics["val/mae"] < 0.8 * mean_mae, (pair, metrics["val/mae"], mean_mae)
        alpha, beta = pair
        for task in (alpha, beta):  # the unimodal rows of Tables 7-8: the task's metrics on its own label
            assert metrics[f"val/{task}_mae"] == pytest.approx(metrics[f"val/loss_{task}"], rel=1e-4)
            assert {f"val/{task}_acc2", f"val/{task}_corr"} <= set(metrics)
    model = runs["AT"]["model"]
    lengths = dm.splits["train"].text_bert[:, 1].sum(1)
    assert int(model.net.text_len) == int(np.ceil(lengths.mean() + 3 * lengths.std()))  # Eqs. 1-2 on the data
    assert model.hparams.text_len == int(model.net.text_len)


def test_text_features_are_computed_once_and_stored(stage_runs, sims_bimodal, fml_cache):
    entries = list(Store(fml_cache).entries("frozen_features"))
    assert len(entries) == 3  # one per split, shared by the AT and VT stages and every later run
    dm = _dm(sims_bimodal, fml_cache)
    dm.setup("fit")
    train = dm.splits["train"]
    assert train.text.shape == (len(train), train.text_bert.shape[2], 32)
    assert len(list(Store(fml_cache).entries("frozen_features"))) == 3
    with pytest.raises(ConfigError, match="text_dim=768.*size 32"):
        _trainer(fml_cache, 1).validate(FmlMSNStage(pair="VT", text_dim=768), dm, verbose=False)


def test_saved_features_equal_a_fresh_eval_forward(stage_runs, sims_bimodal, fml_cache):
    runs, store, _ = stage_runs
    run = runs["VT"]
    entry = run["export"]
    assert sorted(entry.names) == ["test/features.H", "train/features.H", "valid/features.H"]
    model = FmlMSNStage.load_from_checkpoint(run["ckpt"]).eval()
    dm = _dm(sims_bimodal, fml_cache, inputs=sorted(model.required_inputs))
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        fresh = model(batch).features["H"].numpy()
    rows = [entry.meta["ids"]["valid"].index(i) for i in batch.ids]
    np.testing.assert_allclose(np.asarray(entry["valid/features.H"])[rows], fresh, rtol=1e-5, atol=1e-6)
    # the same checkpoint is reused; a retrained stage (new weights) gets a new entry
    again, built = export_outputs(
        model, _dm(sims_bimodal, fml_cache), run["ckpt"], ["features.H"], store=store, data_key=DATA_KEY
    )
    assert again.path == entry.path and not built
    retrained = run["ckpt"].with_name("VT_retrained.ckpt")
    state = torch.load(run["ckpt"], weights_only=False)
    state["state_dict"]["net.si_gamma.hidden.0.weight"] += 0.1
    torch.save(state, retrained)
    new_entry, built = export_outputs(
        model, _dm(sims_bimodal, fml_cache), retrained, ["features.H"], store=store, data_key=DATA_KEY
    )
    assert new_entry.path != entry.path and built


def test_meta_learner_on_exported_features(stage_runs, sims_bimodal, fml_cache):
    runs, _, root = stage_runs
    exports = [str(runs[p]["export"].path) for p in ("AV", "AT", "VT")]
    L.seed_everything(0)
    dm = StageFeaturesDataModule(str(sims_bimodal), exports=exports, batch_size=16, cache_dir=str(fml_cache))
    meta = FmlMSNMeta(stage_fdim=8, fdim=8, lr=1e-2, retrain_threshold=0.0)
    trainer = L.Trainer(
        max_epochs=20,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=L.pytorch.loggers.CSVLogger(root, name="meta"),
    )
    trainer.fit(meta, dm)
    result = trainer.test(meta, dm, verbose=False)[0]
    y = dm.splits["test"].labels["M"]
    mean_mae = float(np.abs(y - dm.splits["train"].labels["M"].mean()).mean())
    assert result["test/mae"] < 0.8 * mean_mae, (result["test/mae"], mean_mae)
    decision = json.loads((root / "meta" / "version_0" / "eq8.json").read_text())
    assert decision["decision"] == "reuse the stages" and decision["threshold"] == 0.0
    assert decision["total"] == 10 and decision["draws"] == 5 and 0.0 <= decision["p"] <= 1.0

    strict = FmlMSNMeta(stage_fdim=8, fdim=8, retrain_threshold=1.01)
    strict.load_state_dict(meta.state_dict())
    metrics = trainer.validate(strict, dm, verbose=False)[0]
    assert metrics["val/eq8_retrain"] == 1.0 and metrics["val/eq8_p"] == pytest.approx(decision["p"])

    with pytest.raises(ConfigError, match="stage_fdim"):
        trainer.validate(FmlMSNMeta(stage_fdim=16, fdim=8), dm, verbose=False)


def test_exports_must_cover_the_file_ids(tmp_path, sims_bimodal, fml_cache):
    store = Store(tmp_path / "store")
    good = {f"{s}/features.H": np.zeros((n, 4), np.float32) for s, n in (("train", 68), ("valid", 23), ("test", 23))}
    wrong = store.put(
        "export",
        {"x": 1},
        good,
        {
            "ids": {
                s: [f"other_{i}" for i in range(len(a))]
                for s, a in (
                    ("train", good["train/features.H"]),
                    ("valid", good["valid/features.H"]),
                    ("test", good["test/features.H"]),
                )
            },
            "feature_file_sha256": store.content_hash(sims_bimodal),  # the right file, the wrong ids
        },
    )
    dm = StageFeaturesDataModule(str(sims_bimodal), exports=[str(wrong.path)], stages=["AV"], cache_dir=str(fml_cache))
    with pytest.raises(DataError, match=r"exports\[0\] \(AV\).*split 'train'.*missing"):
        dm.setup("fit")
    with pytest.raises(DataError, match="not a complete store entry"):
        StageFeaturesDataModule(
            str(sims_bimodal), exports=[str(tmp_path)], stages=["AV"], cache_dir=str(fml_cache)
        ).setup("fit")


# ------------------------------------------------------------------------------------------- Eq. 8
def test_retrain_criterion_on_a_stub_learner_with_known_accuracy():
    true = torch.linspace(-1, 1, 40)
    true[true == 0] = 0.5
    assert retrain_criterion(true.clone(), true, "sims") == 1.0
    assert retrain_criterion(-true, true, "sims") == 0.0
    # a stub that gets exactly the positive half right: each draw's accuracy is the share of positives drawn
    stub = torch.where(true > 0, true, torch.ones_like(true))
    p = retrain_criterion(stub, true, "sims", total=10, draws=5, seed=7)
    rng = np.random.default_rng(7)
    expected = np.mean([(true[rng.choice(40, 10, replace=False)] > 0).float().mean().item() for _ in range(5)])
    assert p == pytest.approx(expected)
    assert p == retrain_criterion(stub, true, "sims", total=10, draws=5, seed=7)  # seeded
    assert retrain_criterion(stub, true, "sims", total=40, draws=1) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------- the msa command
def _msa(args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MSA_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_msa_fit_with_fine_labels_on_a_file_without_them(tmp_path, synthetic_sims, capsys):
    """The shipped stage config on a CH-SIMS file with only T/A/V labels: one line, exit 2, no traceback.
    (In-process through `main`, the console script's error boundary; the successful `msa fit` runs of the
    shipped configs are the pipeline's stages below.)"""
    from msa_lightning.cli import main

    config = str(REPO / "configs" / "fmlmsn" / "sims_stage.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                config,
                f"--data.init_args.path={synthetic_sims}",
                "--model.init_args.pair=AV",
                "--data.init_args.num_workers=0",
                f"--data.init_args.cache_dir={tmp_path / 'cache'}",
                "--trainer.max_epochs=1",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-3000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith("msa: error:") and "regression_labels_AV" in message, err[-2000:]
    assert "label_source=multimodal" in message and "Traceback" not in err


def test_text_features_from_a_saved_bert_folder(tmp_path, sims_bimodal):
    from msa_lightning.nn.pretrained import load_model

    torch.manual_seed(1)
    bert = load_model("tiny-bert")
    bert.save_pretrained(tmp_path / "bert")
    dm = TextFeaturesDataModule(str(sims_bimodal), text_model=str(tmp_path / "bert"), cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    ids = torch.from_numpy(dm.splits["valid"].text_bert[:4])
    with torch.no_grad():
        expected = bert.eval()(input_ids=ids[:, 0], attention_mask=ids[:, 1], token_type_ids=ids[:, 2])
    expected = expected.last_hidden_state
    np.testing.assert_allclose(np.asarray(dm.splits["valid"].text[:4]), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_fmlmsn_m_on_mosi_which_has_only_multimodal_labels(tmp_path, synthetic_mosi, fml_cache):
    from msa_lightning.data.datamodule import MOSIDataModule

    dm = MOSIDataModule(str(synthetic_mosi), batch_size=16, normalize=True, cache_dir=str(fml_cache))
    small = dict(ahid=8, vhid=8, adim=8, vdim=8, fdim=8, lr=1e-2)
    with pytest.raises(DataError, match="regression_labels_A, regression_labels_V, regression_labels_AV"):
        _trainer(tmp_path, 1).fit(FmlMSNStage(pair="AV", **small), dm)
    L.seed_everything(0)
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=16, normalize=True, cache_dir=str(fml_cache))
    stage = FmlMSNStage(pair="AV", label_source="multimodal", **small)
    trainer = _trainer(tmp_path, 8)
    trainer.fit(stage, dm)
    mae = float(trainer.callback_metrics["val/mae"])
    y = dm.splits["valid"].labels["M"]
    mean_mae = float(np.abs(y - dm.splits["train"].labels["M"].mean()).mean())
    assert mae < 0.9 * mean_mae, (mae, mean_mae)
    assert float(trainer.callback_metrics["val/loss_AV"]) == pytest.approx(mae, rel=1e-4)  # the task learns M


def test_shipped_configs_and_sweep_parse(monkeypatch):
    """Every FmlMSN config, and the sweep's command with one value per parameter, parse with the CLI."""
    monkeypatch.setattr(sys, "argv", ["msa"])
    import yaml

    from msa_lightning.data.datamodule import MSADataModule
    from msa_lightning.experiments.lightning_cli import MSACLI
    from msa_lightning.training.module import MSARegressionModule

    class ParseOnly(MSACLI):
        def instantiate_classes(self) -> None:  # the data files are not needed to check the configs
            pass

    def parse(args):
        return ParseOnly(
            MSARegressionModule,
            MSADataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            args=args,
            auto_configure_optimizers=False,
        ).config

    folder = REPO / "configs" / "fmlmsn"
    for path in sorted(folder.glob("*_stage.yaml")) + sorted(folder.glob("*_meta.yaml")):
        config = parse(["--config", str(path)])
        assert config.model.init_args.fdim > 0 and config.data.init_args.batch_size == 64, path
    sweep = yaml.safe_load((folder / "sweep_sims.yaml").read_text())
    args = [f"--{name}={spec['values'][0]}" for name, spec in sweep["parameters"].items()]
    command = [a for a in sweep["command"][2:] if a != "${args}"]
    config = parse([a.replace("configs/", str(REPO / "configs") + "/") for a in command] + args)
    assert config.model.init_args.lr == 0.0005 and config.model.init_args.pair == "AV"
    for path in folder.glob("*_pipeline.yaml"):
        pipeline = yaml.safe_load(path.read_text())
        names = [stage["name"] for stage in pipeline["stages"]]
        assert names == ["stage_av", "stage_at", "stage_vt", "meta"], path
        for stage in pipeline["stages"]:
            assert (path.parent / stage["args"][1]).is_file(), (path, stage["args"][1])  # relative to the file


# ---------------------------------------------------------------------------------------- the notebook and the pipeline
@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory):
    """notebooks/fmlmsn.ipynb executed top to bottom as a user runs it, on a tiny synthetic CH-SIMS file (5 %,
    2 epochs). It runs the shipped pipeline (configs/fmlmsn/sims_pipeline.yaml with tiny overrides) through
    ``run_pipeline``, what `msa pipeline` calls: three stage fits with exports, the meta-learner on them, an
    `msa test` of each best checkpoint. The pipeline test below checks that run folder (one pipeline run for
    both, each stage a real `msa fit` / `msa test` subprocess)."""
    workdir = tmp_path_factory.mktemp("fmlmsn_notebook")
    nb = execute_notebook(
        "fmlmsn.ipynb",
        workdir,
        # no seeds: the closing `msa report --paper fmlmsn` shows the paper's numbers only (the stored notebook has
        # our row from `msa pipeline --seeds` of two seeds: tests/experiments/test_notebooks_stored.py)
        {"MSA_NOTEBOOK_SIZE": "0.05", "MSA_NOTEBOOK_EPOCHS": "2", "MSA_NOTEBOOK_SEEDS": ""},
        timeout=600,
    )
    return nb, workdir


@pytest.mark.slow
def test_fmlmsn_notebook_executes(notebook_run):
    """notebooks/fmlmsn.ipynb: its Tables 7-8 rows and the Eq. 8 value, drawn as a bar chart."""
    nb, workdir = notebook_run
    assert (workdir / "fmlmsn.png").stat().st_size > 1000
    assert list((workdir / "cache" / "export").iterdir())  # the saved stage features went to the notebook's store
    tables = [
        o["data"]["text/markdown"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "text/markdown" in o.get("data", {})
    ]
    assert len(tables) == 2 and "| M | A+V+T |" in tables[0] and "| A, T | A |" in tables[0]
    assert tables[1].startswith("Peng et al., A fine-grained modal label-based") and "| FmlMSN | ours |" in tables[1]
    plot_cell = next(c for c in nb.cells if c.cell_type == "code" and "fmlmsn.png" in c.source)
    printed = "".join(o.get("text", "") for o in plot_cell.outputs)
    assert printed.startswith("Eq. 8: p = ") and ("reuse the stages" in printed or "retrain the stages" in printed)


@pytest.mark.slow
def test_msa_pipeline_runs_the_three_stages_then_the_meta_learner(notebook_run, capsys):
    """The shipped pipeline's shape (configs/fmlmsn/sims_pipeline.yaml) with tiny sizes, as the notebook ran
    it: three stage fits with exports, the meta-learner on them; `msa report --fmlmsn` reads it; a second
    `msa pipeline` (a real subprocess) skips every stage."""
    import yaml

    from msa_lightning.cli import main

    _, workdir = notebook_run
    pipeline = yaml.safe_load((workdir / "pipeline.yaml").read_text())
    shipped = yaml.safe_load((REPO / "configs" / "fmlmsn" / "sims_pipeline.yaml").read_text())
    assert [s["name"] for s in pipeline["stages"]] == [s["name"] for s in shipped["stages"]]
    out = Path(pipeline["out"])
    records = {
        name: json.loads((out / name / "stage.json").read_text())
        for name in ("stage_av", "stage_at", "stage_vt", "meta")
    }
    assert all(r["status"] == "finished" for r in records.values())
    for name in ("stage_av", "stage_at", "stage_vt"):
        assert (Path(records[name]["export"]) / "train" / "features.H.npy").is_file()
    # the meta-learner read the three stages' exports (the pipeline substituted ${stage.export})
    meta_command = " ".join(records["meta"]["command"])
    assert all(records[name]["export"] in meta_command for name in ("stage_av", "stage_at", "stage_vt"))
    eq8 = [json.loads(p.read_text()) for p in (out / "meta").rglob("eq8.json")]
    assert len(eq8) == 1 and eq8[0]["decision"] in ("reuse the stages", "retrain the stages")
    # every stage ends with `msa test` of its best checkpoint (test: true): the report reads the test split
    assert all(r["tested"] == r["best_ckpt"] for r in records.values())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # `msa report` in-process (a subprocess in test_cli_runs)
        main(["report", str(out), "--fmlmsn"])
    report = capsys.readouterr()
    assert exit_info.value.code in (0, None), report.err[-2000:]
    assert "FmlMSN results, test split" in report.out, report.out[:500]
    second = _msa(["pipeline", str(workdir / "pipeline.yaml")], workdir)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stderr.count("is up to date, skipped") == 4, second.stderr[-2000:]


# ------------------------------------------------------------------------ feature-file provenance, Eq. 8, label sources
def test_msa_fit_meta_refuses_stage_features_of_another_feature_file(stage_runs, sims_bimodal, tmp_path):
    """Exports record the feature file their stage read (path, SHA-256); the meta-learner's DataModule compares
    it with its own file: another CH-SIMS file with the same ids is one `msa: error:` naming both files."""
    from msa_lightning.data.synthetic import make_synthetic

    runs, _, _ = stage_runs
    exports = [str(runs[p]["export"].path) for p in ("AV", "AT", "VT")]
    assert all(runs[p]["export"].meta["feature_file_sha256"] for p in ("AV", "AT", "VT"))
    other = make_synthetic("sims", tmp_path / "other_sims.pkl", size_factor=0.05, seed=4, bimodal_labels=True)
    proc = _msa(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "fmlmsn" / "sims_meta.yaml"),
            f"--data.init_args.path={other}",
            f"--data.init_args.exports=[{','.join(exports)}]",
            "--trainer.max_epochs=1",
        ],
        tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("msa: error:")]
    assert "exports[0] (AV" in line and str(sims_bimodal.resolve()) in line and str(other) in line, line
    assert "must come from the same feature file" in line


def test_eq8_is_that_of_the_best_checkpoint(stage_runs, sims_bimodal, fml_cache, tmp_path):
    """The best checkpoint carries its own Eq. 8 result; eq8.json reports that one, not the last epoch's."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    runs, _, _ = stage_runs
    exports = [str(runs[p]["export"].path) for p in ("AV", "AT", "VT")]
    L.seed_everything(0)
    dm = StageFeaturesDataModule(str(sims_bimodal), exports=exports, batch_size=16, cache_dir=str(fml_cache))
    meta = FmlMSNMeta(stage_fdim=8, fdim=8, lr=5e-2)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/mae", mode="min", save_last=True)
    trainer = L.Trainer(
        max_epochs=6,
        callbacks=[best],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="meta"),
    )
    trainer.fit(meta, dm)
    decision = json.loads((tmp_path / "meta" / "version_0" / "eq8.json").read_text())
    saved = torch.load(best.best_model_path, weights_only=False)
    assert decision["checkpoint"] == best.best_model_path and decision["epoch"] == saved["epoch"]
    assert decision["p"] == saved["fmlmsn_eq8"]["p"] and decision["retrain"] == (decision["p"] < 0.74)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["fmlmsn_eq8"]
    assert last["epoch"] == 5  # every checkpoint keeps the result of its own weights


def test_label_sources_and_the_text_length_scope(sims_bimodal, fml_cache):
    """FmlMSN-m as Table 8's caption words it (M for the bimodal task only); Eq. 1's N over the whole dataset."""
    assert _stage(label_source="multimodal_bimodal").task_labels() == {"A": "A", "V": "V", "AV": "M"}
    assert _stage(label_source="multimodal").task_labels() == {"A": "M", "V": "M", "AV": "M"}
    dm = _dm(sims_bimodal, fml_cache)
    dm.setup("fit")
    lengths = {s: dm.splits[s].text_bert[:, 1].sum(1) for s in ("train", "valid", "test")}
    for scope, used in (("train", lengths["train"]), ("all", np.concatenate(list(lengths.values())))):
        model = FmlMSNStage(pair="AT", text_len_scope=scope, **TINY)
        trainer = _trainer(fml_cache / scope, 1, limit_train_batches=1, limit_val_batches=1)
        trainer.fit(model, dm)
        assert model.hparams.text_len == text_length_rule(used), scope
    with pytest.raises(ConfigError, match=r"text_len_scope: expected one of \['train', 'all'\], found 'test'"):
        FmlMSNStage(text_len_scope="test", **TINY)


def test_ch_sims_gives_the_papers_text_length(shared_dir):
    """Section 5.1: L = 39 on CH-SIMS (lambda 3). Runs where the real CH-SIMS file is available."""
    from msa_lightning.data.reader import read_feature_file
    from msa_lightning.data.specs import get_spec

    path = shared_dir / "data" / "sims" / "unaligned_39.pkl"
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    splits = read_feature_file(path, get_spec("sims"))
    train = splits["train"].text_bert[:, 1].sum(1)
    every = np.concatenate([splits[s].text_bert[:, 1].sum(1) for s in ("train", "valid", "test")])
    assert 39 in (text_length_rule(train), text_length_rule(every)), (text_length_rule(train), text_length_rule(every))


def test_msa_pipeline_acts_on_a_retrain_decision(sims_bimodal, tmp_path, monkeypatch, capsys, stages_in_process):
    """A meta stage with `retrain`: Eq. 8 below the threshold re-runs the named stage with seed + round, then the
    meta-learner, up to max_rounds; every round is recorded. `msa pipeline` in-process, its stages through the
    same entry point (``stages_in_process``)."""
    import yaml

    monkeypatch.setenv("MSA_CACHE_DIR", str(tmp_path / "cache"))
    common = [
        f"--data.init_args.path={sims_bimodal}",
        "--data.init_args.batch_size=16",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    tiny = [f"--model.init_args.{k}=8" for k in ("ahid", "vhid", "adim", "vdim", "fdim")]
    configs = REPO / "configs" / "fmlmsn"
    pipeline = {
        "name": "retrain",
        "out": str(tmp_path / "runs"),
        "stages": [
            {
                "name": "stage_av",
                "args": ["--config", str(configs / "sims_stage.yaml"), "--model.init_args.pair=AV", *common, *tiny],
                "export": {"outputs": ["features.H"]},
            },
            {
                "name": "meta",
                "needs": ["stage_av"],
                "retrain": {"stages": ["stage_av"], "max_rounds": 1, "seed": 7},
                "args": [
                    "--config",
                    str(configs / "sims_meta.yaml"),
                    "--model.init_args.stages=[AV]",
                    "--data.init_args.stages=[AV]",
                    "--data.init_args.exports=[${stage_av.export}]",
                    "--model.init_args.stage_fdim=8",
                    "--model.init_args.fdim=8",
                    "--model.init_args.retrain_threshold=1.01",  # p <= 1: always "retrain the stages"
                    *common,
                ],
            },
        ],
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    run = msa_in_process(capsys, "pipeline", tmp_path / "pipeline.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    assert [c[0] for c in stages_in_process] == ["fit"] * 4  # stage, meta, then one round: stage (seed 8), meta
    assert "--seed_everything=8" in stages_in_process[2] and "--seed_everything=8" not in stages_in_process[3]
    record = json.loads((tmp_path / "runs" / "meta" / "stage.json").read_text())
    rounds = record["retrain_rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and [r["stage_seed"] for r in rounds] == [None, 8]
    assert all(r["decision"] == "retrain the stages" for r in rounds)
    assert "retraining stage_av with seed 8 (round 1 of 1)" in run.stderr and "(no rounds left)" in run.stderr

    pipeline["stages"][1]["retrain"] = {"stages": ["stage_vt"]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(pipeline))
    proc = _msa(["pipeline", str(tmp_path / "bad.yaml")], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "stage 'meta': retrain.stages names 'stage_vt', not one of its needs" in proc.stderr
