"""Every shipped config is built through the real CLI and stepped, every sweep is parsed as a W&B agent
would run it, every pipeline file is checked.

* A full config (``model`` + ``data``) is fitted for 2 training steps with tiny substitutes: pretrained
  names -> ``tiny-bert``/``tiny-xlnet``, ``data.path`` -> a synthetic file of the config's dataset,
  synthetic ASR transcripts for ``MOSIASRDataModule``; the cache in a temporary folder.
* A fragment (logger, trainer preset, ablation) is applied on top of a base config.
* A sweep's ``command`` is expanded the way the agent does (``${program}``, ``${args}``, ...) with one
  sampled value per parameter and must parse (``--print_config``) with each value in place.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import pytest
import yaml

from msa_lightning.experiments.lightning_cli import make_cli

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _load(path: Path) -> dict:
    """The YAML of ``path`` (read once: collection asks for every file several times); a copy to change freely."""
    return copy.deepcopy(_read(path))


def _all(pattern: str = "*.yaml") -> list[Path]:
    return sorted(CONFIGS.rglob(pattern))


def _is_full(path: Path) -> bool:
    spec = _load(path)
    return "model" in spec and "data" in spec


def _is_sweep(path: Path) -> bool:
    return "command" in _load(path) and "parameters" in _load(path)


def _is_pipeline(path: Path) -> bool:
    return "stages" in _load(path)


def _class(spec: dict, key: str) -> str:
    section = spec.get(key) or {}
    return str(section.get("class_path", section) if isinstance(section, dict) else section).rsplit(".", 1)[-1]


FULL = [p for p in _all() if _is_full(p)]
SWEEPS = [p for p in _all() if _is_sweep(p)]
PIPELINES = [p for p in _all() if _is_pipeline(p)]
FRAGMENTS = [p for p in _all() if p not in FULL and p not in SWEEPS and p not in PIPELINES]
_id = lambda p: str(p.relative_to(CONFIGS))  # noqa: E731

#: arguments naming a pretrained Hugging Face model or tokenizer (replaced by an in-process tiny one)
PRETRAINED_KEYS = {"text_model", "tokenizer", "mlm"}
DATASET_OF = {
    "MOSIDataModule": "mosi",
    "MOSIASRDataModule": "mosi",
    "MOSEIDataModule": "mosei",
    "SIMSDataModule": "sims",
}


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture()
def fit_parser_only(monkeypatch):
    """``msa fit`` as the command runs it, but without building the parsers of the three subcommands it does not
    use (``validate``, ``test``, ``predict``: the same model/data/trainer arguments, three quarters of the time
    LightningCLI takes to start). Those subcommands are run in test_cli_runs, test_twostep, test_pipeline."""
    from msa_lightning.experiments.lightning_cli import MSACLI

    everything = MSACLI.subcommands()
    monkeypatch.setattr(MSACLI, "subcommands", staticmethod(lambda: {"fit": everything["fit"]}))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Synthetic files by (dataset, aligned), written once per module when first asked for."""
    import dataclasses

    from msa_lightning.data import synthetic as synthetic_module
    from msa_lightning.data.specs import get_spec
    from msa_lightning.data.synthetic import make_synthetic

    folder, made = tmp_path_factory.mktemp("config_data"), {}

    def get(dataset: str, aligned: bool) -> Path:
        if (dataset, aligned) not in made:
            size = 0.005 if dataset == "mosei" else 0.05  # a few dozen training samples each
            # unaligned sequences of 60 frames instead of several hundred: the recurrent encoders' steps
            # dominate otherwise (a valid file: unaligned lengths vary between datasets' releases)
            spec = dataclasses.replace(get_spec(dataset), audio_len=60, vision_len=60)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(synthetic_module, "get_spec", lambda name: spec)
                made[dataset, aligned] = make_synthetic(
                    dataset,
                    folder / f"{dataset}_{aligned}.pkl",
                    size_factor=size,
                    aligned=aligned,
                    seed=3,
                    bimodal_labels=True,
                )
        return made[dataset, aligned]

    return get


