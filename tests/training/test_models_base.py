"""The shared LightningModule base: network boundary (``self.net`` -> ``MSAOutput``), ``required_inputs``,
parameter groups and schedules, train/eval modes of pretrained encoders, epoch losses (exact under DDP
with uneven shards), unlabeled evaluation, data-shaped arguments checked against the data, and the
pretrained loader's offline behaviour."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import transformers
from torch import nn
from torch.utils.data import DataLoader

from msa_lightning.batch import MSABatch
from msa_lightning.data import MOSIDataModule, SIMSDataModule
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.nn import pretrained
from msa_lightning.nn.pretrained import PretrainedNotAvailable, load_model
from msa_lightning.output import MSAOutput
from msa_lightning.papers.baselines.module import BertLSTMModule, LFDNNModule, TFNModule
from msa_lightning.papers.hybrid_shift.module import HybridShiftModule
from msa_lightning.papers.swrm.module import SelfMMModule, SWRMModule

REPO = Path(__file__).resolve().parents[2]
N = 10  # samples of the hand-made dataset


def make_batches(rows: list[int], batch_size: int, labeled: bool = True) -> DataLoader:
    """Batches of a fixed 10-sample dataset (MOSI-shaped: audio 5, vision 20, 8 tokens and frames), rows in order."""
    g = torch.Generator().manual_seed(0)
    audio, vision = torch.randn(N, 8, 5, generator=g), torch.randn(N, 8, 20, generator=g)  # word-aligned
    ids = torch.randint(1000, 2000, (N, 8), generator=g)
    labels = torch.linspace(-3, 3, N)
    out = []
    for start in range(0, len(rows), batch_size):
        r = torch.tensor(rows[start : start + batch_size])
        out.append(
            MSABatch(
                index=r,
                text_ids=ids[r],
                text_mask=torch.ones_like(ids[r]),
                text_segment=torch.zeros_like(ids[r]),
                audio=audio[r],
                audio_lengths=torch.full((len(r),), 8),
                vision=vision[r],
                vision_lengths=torch.full((len(r),), 8),
                labels={"M": labels[r]} if labeled else {},
                ids=[f"u{i}" for i in r.tolist()],
            )
        )
    return DataLoader(out, batch_size=None, collate_fn=_same)


def _same(batch: MSABatch) -> MSABatch:
    return batch


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**args, **kwargs})


def _lfdnn(**kwargs) -> LFDNNModule:
    torch.manual_seed(0)
    return LFDNNModule(
        **{"audio_dim": 5, "vision_dim": 20, "hidden": 8, "post_fusion_dim": 8, "metric_family": "mosi", **kwargs}
    )


# ---------------------------------------------------------------------------------------------- network boundary
@pytest.mark.parametrize(
    "make",
    [
        lambda: _lfdnn(),
        lambda: TFNModule(audio_dim=5, vision_dim=20),
        lambda: BertLSTMModule(audio_dim=5, vision_dim=20, text_model="tiny-bert"),
        lambda: SelfMMModule(audio_dim=5, vision_dim=20, text_model="tiny-bert"),
        lambda: HybridShiftModule(audio_dim=5, vision_dim=20, text_model="tiny-bert", mba_max_len=8),
    ],
    ids=["lfdnn", "tfn", "bert_lstm", "selfmm", "hybrid_shift"],
)
def test_every_module_holds_a_plain_net_that_loads_by_prefix(make):
    module = make().eval()
    assert isinstance(module.net, nn.Module) and not isinstance(module.net, L.LightningModule)
    batch = next(iter(make_batches(list(range(4)), 4)))
    out = module(batch)
    assert isinstance(out, MSAOutput) and out.M.shape == (4,)
    assert all(torch.is_tensor(v) for v in out.flat().values()) and "M" in out.flat()
    # the network's weights load by prefix into a fresh network built from the same args
    state = {k[len("net.") :]: v for k, v in module.state_dict().items() if k.startswith("net.")}
    fresh = module.build_net().eval()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(batch).M, out.M)


def test_output_flat_names_and_groups():
    out = MSAOutput(
        M=torch.zeros(2),
        unimodal={"T": torch.ones(2)},
        features={"fusion": torch.ones(2, 3)},
        extras={"p_att.audio": torch.ones(2, 4, 4), "mask": torch.ones(2, 4)},
    )
    assert list(out.flat()) == ["M", "T", "features.fusion", "extras.p_att.audio", "extras.mask"]
    assert set(out.group("p_att")) == {"audio"}


def test_required_inputs_follow_the_model():
    frames = {"audio", "audio_lengths", "vision", "vision_lengths"}
    assert LFDNNModule(audio_dim=5, vision_dim=20).required_inputs == {"text_ids", "text_mask"} | frames
    assert TFNModule(text_encoder="features").required_inputs == {"text_feats", "text_mask"} | frames
    text = {"text_ids", "text_mask", "text_segment"}
    assert BertLSTMModule(text_model="tiny-bert").required_inputs == text | frames
    assert SelfMMModule(text_model="tiny-bert").required_inputs == text | frames
    assert HybridShiftModule(text_model="tiny-bert", modalities=["text", "vision"]).required_inputs == text | {
        "vision",
        "vision_lengths",
    }


# ---------------------------------------------------------------------------------------------- optimisation
def test_param_groups_by_longest_prefix_without_decay_on_biases_and_norms():
    model = BertLSTMModule(
        audio_dim=5,
        vision_dim=20,
        text_model="tiny-bert",
        lr=1e-3,
        weight_decay=0.1,
        encoder_lr=5e-5,
        encoder_weight_decay=0.01,
        param_groups=[
            {"name": "audio", "prefixes": ["net.audio_rnn"], "lr": 5e-3},
            {"name": "audio_ih", "prefixes": ["net.audio_rnn.rnn.weight_ih_l0"], "lr": 7e-3, "weight_decay": 0.0},
        ],
    )
    groups = {g["name"]: g for g in model.parameter_groups()}
    names = {id(p): n for n, p in model.named_parameters()}
    members = {k: {names[id(p)] for p in g["params"]} for k, g in groups.items()}
    assert members["audio_ih"] == {"net.audio_rnn.rnn.weight_ih_l0"}  # the longer prefix wins
    assert members["audio"] == {"net.audio_rnn.rnn.weight_hh_l0"}
    assert members["audio/no_decay"] == {"net.audio_rnn.rnn.bias_ih_l0", "net.audio_rnn.rnn.bias_hh_l0"}
    assert groups["audio"]["lr"] == 5e-3 and groups["audio"]["weight_decay"] == 0.1  # module default
    assert groups["encoder"]["lr"] == 5e-5 and groups["encoder"]["weight_decay"] == 0.01
    layer_norms = {n for n in members["encoder/no_decay"] if "LayerNorm" in n}
    assert layer_norms and all(n.endswith(("bias", "LayerNorm.weight")) for n in members["encoder/no_decay"])
    assert all(g["weight_decay"] == 0.0 for k, g in groups.items() if k.endswith("/no_decay"))
    assert sum(len(m) for m in members.values()) == len(list(model.parameters()))
    # a BatchNorm weight gets no decay either
    tfn = TFNModule(audio_dim=5, vision_dim=20, weight_decay=0.1)
    no_decay = {id(p) for g in tfn.parameter_groups() if g["name"] == "default/no_decay" for p in g["params"]}
    assert id(tfn.net.audio_pool.norm.weight) in no_decay and id(tfn.net.head[1][0].weight) not in no_decay


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"lr": 0.0}, "model.init_args.lr"),
        ({"lr": -1e-3}, "model.init_args.lr"),
        ({"weight_decay": -0.1}, "model.init_args.weight_decay"),
        ({"warmup_ratio": 1.0}, "model.init_args.warmup_ratio"),
        ({"encoder_lr": 0.0}, "model.init_args.encoder_lr"),
        ({"param_groups": [{"name": "a", "prefixes": ["net.head"], "lr": -1.0}]}, "model.init_args.param_groups[0].lr"),
        ({"param_groups": [{"name": "a", "prefix": ["net.head"]}]}, "model.init_args.param_groups[0]"),
        ({"scheduler": "step"}, "model.init_args.scheduler"),
        ({"scheduler": "cosine_annealing", "annealing_epochs": 0}, "model.init_args.annealing_epochs"),
    ],
)
def test_bad_optimisation_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        LFDNNModule(audio_dim=5, vision_dim=20, **kwargs)


def test_a_prefix_matching_nothing_is_an_error():
    model = LFDNNModule(audio_dim=5, vision_dim=20, param_groups=[{"name": "a", "prefixes": ["net.audo_net"]}])
    with pytest.raises(ConfigError, match="'net.audo_net' matches no trainable parameter"):
        model.parameter_groups()


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedules_are_the_transformers_ones_and_lrs_are_logged_per_group(kind, tmp_path):
    model = _lfdnn(
        lr=1e-2,
        scheduler=kind,
        warmup_ratio=0.25,
        param_groups=[{"name": "audio", "prefixes": ["net.audio_net"], "lr": 2e-2}],
    )
    seen: list[tuple[float, float]] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            metrics = trainer.callback_metrics
            seen.append((float(metrics["lr/default"]), float(metrics["lr/audio"])))

    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[Record()], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=make_batches(list(range(N)), 2))
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    make = {
        "linear": transformers.get_linear_schedule_with_warmup,
        "cosine": transformers.get_cosine_schedule_with_warmup,
        "constant": lambda opt, w, t: transformers.get_constant_schedule_with_warmup(opt, w),
    }[kind]
    reference = make(optimizer, 2, 10)  # 10 steps, warm-up 25% -> 2 steps
    factors = []
    for _ in range(10):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert [d for d, _ in seen] == pytest.approx([1e-2 * f for f in factors], rel=1e-6, abs=1e-9)
    assert [a for _, a in seen] == pytest.approx([2e-2 * f for f in factors], rel=1e-6, abs=1e-9)


def test_cosine_annealing_steps_once_per_epoch_with_its_period(tmp_path):
    """The released-code schedule some configs offer (e.g. SKESL's fine-tuning script): torch's
    CosineAnnealingLR, T_max in epochs, periodic after it."""
    model = _lfdnn(lr=1e-2, scheduler="cosine_annealing", annealing_epochs=2)
    seen: list[float] = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[Record()], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=make_batches(list(range(N)), 2))
    # 1e-2 * (1 + cos(pi * epoch / 2)) / 2, back up after T_max
    assert seen == pytest.approx([1e-2, 5e-3, 0.0, 5e-3, 1e-2], abs=1e-9)


# ---------------------------------------------------------------------------------------------- train/eval modes
@pytest.fixture(scope="module")
def saved_tiny_bert(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_bert")
    model = load_model("tiny-bert")
    model.save_pretrained(folder)
    return folder


class ModeProbe(L.Callback):
    """Records, at every training and validation batch, the modules in the wrong mode."""

    def __init__(self) -> None:
        self.train_wrong: list[str] = []
        self.eval_wrong: list[str] = []
        self.frozen_training: list[str] = []
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self.steps += 1
        frozen = {n for n, m in pl_module.named_modules() if getattr(m, "frozen_extractor", False)}
        inside_frozen = lambda n: any(n == f or n.startswith(f + ".") for f in frozen)  # noqa: E731
        for name, module in pl_module.named_modules():
            if inside_frozen(name):
                if module.training:
                    self.frozen_training.append(name)
            elif not module.training:
                self.train_wrong.append(name)

    def on_validation_batch_start(self, trainer, pl_module, *args) -> None:
        self.eval_wrong += [n for n, m in pl_module.named_modules() if m.training]


def test_finetuned_pretrained_encoder_trains_with_dropout_and_evaluates_without(saved_tiny_bert, tmp_path):
    assert not transformers.AutoModel.from_pretrained(saved_tiny_bert).training  # what from_pretrained gives
    model = BertLSTMModule(audio_dim=5, vision_dim=20, text_model=str(saved_tiny_bert), metric_family="mosi")
    probe = ModeProbe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, max_steps=2, callbacks=[probe], limit_val_batches=1, num_sanity_val_steps=1).fit(
            model, train_dataloaders=make_batches(list(range(N)), 4), val_dataloaders=make_batches([0, 1], 2)
        )
    assert probe.steps == 2 and probe.train_wrong == [] and probe.eval_wrong == []
    assert not [w for w in caught if "in eval mode at the start of training" in str(w.message)]


@pytest.mark.filterwarnings(r"ignore:Found \d+ module\(s\) in eval mode")  # intended: the frozen encoder
def test_frozen_encoder_stays_in_eval_mode_while_the_rest_trains(saved_tiny_bert, tmp_path):
    model = BertLSTMModule(
        audio_dim=5, vision_dim=20, text_model=str(saved_tiny_bert), finetune_text=False, metric_family="mosi"
    )
    model.train()  # even an explicit train() keeps the frozen extractor in eval mode
    assert not model.net.text_encoder.model.training and model.net.head.training
    probe = ModeProbe()
    _trainer(tmp_path, max_steps=2, callbacks=[probe], limit_val_batches=1).fit(
        model, train_dataloaders=make_batches(list(range(N)), 4), val_dataloaders=make_batches([0, 1], 2)
    )
    assert probe.steps == 2 and probe.train_wrong == [] and probe.frozen_training == [] and probe.eval_wrong == []
    assert "encoder" not in {g["name"] for g in model.parameter_groups()}  # no trainable encoder weights


# ---------------------------------------------------------------------------------------------- losses, labels
def test_train_loss_epoch_is_the_sample_weighted_mean(tmp_path):
    model = _lfdnn(dropout=0.0)
    losses: list[tuple[float, int]] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append((float(outputs["loss"]), len(batch)))

    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[Record()], limit_val_batches=0)
    trainer.fit(model, train_dataloaders=make_batches(list(range(N)), 4))  # batches of 4, 4, 2
    expected = sum(v * n for v, n in losses) / sum(n for _, n in losses)
    assert float(trainer.callback_metrics["train/loss_epoch"]) == pytest.approx(expected, rel=1e-6)
    assert "train/loss" in trainer.callback_metrics


def test_unlabeled_batches_evaluate_and_predict_without_labels(tmp_path):
    model = _lfdnn()
    trainer = _trainer(tmp_path)
    result = trainer.validate(model, dataloaders=make_batches(list(range(N)), 4, labeled=False), verbose=False)[0]
    assert result == {}  # nothing to score, nothing logged, no crash
    preds = trainer.predict(model, dataloaders=make_batches(list(range(N)), 4, labeled=False))
    assert all(set(p) == {"ids", "score"} for p in preds) and sum(len(p["ids"]) for p in preds) == N
    labeled = trainer.predict(model, dataloaders=make_batches(list(range(N)), 4))
    assert all(set(p) == {"ids", "score", "label"} for p in labeled)
    scored = trainer.test(model, dataloaders=make_batches(list(range(N)), 4), verbose=False)[0]
    assert {"test/loss", "test/mae", "test/corr"} <= set(scored)
    with pytest.raises(DataError, match="this batch has no labels 'M'.*training needs labeled data"):
        _trainer(tmp_path, max_steps=1).fit(model, train_dataloaders=make_batches(list(range(N)), 4, labeled=False))


DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch, lightning as L
    sys.path.insert(0, sys.argv[2])
    from test_models_base import _lfdnn, make_batches

    ROWS = {0: [0, 1, 2], 1: [3, 4, 5, 6, 7, 8, 9]}  # uneven shards: 3 and 7 samples

    class Shards(L.LightningDataModule):
        def val_dataloader(self):
            return make_batches(ROWS[self.trainer.global_rank], 4)

    # ddp_fork: both ranks are forked from this script (one interpreter start and one set of imports instead of
    # two); `msa fit --trainer.strategy=ddp`'s launcher is tested in tests/test_training.py
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    result = trainer.validate(_lfdnn(), datamodule=Shards(), verbose=False)[0]
    if trainer.global_rank == 0:
        json.dump(result, open(sys.argv[1], "w"))
""")


