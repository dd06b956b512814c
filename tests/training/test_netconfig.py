"""One config dataclass per paper network (``papers/<name>/config.py``): each network hyper-parameter is declared
once, reaches LightningCLI as a flat ``model.init_args.<name>`` key with the dataclass default, is recorded whole
in ``hparams``, and checkpoints of release 0.1 (flat ``hyper_parameters``) still load."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, asdict, fields

import lightning as L
import pytest
import torch
import yaml
from conftest import assert_one_line_error, run_msa
from lightning.pytorch.cli import LightningArgumentParser

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ConfigError
from msa_lightning.papers.baselines.config import BertLSTMConfig, LFDNNConfig, MAGBERTConfig, TFNConfig
from msa_lightning.papers.fmlmsn.config import FmlMSNMetaConfig, FmlMSNStageConfig
from msa_lightning.papers.hybrid_shift.config import HybridShiftConfig
from msa_lightning.papers.registry import MODELS
from msa_lightning.papers.skesl.config import SKESLConfig
from msa_lightning.papers.swrm.config import SelfMMConfig, SWRMConfig
from msa_lightning.papers.twostep.config import TwoStepConfig
from msa_lightning.training.module import MSARegressionModule

#: the network config of every model of the registry
CONFIGS = {
    "LFDNNModule": LFDNNConfig,
    "TFNModule": TFNConfig,
    "BertLSTMModule": BertLSTMConfig,
    "MAGBERTModule": MAGBERTConfig,
    "SelfMMModule": SelfMMConfig,
    "SWRMModule": SWRMConfig,
    "HybridShiftModule": HybridShiftConfig,
    "SKESLPretrain": SKESLConfig,
    "SKESLModule": SKESLConfig,
    "FmlMSNStage": FmlMSNStageConfig,
    "FmlMSNMeta": FmlMSNMetaConfig,
    "TwoStepMSA": TwoStepConfig,
}


def _default(field):
    return field.default_factory() if field.default is MISSING else field.default


def test_every_model_has_a_config():
    assert sorted(CONFIGS) == sorted(model.__name__ for model in MODELS)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_network_arguments_are_declared_once(model):
    """Every config field is a flat init_arg of LightningCLI's parser (subclass mode, as ``msa`` builds it) with
    the dataclass's default, and the module's own signature declares none of them."""
    config = CONFIGS[model.__name__]
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MSARegressionModule, "model", required=True)
    init_args = parser.parse_args([f"--model={model.__name__}"]).model.init_args
    for field in fields(config):
        assert field.name in init_args, f"{model.__name__}: {field.name} is not a model.init_args key"
        assert init_args[field.name] == _default(field), field.name
    own = set(inspect.signature(model.__init__).parameters)
    assert not own & {f.name for f in fields(config)}, f"{model.__name__} declares config fields again"


def test_hparams_hold_the_whole_config_and_unknown_keys_name_the_class():
    """A module built in Python records every field (defaults included), so its checkpoint can rebuild it;
    a misspelt key is a ConfigError naming the key and the config class, not a TypeError."""
    from msa_lightning.papers.baselines.module import TFNModule
    from msa_lightning.papers.fmlmsn.module import FmlMSNStage

    model = TFNModule(audio_dim=5, vision_dim=7)
    assert {k: model.hparams[k] for k in asdict(model.config)} == asdict(TFNConfig(audio_dim=5, vision_dim=7))
    assert model.net.config is model.config and model.hparams.lr == 1e-3
    with pytest.raises(
        ConfigError, match=r"model.init_args.droput: TFNConfig has no field 'droput' \(did you mean 'dropout'"
    ):
        TFNModule(droput=0.1)
    with pytest.raises(ConfigError, match=r"model.init_args.pair: expected one of \['AT', 'AV', 'VT'\], found 'XY'"):
        FmlMSNStage(pair="XY")
    stage = FmlMSNStage(pair="AV")  # built at setup, from the data's sizes: config and hparams move together
    stage.set_hparams(audio_dim=5)
    assert stage.config.audio_dim == stage.hparams.audio_dim == 5 and stage.config.pair == "AV"


# ---------------------------------------------------------------------------------------------- release 0.1 checkpoints
#: ``hyper_parameters`` as release 0.1 wrote them: HybridShift built in Python (every argument its signature
#: declared), TFN trained by ``msa fit`` (LightningCLI adds ``_class_path`` and ``_instantiator``)
OLD_HPARAMS = {
    "HybridShiftModule": {
        "audio_dim": 5, "vision_dim": 7, "text_model": "tiny-bert", "finetune_text": True, "tiny_hidden_size": 32,
        "tiny_num_layers": 2, "insert_layer": 2, "rnn_variant": "sLSTM", "audio_hidden": 6, "vision_hidden": 8,
        "rnn_layers": 1, "modalities": ["text", "audio", "vision"], "use_msg_t": True, "use_msg_a": True,
        "use_msg_v": True, "use_mba": True, "use_shift_huber": True, "mba_crossed": True, "mu_init": 0.5,
        "msg_layer_norm": False, "mba_dim": 12, "mba_max_len": 10, "text_kernel": 3, "nonverbal_kernel": 3,
        "fusion_dim": 16, "dropout": 0.0, "nonverbal_alignment": "tokens", "frame_offset": 0, "pool": "auto",
        "delta": 1.0, "alpha": 0.1, "beta": 0.1, "gamma": 0.1, "lr": 2e-05, "weight_decay": 0.01, "encoder_lr": None,
        "encoder_weight_decay": 0.01, "param_groups": None, "optimizer": "adamw", "scheduler": "linear",
        "warmup_ratio": 0.1, "metric_family": "mosi",
    },
    "TFNModule": {
        "_class_path": "msa_lightning.papers.baselines.module.TFNModule", "audio_dim": 5, "vision_dim": 7,
        "text_encoder": "bag", "text_hidden": 4, "audio_hidden": 3, "vision_hidden": 3, "post_fusion_dim": 64,
        "dropout": 0.2, "lr": 0.01, "weight_decay": 0.0, "encoder_lr": None, "encoder_weight_decay": 0.0,
        "param_groups": None, "optimizer": "adam", "scheduler": "none", "warmup_ratio": 0.0, "annealing_epochs": 20,
        "metric_family": "auto", "_instantiator": "lightning.pytorch.cli.instantiate_module",
    },
}  # fmt: skip


def _batch(b: int = 3, length: int = 10) -> MSABatch:
    g = torch.Generator().manual_seed(0)
    mask = torch.arange(length)[None, :] < torch.tensor([10, 6, 3])[:, None]
    ids = torch.randint(1000, 5000, (b, length), generator=g) * mask
    return MSABatch(
        text_ids=ids,
        text_mask=mask.long(),
        text_segment=torch.zeros_like(ids),
        audio=torch.randn(b, length, 5, generator=g),
        audio_lengths=mask.sum(1),
        vision=torch.randn(b, length, 7, generator=g),
        vision_lengths=mask.sum(1),
        labels={"M": torch.randn(b, generator=g)},
        index=torch.arange(b),
        ids=[f"u{i}" for i in range(b)],
        raw_text=["w"] * b,
    )


@pytest.mark.parametrize("name", sorted(OLD_HPARAMS))
def test_release_0_1_checkpoints_load(name, tmp_path):
    """A checkpoint whose hyper-parameters are 0.1's flat dict rebuilds the same network (its weights load
    strictly) and gives the same outputs."""
    from msa_lightning.papers import registry

    model_class = getattr(registry, name)
    old = OLD_HPARAMS[name]
    torch.manual_seed(0)
    source = model_class(**{k: v for k, v in old.items() if not k.startswith("_")}).eval()
    path = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": source.state_dict(), "hyper_parameters": old, "pytorch-lightning_version": L.__version__}, path
    )
    loaded = model_class.load_from_checkpoint(path, map_location="cpu").eval()
    assert loaded.config == source.config
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).M, source(batch).M, rtol=0, atol=0)


def test_a_bad_network_setting_is_one_error_line(synthetic_mosi, cache_dir, tmp_path):
    """A value the config rejects, from a user's YAML, ends ``msa fit`` with one line naming the key."""
    config = tmp_path / "selfmm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"class_path": "SelfMMModule", "init_args": {"text_model": "tiny-bert", "head_layers": 3}},
                "data": {
                    "class_path": "MOSIDataModule",
                    "init_args": {"path": str(synthetic_mosi), "cache_dir": str(cache_dir)},
                },
            }
        )
    )
    proc = run_msa("fit", "--config", config, "--trainer.max_epochs=1", cwd=tmp_path)
    line = assert_one_line_error(proc, "model.init_args.head_layers", "found 3")
    assert line == (
        "msa: error: model.init_args.head_layers: expected 1 (the papers' equations) or 2 (Self-MM's code), found 3"
    )


@pytest.mark.parametrize(
    "config_class, field",
    [(TFNConfig, "dropout"), (SKESLConfig, "head_dropout"), (SWRMConfig, "fusion_dropout")],
)
def test_a_dropout_outside_zero_one_is_a_config_error_of_every_network(config_class, field):
    """The shared check of the NetConfig base: every ``*dropout`` field of every paper's config is a probability
    (torch's own ValueError surfaced as a traceback through LightningCLI)."""
    with pytest.raises(
        ConfigError, match=rf"model\.init_args\.{field}: expected a dropout probability in \[0, 1\), found 1\.5"
    ):
        config_class(**{field: 1.5})