@pytest.fixture(scope="module")
def transcripts(synthetic, tmp_path_factory):
    """An ASR transcript file for the synthetic MOSI file: the gold text with one word changed per line."""
    from msa_lightning.data.reader import read_feature_file

    path = tmp_path_factory.mktemp("asr") / "asr.tsv"
    lines = []
    for split in read_feature_file(synthetic("mosi", False)).values():
        for uid, text in zip(split.ids, split.raw_text):
            words = text.split()
            lines.append(f"{uid}\t{' '.join(words[:-1] + ['uh'])}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny_args(config: Path, spec: dict, synthetic, transcripts, tmp_path: Path) -> list[str]:
    """Overrides that make ``spec`` (a full config) run in seconds on a CPU, without changing its model."""
    model_args = (spec["model"] or {}).get("init_args") or {}
    data_args = (spec["data"] or {}).get("init_args") or {}
    data_class = _class(spec, "data")
    # accumulate_grad_batches=1: a config's accumulation (Self-MM: 4) would merge the two steps into one
    args = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.accumulate_grad_batches=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--checkpoint.dirpath={tmp_path / 'ckpt'}",
        f"--data.init_args.cache_dir={tmp_path.parent / 'cache'}",
        "--data.init_args.num_workers=0",
    ]
    for section, given in (("model", model_args), ("data", data_args)):
        for key in PRETRAINED_KEYS & set(given):
            if given[key]:
                tiny = "tiny-xlnet" if "xlnet" in str(given[key]).lower() else "tiny-bert"
                args.append(f"--{section}.init_args.{key}={tiny}")
    for key, value in model_args.items():
        if isinstance(value, str) and value.endswith(".ckpt"):  # weights of an earlier run: random init here
            args.append(f"--model.init_args.{key}=null")
    if isinstance(model_args.get("step1_checkpoints"), dict):  # runs of an earlier step: the pretrained extractors
        given = ", ".join(f"{name}: pretrained" for name in model_args["step1_checkpoints"])
        args.append(f"--model.init_args.step1_checkpoints={{{given}}}")
    if "batch_size" in data_args:
        args.append("--data.init_args.batch_size=16")  # at least 2 training batches in the small files
    if (spec.get("trainer") or {}).get("accumulate_grad_batches", 1) != 1:
        # 2 batches must make the 2 optimiser steps counted below (Self-MM's configs accumulate 4, as MMSA)
        args.append("--trainer.accumulate_grad_batches=1")
    dataset = data_args.get("dataset") or DATASET_OF.get(data_class)
    if dataset and "path" in data_args:
        args.append(f"--data.init_args.path={synthetic(dataset, bool(data_args.get('aligned', False)))}")
    if data_class == "MOSIASRDataModule":
        args += [f"--data.init_args.transcripts={transcripts}", "--data.init_args.progress=false"]
        if data_args.get("positions", True):
            args += ["--data.init_args.k=5"]
    return args


def _fit(args: list[str]) -> object:
    cli = make_cli(["fit", *args])
    trainer = cli.trainer
    assert trainer.global_step == 2, f"expected 2 training steps, ran {trainer.global_step}"
    return cli