def test_val_loss_under_ddp_with_uneven_shards_is_the_mean_over_all_samples(tmp_path):
    script = tmp_path / "ddp_val.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ddp.json"), str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    single = _trainer(tmp_path).validate(_lfdnn(), dataloaders=make_batches(list(range(N)), 4), verbose=False)[0]
    assert ddp["val/loss"] == pytest.approx(single["val/loss"], rel=1e-6)
    assert ddp["val/mae"] == pytest.approx(single["val/mae"], rel=1e-6)
    # what the old logging gave (mean of the two ranks' means) differs from it on these shards
    model = _lfdnn().eval()
    with torch.no_grad():
        per_rank = [
            torch.cat([(model(b).M - b.labels["M"]).abs() for b in make_batches(rows, 4)]).mean()
            for rows in ([0, 1, 2], list(range(3, N)))
        ]
    assert abs(float(sum(per_rank)) / 2 - single["val/loss"]) > 1e-3


# ---------------------------------------------------------------------------------------------- data facts
def test_data_shaped_args_come_from_the_data(synthetic_sims, cache_dir, tmp_path):
    dm = SIMSDataModule(str(synthetic_sims), batch_size=16, cache_dir=str(cache_dir))
    model = SelfMMModule(
        text_model="tiny-bert",
        audio_hidden=4,
        vision_hidden=4,
        audio_out=4,
        vision_out=4,
        text_head_dim=4,
        audio_head_dim=4,
        vision_head_dim=4,
        fusion_dim=8,
    )
    assert model.net is None  # built at setup, from the data
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    facts = dm.data_facts()
    assert (model.hparams.audio_dim, model.hparams.vision_dim) == (facts.audio_dim, facts.vision_dim)
    assert model.ulgm.bound == facts.label_bound == 1.0 and model.metric_family == "sims"
    assert model.ulgm.num_samples == facts.num_train_samples
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    assert SelfMMModule.load_from_checkpoint(ckpt).net.audio_rnn.rnn.input_size == facts.audio_dim


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"audio_dim": 7, "vision_dim": 20},
            r"model.init_args.audio_dim=7 does not match the data: "
            r"MOSIDataModule \(data file .*\) has audio features of size 5",
        ),
        ({"audio_dim": 5, "vision_dim": 20, "metric_family": "sims"}, r"metric_family='sims' does not match the data"),
    ],
)
def test_settings_that_conflict_with_the_data_name_both_values(kwargs, message, synthetic_mosi, cache_dir, tmp_path):
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=16, cache_dir=str(cache_dir))
    with pytest.raises(ConfigError, match=message):
        _trainer(tmp_path).validate(LFDNNModule(**kwargs), datamodule=dm)


@pytest.fixture
def msa_fit(synthetic_mosi, cache_dir, tmp_path, monkeypatch, capsys):
    """``msa fit`` of the shipped LF-DNN config on the synthetic file, in this process through the command's
    entry point (``main``: its exit status and its one-line ``msa: error:`` boundary) instead of a subprocess
    (seconds of imports each; real ``msa fit`` processes: tests/test_resume.py, tests/test_cli_runs.py)."""
    from types import SimpleNamespace

    from msa_lightning.cli import main

    monkeypatch.delenv("MSA_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(
                [
                    "fit",
                    "--config",
                    str(REPO / "configs/baselines/lf_dnn_mosi.yaml"),
                    f"--data.init_args.path={synthetic_mosi}",
                    f"--data.init_args.cache_dir={cache_dir}",
                    "--data.init_args.num_workers=0",
                    "--trainer.max_epochs=1",
                    "--trainer.accelerator=cpu",
                    "--trainer.enable_progress_bar=false",
                    f"--trainer.default_root_dir={tmp_path}",
                    *args,
                ]
            )
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=exit_.value.code or 0, stdout=out, stderr=err)

    return run


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--model.init_args.audio_dim=7", r"model\.init_args\.audio_dim=7 .* 5 "),
        ("--model.init_args.lr=0", r"model\.init_args\.lr must be a positive number, got 0"),
        (
            "--model.init_args.param_groups=[{name: a, prefixes: [net.audo_net]}]",
            r"model\.init_args\.param_groups: prefix 'net\.audo_net' matches no trainable parameter",
        ),
    ],
    ids=["conflicting_size", "zero_lr", "unknown_prefix"],
)
def test_msa_fit_with_bad_model_settings_prints_one_line(arg, message, msa_fit):
    proc = msa_fit(arg)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("msa: error:") and re.search(message, last + " "), last