# ---------------------------------------------------------------------------------------------- full configs
@pytest.mark.parametrize("config", FULL, ids=_id)
def test_full_config_builds_and_steps(config, synthetic, transcripts, tmp_path, fit_parser_only):
    spec = _load(config)
    if _class(spec, "data") == "StageFeaturesDataModule":
        # reads the exports of earlier stages: stepped through its pipeline in test_fmlmsn; here it must
        # at least build through the CLI parser with every value it sets
        with pytest.raises(SystemExit) as exit_info:
            make_cli(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code in (0, None)
        pytest.skip("meta-learner config: needs stage exports (covered by its pipeline)")
    if _class(spec, "data") == "SKESLStreamDataModule":
        # streams litdata shards (SKESL pretraining): built here with every value it sets; stepped on tiny
        # shards in test_skesl_stream
        with pytest.raises(SystemExit) as exit_info:
            make_cli(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code in (0, None)
        pytest.skip("streaming-shards config: stepped on tiny shards in test_skesl_stream")
    if _class(spec, "data") in ("RawMediaDataModule", "ExtractedFeaturesDataModule"):
        # raw clips (TwoStepMSA): built here with every value it sets; stepped on a tiny raw release in test_twostep
        with pytest.raises(SystemExit) as exit_info:
            make_cli(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code in (0, None)
        pytest.skip("raw-media config: fitted on tiny mp4 files in test_twostep")
    cli = _fit(["--config", str(config), *_tiny_args(config, spec, synthetic, transcripts, tmp_path)])
    assert type(cli.model).__name__ == _class(spec, "model")
    assert type(cli.datamodule).__name__ == _class(spec, "data")
    # the config's own values reached the model (those not replaced by a tiny stand-in)
    for key, value in ((spec["model"] or {}).get("init_args") or {}).items():
        replaced = key in PRETRAINED_KEYS or (isinstance(value, str) and value.endswith(".ckpt"))
        if replaced or isinstance(value, (dict, list)) or value is None:
            continue
        if key in cli.model.hparams:
            assert cli.model.hparams[key] == value, f"model.init_args.{key}"


# ---------------------------------------------------------------------------------------------- fragments
def _base_for(fragment: Path) -> Path:
    """An ablation goes on a full config of its paper with the same model class (a MOSI one first);
    logger and trainer presets on the TFN baseline."""
    model = _class(_load(fragment), "model") if "model" in _load(fragment) else None
    if model:
        same = [
            p
            for p in FULL
            if CONFIGS / p.relative_to(CONFIGS).parts[0] == fragment.parents[1] and _class(_load(p), "model") == model
        ]
        same.sort(key=lambda p: ("mosi" not in p.name, p.name))
        assert same, f"{fragment}: no full config of model {model} beside it to apply it to"
        return same[0]
    return CONFIGS / "baselines" / "tfn_mosi.yaml"


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=_id)
def test_fragment_on_a_base_config_builds_and_steps(
    fragment, synthetic, transcripts, tmp_path, monkeypatch, fit_parser_only
):
    base = _base_for(fragment)
    spec = _load(base)
    tiny = _tiny_args(base, spec, synthetic, transcripts, tmp_path)
    part = _load(fragment)
    trainer_part = part.get("trainer") or {}
    if trainer_part.get("accelerator") == "gpu":
        # a GPU preset: built with its settings on the CPU (strategy, precision, sync_batchnorm), not run
        cli = make_cli(["--config", str(base), "--config", str(fragment), *tiny], run=False)
        trainer = cli.trainer
        if "precision" in trainer_part:
            assert trainer.precision == trainer_part["precision"]
        if "strategy" in trainer_part:
            assert type(trainer.strategy).__name__ == "DDPStrategy"
        if part.get("global_batch_size") == "single_device":  # the base config's step, over every device
            step = cli.datamodule.batch_size * trainer.accumulate_grad_batches * trainer.world_size
            base_step = cli.config["data"]["init_args"]["batch_size"] * (spec.get("trainer") or {}).get(
                "accumulate_grad_batches", 1
            )
            assert step == base_step, fragment
        return
    if "logger" in trainer_part:
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_SILENT", "true")
        tiny.append(f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}")
    cli = _fit(["--config", str(base), "--config", str(fragment), *tiny])
    if "logger" in trainer_part:
        expected = trainer_part["logger"]["class_path"].rsplit(".", 1)[-1]
        assert type(cli.trainer.logger).__name__ == expected
        if expected == "WandbLogger":
            cli.trainer.logger.experiment.finish()
    for key, value in ((part.get("model") or {}).get("init_args") or {}).items():
        assert cli.model.hparams[key] == value, f"{fragment.name}: model.init_args.{key}"


# ---------------------------------------------------------------------------------------------- sweeps
def sample(parameter: dict):
    """One value of a W&B sweep parameter (the first of ``values``; the geometric or arithmetic middle of
    a range), so that every parameter is exercised with a value the agent could draw."""
    if "value" in parameter:
        return parameter["value"]
    if "values" in parameter:
        return parameter["values"][0]
    kind = parameter.get("distribution", "uniform" if isinstance(parameter.get("min"), float) else "int_uniform")
    lo, hi = parameter["min"], parameter["max"]
    if kind == "int_uniform":
        return int((lo + hi) // 2)
    if kind in ("uniform", "q_uniform"):
        return (lo + hi) / 2
    if kind in ("log_uniform_values", "q_log_uniform_values"):
        return math.sqrt(lo * hi)
    if kind in ("log_uniform", "q_log_uniform"):  # bounds are natural logarithms
        return math.exp((lo + hi) / 2)
    raise AssertionError(f"sweep distribution {kind!r} not handled by this test; add it")


def expand_command(sweep: dict, values: dict) -> list[str]:
    """The command line the W&B agent runs for ``values``: its own macro expansion
    (``wandb_agent.Agent._command_run`` with ``sweeps.utils.create_sweep_command(_args)``: ``${args}`` ->
    ``--name=value``, ``${program}``, ``${env}`` -> ``/usr/bin/env``, ``${interpreter}`` -> ``python``...)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(list(sweep.get("command") or sweep_utils.DEFAULT_SWEEP_COMMAND))
    sweep_vars = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    sweep_vars.update(
        interpreter=["python"],
        program=[sweep["program"]],
        env=["/usr/bin/env"],
        args_json_file=["wandb/sweep-x/config-x.json"],
    )
    out = []
    for word in map(str, command):
        if word.startswith("${") and word.endswith("}"):
            assert word[2:-1] in sweep_vars, f"unknown sweep macro {word}: the agent would drop it"
            out += sweep_vars[word[2:-1]]
        else:
            out.append(word)
    return out


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=_id)
def test_sweep_command_parses_as_the_agent_runs_it(sweep_file, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the agent runs from the repository root (config paths are relative to it)
    sweep = _load(sweep_file)
    values = {name: sample(p) for name, p in sweep["parameters"].items()}
    pytest.importorskip("wandb")
    command = expand_command(sweep, values)
    if command[0] == "/usr/bin/env":
        command = command[1:]
    assert command[0] == "msa", f"{sweep_file.name}: the agent would run {command[:2]}, not the msa command"
    with pytest.raises(SystemExit) as exit_info:
        make_cli([*command[1:], "--print_config"])
    out = capsys.readouterr()
    assert exit_info.value.code in (0, None), out.err[-2000:]
    printed = yaml.safe_load(out.out)
    for name, value in values.items():
        section, _, rest = name.partition(".")
        node = printed[section]
        if "class_path" in node and not rest.startswith("init_args."):
            rest = "init_args." + rest
        for part in rest.split("."):
            node = node[part]
        assert node == pytest.approx(value), f"{sweep_file.name}: {name}"


# ---------------------------------------------------------------------------------------------- pipelines
@pytest.mark.parametrize("pipeline_file", PIPELINES, ids=_id)
def test_pipeline_files_are_valid(pipeline_file, monkeypatch):
    from msa_lightning.experiments.pipeline import load_pipeline, pipeline_plan

    monkeypatch.chdir(REPO)
    pipeline = load_pipeline(pipeline_file)
    lines = [x for x in pipeline_plan(pipeline_file) if " msa fit " in x or " msa features extract " in x]
    assert len(lines) == len(pipeline.stages)
    for stage in pipeline.stages:
        for i, arg in enumerate(stage.args[:-1]):
            if arg == "--config":
                assert (REPO / stage.args[i + 1]).is_file(), f"{stage.name}: {stage.args[i + 1]} does not exist"