def test_msa_fit_logs_each_groups_lr_and_the_epoch_loss(msa_fit, tmp_path):
    proc = msa_fit(
        "--trainer.log_every_n_steps=1",
        "--model.init_args.param_groups=[{name: audio, prefixes: [net.audio_net], lr: 0.005}]",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    logs = list(tmp_path.rglob("metrics.csv"))
    assert logs, f"no metrics.csv under {tmp_path}"
    header = logs[0].read_text().splitlines()[0].split(",")
    assert {"lr/default", "lr/audio", "train/loss", "train/loss_epoch", "val/loss", "val/mae"} <= set(header)
    rows = [dict(zip(header, line.split(","))) for line in logs[0].read_text().splitlines()[1:]]
    audio_lrs = [float(r["lr/audio"]) for r in rows if r.get("lr/audio")]
    assert audio_lrs and audio_lrs == pytest.approx([0.005] * len(audio_lrs), rel=1e-6)


def test_without_data_facts_a_missing_size_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="model.init_args.audio_dim, model.init_args.vision_dim not set"):
        _trainer(tmp_path).validate(LFDNNModule(metric_family="mosi"), dataloaders=make_batches([0, 1], 2))
    with pytest.raises(ConfigError, match="network is built from the data at setup"):
        LFDNNModule()(next(iter(make_batches([0, 1], 2))))


# ---------------------------------------------------------------------------------------------- pretrained loader
def test_missing_model_fails_once_without_hub_retries(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def loader(name, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        raise OSError(f"{name} not found")

    monkeypatch.setattr(pretrained, "hub_reachable", lambda: False)  # a machine without network
    with pytest.raises(PretrainedNotAvailable, match="no-such-org/no-such-bert.*cannot be reached"):
        pretrained._from_pretrained(loader, "model", "no-such-org/no-such-bert")
    assert calls == [True]  # the local cache only: the hub download path is never tried
    calls.clear()
    monkeypatch.setattr(pretrained, "hub_reachable", lambda: True)  # network up, the model does not exist
    with pytest.raises(PretrainedNotAvailable, match="did not provide it"):
        pretrained._from_pretrained(loader, "model", "no-such-org/no-such-bert")
    assert calls == [True, False]  # one hub attempt, no retry


def test_missing_model_by_name_raises_the_clear_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    pretrained.hub_reachable.cache_clear()
    with pytest.raises(PretrainedNotAvailable, match="'no-such-org/no-such-bert' is not available"):
        load_model("no-such-org/no-such-bert")
    pretrained.hub_reachable.cache_clear()


def test_swrm_builds_its_net_from_hparams_and_keeps_ulgm_off_the_net():
    model = SWRMModule(text_model="tiny-bert", audio_dim=5, vision_dim=20, context_vision_hidden=3)
    assert model.net.context_v.rnn.hidden_size == 3 and model.hparams.mask_token_id is not None
    assert not any(n.startswith("net.") for n, _ in model.ulgm.named_buffers(prefix="ulgm"))
    assert {n.split(".")[0] for n, _ in model.state_dict().items()} == {"net", "ulgm"}
