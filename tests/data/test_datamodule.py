"""DataModules over synthetic files: batches, options, re-tokenisation, folders, errors, workers,
and a guard that the synthetic generator plants a learnable signal in every modality."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from msa_lightning.batch import MSABatch
from msa_lightning.data import cache as cache_mod
from msa_lightning.data.base import DataFacts
from msa_lightning.data.datamodule import MOSIDataModule, SIMSDataModule
from msa_lightning.data.reader import FeatureFileError
from msa_lightning.data.sampling import EpochBatchSampler, ResumableDataLoader, batch_sizes
from msa_lightning.data.specs import get_spec
from msa_lightning.data.synthetic import _NEGATIVE, _POSITIVE, make_synthetic
from msa_lightning.errors import ConfigError, DataError

MOSI, SIMS = get_spec("mosi"), get_spec("sims")


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path, monkeypatch):
    """Tests never write to the user's default cache folder."""
    monkeypatch.setattr(cache_mod, "DEFAULT_CACHE_DIR", tmp_path / "default_cache")


def whole_split(dm, split: str) -> MSABatch:
    ds = dm.datasets[split]
    return ds.__getitems__(list(range(len(ds))))


def test_mosi_batches(synthetic_mosi, cache_dir):
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=8, eval_batch_size=5, cache_dir=str(cache_dir))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.metric_family == "mosi" and dm.num_train_samples() == 64
    loader = dm.train_dataloader()
    batches = list(loader)
    assert [len(b) for b in batches] == [8] * 8
    b = batches[0]
    assert isinstance(b, MSABatch)
    width = int(b.text_mask.sum(1).max())  # token padding trimmed to the batch's longest text (trim_text)
    for t in (b.text_ids, b.text_mask, b.text_segment):
        assert t.shape == (8, width) and width <= MOSI.text_len and t.dtype == torch.long
    assert b.audio.ndim == 3 and b.audio.shape[0] == 8 and b.audio.shape[2] == MOSI.audio_dim
    assert b.vision.shape[0] == 8 and b.vision.shape[2] == MOSI.vision_dim
    assert b.audio.shape[1] == int(b.audio_lengths.max()) <= MOSI.audio_len  # trimmed to the batch
    assert b.vision.shape[1] == int(b.vision_lengths.max()) <= MOSI.vision_len
    assert b.audio.dtype == torch.float32 and b.audio_lengths.dtype == torch.long
    assert set(b.labels) == {"M"} and b.labels["M"].shape == (8,) and b.labels["M"].dtype == torch.float32
    assert b.index.dtype == torch.long and len(b.ids) == 8 and all("$_$" not in i for i in b.ids)
    assert len(b.raw_text) == 8 and b.text_feats is None and b.extras == {}
    # shuffled training order covers every sample once
    assert sorted(torch.cat([x.index for x in batches]).tolist()) == list(range(64))
    # padding after each sample's length is zero
    pad = torch.arange(b.audio.shape[1])[None, :] >= b.audio_lengths[:, None]
    assert (b.audio[pad] == 0).all()

    val = list(dm.val_dataloader())
    assert [len(x) for x in val] == [5, 5, 1]  # 11 validation samples, eval_batch_size 5
    assert torch.cat([x.index for x in val]).tolist() == list(range(11))  # not shuffled
    assert [len(x) for x in dm.test_dataloader()] == [5] * 6 + [4]
    assert len(list(dm.predict_dataloader())) == 7


def test_batch_matches_the_file(synthetic_mosi, cache_dir):
    import pickle

    with open(synthetic_mosi, "rb") as f:
        raw = pickle.load(f)["test"]
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=4, cache_dir=str(cache_dir), trim_text=False)  # full width
    dm.setup()
    b = dm.datasets["test"].__getitems__([5, 2, 9])  # unsorted indices keep their order
    assert b.index.tolist() == [5, 2, 9]
    np.testing.assert_array_equal(b.labels["M"].numpy(), raw["regression_labels"][[5, 2, 9]])
    np.testing.assert_array_equal(b.text_bert.numpy(), raw["text_bert"][[5, 2, 9]].astype(np.int64))
    t = b.audio.shape[1]
    np.testing.assert_array_equal(b.audio.numpy(), raw["audio"][[5, 2, 9], :t])
    assert b.raw_text == [raw["raw_text"][i] for i in (5, 2, 9)]


def test_sims_batches(synthetic_sims, cache_dir):
    dm = SIMSDataModule(str(synthetic_sims), batch_size=6, cache_dir=str(cache_dir), trim_text=False)
    dm.setup()
    assert dm.metric_family == "sims"
    b = next(iter(dm.train_dataloader()))
    assert set(b.labels) == {"M", "T", "A", "V"}
    assert all(v.shape == (6,) for v in b.labels.values())
    assert all(float(v.abs().max()) <= 1.0 for v in b.labels.values())
    assert b.text_ids.shape == (6, SIMS.text_len)
    assert b.audio.shape[2] == SIMS.audio_dim and b.vision.shape[2] == SIMS.vision_dim
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        SIMSDataModule(str(synthetic_sims), version=3)
    assert SIMSDataModule(str(synthetic_sims), version=2).metric_family == "simsv2"


def test_modality_subset(synthetic_mosi, cache_dir):
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=8, modalities=["text", "vision"], cache_dir=str(cache_dir))
    dm.setup()
    b = next(iter(dm.val_dataloader()))
    assert b.audio.shape == (8, 1, MOSI.audio_dim) and (b.audio == 0).all()
    assert (b.audio_lengths == 1).all()
    assert b.vision.shape[1] > 1 and b.vision.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown modalities"):
        MOSIDataModule(str(synthetic_mosi), modalities=["text", "video"], cache_dir=str(cache_dir)).setup()


def test_normalize(synthetic_mosi, cache_dir):
    dm = MOSIDataModule(str(synthetic_mosi), normalize=True, cache_dir=str(cache_dir))
    dm.setup()
    for split in ("train", "test"):
        b = whole_split(dm, split)
        for key in ("audio", "vision"):
            x, lengths = getattr(b, key).double(), getattr(b, f"{key}_lengths")
            valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
            frames = x[valid]
            assert (x[~valid] == 0).all(), f"{split}/{key}: padding changed"
            if split == "train":  # statistics fitted on the train split's valid frames
                assert frames.mean(0).abs().max() < 1e-4, key
                assert (frames.std(0, unbiased=False) - 1).abs().max() < 1e-3, key
    raw = MOSIDataModule(str(synthetic_mosi), cache_dir=str(cache_dir))
    raw.setup()
    assert not torch.allclose(whole_split(raw, "train").audio, whole_split(dm, "train").audio)


def test_retokenisation(synthetic_mosi, tmp_path, monkeypatch):
    from msa_lightning.nn import pretrained

    cache_dir = tmp_path / "cache"
    dm = MOSIDataModule(
        str(synthetic_mosi),
        batch_size=4,
        tokenizer="tiny-bert",
        text_max_length=24,
        cache_dir=str(cache_dir),
        trim_text=False,
    )  # full width: compared with the tokenizer
    dm.setup()
    b = dm.datasets["valid"].__getitems__([0, 1, 2, 3])
    assert b.text_ids.shape == (4, 24)
    stored = dm.splits["valid"].text_bert[[0, 1, 2, 3], 0, :24]
    assert not np.array_equal(b.text_ids.numpy(), stored)  # not the file's BERT ids
    enc = pretrained.load_tokenizer("tiny-bert")(b.raw_text, max_length=24, padding="max_length", truncation=True)
    assert b.text_ids.tolist() == enc["input_ids"]
    assert b.text_mask.tolist() == enc["attention_mask"]
    assert list((cache_dir / "tokens").glob("*/ids.npy"))  # written to the store

    def no_tokenizer(name):
        raise AssertionError("the second setup must read the token cache")

    monkeypatch.setattr(pretrained, "load_tokenizer", no_tokenizer)
    again = MOSIDataModule(
        str(synthetic_mosi),
        batch_size=4,
        tokenizer="tiny-bert",
        text_max_length=24,
        cache_dir=str(cache_dir),
        trim_text=False,
    )
    again.setup()
    assert again.datasets["valid"].__getitems__([0, 1, 2, 3]).text_ids.tolist() == b.text_ids.tolist()


def test_folder_path_picks_standard_files(synthetic_mosi, synthetic_mosi_aligned, synthetic_sims, tmp_path):
    folder = tmp_path / "MOSI"
    folder.mkdir()
    shutil.copy(synthetic_mosi, folder / "unaligned_50.pkl")
    shutil.copy(synthetic_mosi_aligned, folder / "aligned_50.pkl")
    cache_dir = str(tmp_path / "cache")
    dm = MOSIDataModule(str(folder), batch_size=4, cache_dir=cache_dir)
    assert dm.feature_file == folder / "unaligned_50.pkl"
    aligned = MOSIDataModule(str(folder), aligned=True, batch_size=4, cache_dir=cache_dir)
    assert aligned.feature_file == folder / "aligned_50.pkl"
    aligned.setup()
    assert aligned.aligned_file
    b = next(iter(aligned.val_dataloader()))
    assert b.audio.shape[1] == b.vision.shape[1] == MOSI.text_len  # word-aligned: never trimmed
    dm.setup()
    assert not dm.aligned_file

    sims_folder = tmp_path / "SIMS"
    sims_folder.mkdir()
    shutil.copy(synthetic_sims, sims_folder / "unaligned_39.pkl")
    assert SIMSDataModule(str(sims_folder)).feature_file == sims_folder / "unaligned_39.pkl"


def test_missing_file_message(tmp_path):
    dm = MOSIDataModule(str(tmp_path / "nowhere.pkl"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FeatureFileError) as info:
        dm.prepare_data()
    msg = str(info.value)
    assert str(tmp_path / "nowhere.pkl") in msg and "feature file not found" in msg and "dataset='mosi'" in msg
    (tmp_path / "MOSI").mkdir()  # a folder without the standard file name
    with pytest.raises(FeatureFileError, match=r"MOSI/unaligned_50\.pkl: feature file not found"):
        MOSIDataModule(str(tmp_path / "MOSI"), cache_dir=str(tmp_path / "cache")).setup()


def test_use_cache_false_matches_cache(synthetic_mosi, cache_dir):
    a = MOSIDataModule(str(synthetic_mosi), cache_dir=str(cache_dir))
    b = MOSIDataModule(str(synthetic_mosi), use_cache=False)
    a.setup()
    b.setup()
    assert isinstance(a.splits["train"].audio, np.memmap) and not isinstance(b.splits["train"].audio, np.memmap)
    x, y = whole_split(a, "test"), whole_split(b, "test")
    assert torch.equal(x.audio, y.audio) and torch.equal(x.text_ids, y.text_ids)
    assert torch.equal(x.labels["M"], y.labels["M"])


def test_two_workers_over_the_memory_map(synthetic_mosi, cache_dir):
    dm = MOSIDataModule(
        str(synthetic_mosi), batch_size=4, eval_batch_size=8, num_workers=2, cache_dir=str(cache_dir), trim_text=False
    )  # batches of one width, to compare with the whole split
    dm.setup()
    assert isinstance(dm.datasets["test"].arrays.audio, np.memmap)
    loader = dm.test_dataloader()
    assert loader.num_workers == 2
    got = list(loader)
    want = whole_split(dm, "test")
    assert torch.cat([b.index for b in got]).tolist() == list(range(34))
    assert torch.equal(torch.cat([b.labels["M"] for b in got]), want.labels["M"])
    assert torch.equal(torch.cat([b.text_ids for b in got]), want.text_ids)
    first = got[0]
    assert torch.equal(first.audio, dm.datasets["test"].__getitems__(list(range(8))).audio)


# --------------------------------------------------------------------------- generator signal
def _frame_means(arrays, key: str) -> np.ndarray:
    x, lengths = np.asarray(getattr(arrays, key), dtype=np.float64), getattr(arrays, f"{key}_lengths")
    valid = np.arange(x.shape[1])[None, :, None] < lengths[:, None, None]
    return (x * valid).sum(1) / lengths[:, None]


def _word_score(arrays) -> np.ndarray:
    return np.array(
        [
            [sum(w in _POSITIVE for w in t.lower().split()) - sum(w in _NEGATIVE for w in t.lower().split())]
            for t in arrays.raw_text
        ],
        dtype=np.float64,
    )


def _ridge_corr(x_train, y_train, x_test, y_test, lam: float = 10.0) -> float:
    """Closed-form ridge regression (with bias) fitted on train; Pearson r on test."""
    a = np.c_[x_train, np.ones(len(x_train))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y_train)
    return float(np.corrcoef(np.c_[x_test, np.ones(len(x_test))] @ w, y_test)[0, 1])


FEATURES = {
    "text": _word_score,
    "audio": lambda s: _frame_means(s, "audio"),
    "vision": lambda s: _frame_means(s, "vision"),
}


def test_synthetic_mosi_has_signal_per_modality(tmp_path):
    """M is the mean of three independent latents plus noise, so one modality alone can reach at
    most r = 1/sqrt(3) ~ 0.58 with M; all three together nearly determine it."""
    path = make_synthetic("mosi", tmp_path / "mosi.pkl", size_factor=0.25, seed=0)
    dm = MOSIDataModule(str(path), cache_dir=str(tmp_path / "cache"))
    dm.setup()
    train, test = dm.splits["train"], dm.splits["test"]
    for name, f in FEATURES.items():
        r = _ridge_corr(f(train), train.labels["M"], f(test), test.labels["M"])
        assert r > 0.35, f"{name}: r = {r:.3f}"
    fused = lambda s: np.concatenate([f(s) for f in FEATURES.values()], axis=1)  # noqa: E731
    r = _ridge_corr(fused(train), train.labels["M"], fused(test), test.labels["M"])
    assert r > 0.9, f"fused: r = {r:.3f}"


def test_synthetic_sims_unimodal_labels_are_learnable(tmp_path):
    """CH-SIMS unimodal labels T/A/V are the latents: each modality predicts its own label."""
    path = make_synthetic("sims", tmp_path / "sims.pkl", size_factor=0.2, seed=1)
    dm = SIMSDataModule(str(path), cache_dir=str(tmp_path / "cache"))
    dm.setup()
    train, test = dm.splits["train"], dm.splits["test"]
    for (name, f), key in zip(FEATURES.items(), "TAV"):
        r = _ridge_corr(f(train), train.labels[key], f(test), test.labels[key])
        assert r > 0.9, f"{name} -> {key}: r = {r:.3f}"
        r_m = _ridge_corr(f(train), train.labels["M"], f(test), test.labels["M"])
        assert r_m > 0.2, f"{name} -> M: r = {r_m:.3f}"


# --------------------------------------------------------------------------- training order and resume


def test_batch_sizes_never_end_on_one_sample():
    assert batch_sizes(65, 32) == [32, 33]  # the trailing sample joins the previous batch
    assert batch_sizes(64, 32) == [32, 32] and batch_sizes(66, 32) == [32, 32, 2] and batch_sizes(33, 32) == [33]
    assert batch_sizes(16326, 25)[-1] == 26  # MOSEI at batch 25
    assert batch_sizes(33, 32, num_batches=2) == [31, 2]  # a smaller DDP shard matching a 2-batch rank


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_shards_are_disjoint_complete_and_in_step(world):
    for n in range(world * 2, 140, 7):
        for bs in (3, 5, 8, 32):
            samplers = [EpochBatchSampler(n, bs, seed=7, num_replicas=world, rank=r) for r in range(world)]
            for s in samplers:
                s.set_epoch(2)
            per_rank = [list(s) for s in samplers]
            assert len({len(b) for b in per_rank}) == 1 and all(len(b) == len(samplers[0]) for b in per_rank)
            rows = [i for batches in per_rank for batch in batches for i in batch]
            assert sorted(rows) == list(range(n)), (n, bs, world)  # disjoint, nothing dropped or repeated
            assert all(len(batch) >= 2 for batches in per_rank for batch in batches), (n, bs, world)
            assert all(len(batch) <= bs + 1 for batches in per_rank for batch in batches)


def test_order_depends_only_on_seed_and_epoch():
    a, b = EpochBatchSampler(65, 32, seed=3), EpochBatchSampler(65, 32, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    torch.manual_seed(0)
    np.random.seed(0)
    first = list(a)
    torch.manual_seed(1)  # the global RNGs do not matter
    np.random.seed(1)
    assert list(b) == first and [len(x) for x in first] == [32, 33]
    b.set_epoch(5)
    assert list(b) != first
    assert list(EpochBatchSampler(65, 32, seed=4)) != list(EpochBatchSampler(65, 32, seed=3))


def _train_loader(path, cache_dir, **kw):
    dm = MOSIDataModule(str(path), batch_size=8, cache_dir=str(cache_dir), shuffle_seed=11, **kw)
    dm.setup()
    return dm.train_dataloader()


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_state_round_trip_resumes_at_the_next_batch(synthetic_mosi, cache_dir, workers):
    loader = _train_loader(synthetic_mosi, cache_dir, num_workers=workers)
    assert isinstance(loader, ResumableDataLoader) and len(loader) == 8  # 64 samples at 8
    loader.sampler.set_epoch(3)
    full = [b.index.tolist() for b in loader]
    it = iter(loader)
    taken = [next(it).index.tolist() for _ in range(3)]
    assert taken == full[:3]
    state = loader.state_dict()
    assert state["epoch"] == 3 and state["batches"] == 3
    del it

    resumed = _train_loader(synthetic_mosi, cache_dir, num_workers=workers)  # a new process's loader
    resumed.load_state_dict(state)
    assert [b.index.tolist() for b in resumed] == full[3:]
    assert resumed.state_dict()["batches"] == 8
    resumed.sampler.set_epoch(4)  # the following epoch is whole again
    assert len([b for b in resumed]) == 8


def test_loader_state_at_epoch_end_starts_the_next_epoch(synthetic_mosi, cache_dir):
    loader = _train_loader(synthetic_mosi, cache_dir)
    loader.sampler.set_epoch(1)
    list(loader)
    state = loader.state_dict()
    loader.sampler.set_epoch(2)
    epoch2 = [b.index.tolist() for b in loader]
    resumed = _train_loader(synthetic_mosi, cache_dir)
    resumed.load_state_dict(state)
    assert resumed.sampler.epoch == 2 and [b.index.tolist() for b in resumed] == epoch2
    bigger = MOSIDataModule(str(synthetic_mosi), batch_size=16, cache_dir=str(cache_dir), shuffle_seed=11)
    bigger.setup()
    with pytest.raises(DataError, match="batch_size expected 8"):
        bigger.train_dataloader().load_state_dict(state)


def test_shuffle_seed_defaults_to_the_global_seed(synthetic_mosi, cache_dir, monkeypatch):
    import lightning as L

    dm = MOSIDataModule(str(synthetic_mosi), batch_size=8, cache_dir=str(cache_dir))
    dm.setup()
    L.seed_everything(123, verbose=False)
    assert dm.train_dataloader().sampler.seed == 123
    L.seed_everything(5, verbose=False)
    assert dm.train_dataloader().sampler.seed == 5
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    assert dm.train_dataloader().sampler.seed == 0


class _Recorder:
    """A tiny LightningModule factory (BatchNorm in training mode: a batch of one would fail)."""

    @staticmethod
    def make(required=None):
        import lightning as L
        from torch import nn

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(MOSI.audio_dim, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
                self.seen, self.fields = [], []

            @property
            def required_inputs(self):
                return required

            def training_step(self, batch, batch_idx):
                self.seen.append((self.current_epoch, batch.index.tolist()))
                self.fields.append(
                    {f for f in ("text_ids", "audio", "vision", "text_feats") if getattr(batch, f) is not None}
                )
                x = batch.audio.sum(1) / batch.audio_lengths[:, None]
                return ((self.net(x).squeeze(-1) - batch.labels["M"]) ** 2).mean()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.01)

        return Tiny()


def _trainer(tmp_path, **kw):
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kw,
    )


@pytest.mark.parametrize("step, workers", [(8, 0), (7, 0), (8, 2)])  # after batch 1 of epoch 1; end of epoch 0
def test_lightning_checkpoint_resumes_at_the_next_batch(synthetic_mosi, cache_dir, tmp_path, step, workers):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def dm():
        return MOSIDataModule(
            str(synthetic_mosi), batch_size=9, cache_dir=str(cache_dir), shuffle_seed=2, num_workers=workers
        )

    whole = _Recorder.make()
    _trainer(tmp_path / "a", max_epochs=3, enable_checkpointing=False).fit(whole, dm())
    assert [len(b) for _, b in whole.seen] == ([9] * 6 + [10]) * 3  # 64 at 9: no batch of one

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=step, save_top_k=-1, filename="{step}")
    first = _Recorder.make()
    _trainer(tmp_path / "b", max_steps=step, callbacks=[ckpt]).fit(first, dm())
    file = tmp_path / "ck" / f"step={step}.ckpt"
    state = torch.load(file, weights_only=False)["loops"]["fit_loop"]["state_dict"]
    assert state["combined_loader"] == [
        {
            "epoch": step // 7 - (step % 7 == 0),
            "batches": step % 7 or 7,
            "seed": 2,
            "num_samples": 64,
            "batch_size": 9,
            "shuffle": True,
        }
    ]
    second = _Recorder.make()
    _trainer(tmp_path / "c", max_epochs=3).fit(second, dm(), ckpt_path=str(file))
    assert first.seen + second.seen == whole.seen


def test_lightning_keeps_the_sampler_under_ddp(synthetic_mosi, cache_dir, tmp_path):
    import lightning as L
    from lightning.pytorch.trainer.states import RunningStage

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    loader = _train_loader(synthetic_mosi, cache_dir)
    assert trainer._data_connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING) is loader


def test_only_the_model_inputs_are_loaded(synthetic_mosi, cache_dir, tmp_path):
    model = _Recorder.make(required={"audio", "audio_lengths"})
    _trainer(tmp_path, max_epochs=1).fit(
        model, MOSIDataModule(str(synthetic_mosi), batch_size=32, cache_dir=str(cache_dir))
    )
    assert model.fields and all(f == {"audio"} for f in model.fields)
    everything = MOSIDataModule(str(synthetic_mosi), batch_size=8, cache_dir=str(cache_dir))
    everything.setup()
    b = next(iter(everything.val_dataloader()))
    assert b.text_ids is not None and b.vision is not None
    chosen = MOSIDataModule(str(synthetic_mosi), batch_size=8, cache_dir=str(cache_dir), inputs=["vision"])
    chosen.setup()
    b = next(iter(chosen.val_dataloader()))
    assert b.vision is not None and b.text_ids is None and b.audio is None and b.vision_lengths is None
    assert len(b) == 8 and b.labels["M"].shape == (8,)
    with pytest.raises(ConfigError, match=r"data.init_args.inputs: unknown fields \['video'\]"):
        MOSIDataModule(str(synthetic_mosi), inputs=["video"])


# --------------------------------------------------------------------------- facts, settings, checks
def test_data_facts_and_train_labels_come_from_the_file(synthetic_mosi, synthetic_sims, cache_dir):
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=8, cache_dir=str(cache_dir))
    assert dm.data_facts() == DataFacts(
        audio_dim=MOSI.audio_dim,
        vision_dim=MOSI.vision_dim,
        label_bound=3.0,
        metric_family="mosi",
        num_train_samples=64,
    )
    batch = next(iter(dm.train_dataloader()))
    np.testing.assert_array_equal(dm.train_labels()[batch.index.numpy()], batch.labels["M"].numpy())
    sims = SIMSDataModule(str(synthetic_sims), cache_dir=str(cache_dir))
    facts = sims.data_facts()
    assert (facts.audio_dim, facts.vision_dim, facts.label_bound, facts.metric_family) == (
        SIMS.audio_dim,
        SIMS.vision_dim,
        1.0,
        "sims",
    )
    assert sims.train_labels("T").shape == (facts.num_train_samples,)
    with pytest.raises(DataError, match=r"split 'train' has no labels 'T' \(it has \['M'\]\)"):
        dm.train_labels("T")


def test_facts_follow_the_file_not_the_spec(tmp_path, synthetic_mosi):
    import pickle

    with open(synthetic_mosi, "rb") as f:
        data = pickle.load(f)
    for split in data.values():  # other acoustic features than the spec's 5-d COVAREP
        split["audio"] = np.concatenate([split["audio"]] * 2, axis=2)
    path = tmp_path / "wide.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    assert MOSIDataModule(str(path), cache_dir=str(tmp_path / "cache")).data_facts().audio_dim == 2 * MOSI.audio_dim


@pytest.mark.parametrize(
    "key, value", [("batch_size", 0), ("batch_size", -4), ("eval_batch_size", 0), ("num_workers", -1)]
)
def test_bad_loader_settings_are_config_errors(synthetic_mosi, key, value):
    with pytest.raises(ConfigError, match=rf"data.init_args.{key}: expected an integer >= \d, found {value}"):
        MOSIDataModule(str(synthetic_mosi), **{key: value})


def test_predict_split(synthetic_mosi, cache_dir):
    dm = MOSIDataModule(str(synthetic_mosi), batch_size=4, predict_split="valid", cache_dir=str(cache_dir))
    dm.setup()
    rows = torch.cat([b.index for b in dm.predict_dataloader()]).tolist()
    assert rows == list(range(11)) and dm.predict_dataloader().dataset is dm.datasets["valid"]
    with pytest.raises(
        ConfigError,
        match=r"data.init_args.predict_split: expected one of \['train', 'valid', "
        r"'test'\], found 'dev'",
    ):
        MOSIDataModule(str(synthetic_mosi), predict_split="dev")


def test_tokenizer_that_cannot_load_names_the_setting(synthetic_mosi, tmp_path):
    dm = MOSIDataModule(
        str(synthetic_mosi), tokenizer=str(tmp_path / "no-such-tokenizer"), cache_dir=str(tmp_path / "cache")
    )
    with pytest.raises(ConfigError, match=r"data.init_args.tokenizer='.*no-such-tokenizer' cannot be loaded"):
        dm.setup()


def test_empty_split_after_a_transform_and_leaks_are_reported(synthetic_mosi, tmp_path, caplog):
    import dataclasses

    class NoValid(MOSIDataModule):
        def transform_split(self, split, arrays):
            if split != "valid":
                return arrays
            return dataclasses.replace(arrays, ids=[], raw_text=[])

    with pytest.raises(DataError, match=r"split 'valid' has 0 samples"):
        NoValid(str(synthetic_mosi), cache_dir=str(tmp_path / "cache")).setup()

    class Leaky(MOSIDataModule):
        def transform_split(self, split, arrays):
            if split != "test":
                return arrays
            return dataclasses.replace(arrays, ids=["synthtrain0000_1", "synthtrain0000_2"] + arrays.ids[2:])

    with caplog.at_level("WARNING"):
        Leaky(str(synthetic_mosi), cache_dir=str(tmp_path / "cache")).setup()
    assert "LEAK" in caplog.text and "2 utterance ids appear in both 'train' and 'test'" in caplog.text
    assert "synthtrain0000_1" in caplog.text


def test_unlabeled_split_flows_through_the_batch(synthetic_mosi, tmp_path):
    import dataclasses

    from msa_lightning.data.dataset import MSADataset, collate_batch
    from msa_lightning.data.reader import read_feature_file

    arrays = dataclasses.replace(read_feature_file(synthetic_mosi)["train"], labels={})
    ds = MSADataset(arrays, arrays.text_bert, inputs={"audio", "audio_lengths", "text_ids", "text_mask"})
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate_batch)))
    assert batch.labels == {} and len(batch) == 5 and batch.vision is None and batch.text_segment is None
    moved = batch.to("cpu")
    assert moved.vision is None and moved.audio.shape[0] == 5 and moved.labels == {}
    with pytest.raises(TypeError, match="needs `index`"):
        MSABatch(audio=torch.zeros(2, 1, 5))


# --------------------------------------------------------------------------- the real `msa fit` command
def _msa_fit(tmp_path, synthetic_mosi, monkeypatch, capsys, *overrides: str):
    """``msa fit`` in this process, through the command's entry point (``main``: its exit status and its one-line
    ``msa: error:`` boundary), the store in ``tmp_path/cache`` (as ``MSA_CACHE_DIR`` would put it); a subprocess
    would only add seconds of imports (real ``msa fit`` processes: tests/test_cli_errors.py, test_resume.py)."""
    from types import SimpleNamespace

    from msa_lightning import store
    from msa_lightning.cli import main

    monkeypatch.setattr(store, "DEFAULT_ROOT", tmp_path / "cache")
    monkeypatch.setattr(cache_mod, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("MSA_DEBUG", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "fit",
                "--model",
                "TFNModule",
                "--data",
                "MOSIDataModule",
                f"--data.init_args.path={synthetic_mosi}",
                "--trainer.max_epochs=1",
                "--trainer.logger=false",
                f"--trainer.default_root_dir={tmp_path}",
                *overrides,
            ]
        )
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=exit_.value.code, stdout=out, stderr=err)


def test_msa_fit_with_a_tokenizer_that_cannot_load(tmp_path, synthetic_mosi, monkeypatch, capsys):
    """(``data.init_args.batch_size=0`` through ``msa fit`` is one of tests/test_cli_errors.py's cases.)"""
    from conftest import assert_one_line_error

    result = _msa_fit(tmp_path, synthetic_mosi, monkeypatch, capsys, "--data.init_args.tokenizer=no-such-dir/tokenizer")
    assert_one_line_error(result, "data.init_args.tokenizer='no-such-dir/tokenizer'", "cannot be loaded")


DDP_SCRIPT = """
import json, sys, torch, lightning as L
from torch import nn
from msa_lightning.data.datamodule import MOSIDataModule

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
        self.seen = []
    def training_step(self, batch, batch_idx):
        self.seen.append([self.current_epoch, batch.index.tolist()])
        x = batch.audio.sum(1) / batch.audio_lengths[:, None]
        return ((self.net(x).squeeze(-1) - batch.labels["M"]) ** 2).mean()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
    def on_train_end(self):
        with open(f"{sys.argv[2]}/seen{self.global_rank}.json", "w") as f:
            json.dump(self.seen, f)

L.seed_everything(7, verbose=False)
dm = MOSIDataModule(sys.argv[1], batch_size=32, cache_dir=f"{sys.argv[2]}/cache")
# ddp_fork: both ranks are forked from this script (one interpreter start and one set of imports instead of
# two); `msa fit --trainer.strategy=ddp`'s launcher is tested in tests/test_training.py
trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_fork", logger=False, limit_val_batches=0,
                    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
trainer.fit(Tiny(), datamodule=dm)
"""


def test_ddp_ranks_get_disjoint_shards_of_one_permutation(tmp_path):
    """65 training samples on 2 ranks at batch 32: shards of 33 and 32 samples, one batch each (the
    33rd sample joins rank 0's batch rather than forming a batch of one), disjoint, nothing dropped."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    path = make_synthetic("mosi", tmp_path / "mosi65.pkl", size_factor=0.0506, seed=5)
    script = tmp_path / "ddp_order.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((tmp_path / f"seen{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in (0, 1):
        batches = [[rows for e, rows in s if e == epoch] for s in seen]
        assert [[len(b) for b in rank] for rank in batches] == [[33], [32]]
        rows = [i for rank in batches for b in rank for i in b]
        assert sorted(rows) == list(range(65))
        sampler = EpochBatchSampler(65, 32, seed=7, num_replicas=2, rank=0)
        sampler.set_epoch(epoch)
        assert batches[0] == list(sampler)  # the (seed, epoch) permutation, not Lightning's sampler
    assert seen[0][0][1] != seen[0][1][1]  # a new order each epoch


def test_overfit_batches_keeps_whole_batches(synthetic_mosi, cache_dir, tmp_path):
    """Lightning re-creates the training loader with a sequential sampler for ``overfit_batches``."""
    model = _Recorder.make()
    _trainer(tmp_path, overfit_batches=2, max_epochs=2, enable_checkpointing=False).fit(
        model, MOSIDataModule(str(synthetic_mosi), batch_size=8, cache_dir=str(cache_dir))
    )
    assert [rows for _, rows in model.seen] == [list(range(8)), list(range(8, 16))] * 2


def test_token_cache_follows_a_local_tokenizer_s_files(tmp_path):
    from msa_lightning.data.datamodule import tokenize_cached
    from msa_lightning.nn.pretrained import load_tokenizer

    folder = tmp_path / "tok"
    load_tokenizer("tiny-bert").save_pretrained(folder)
    first = np.array(tokenize_cached(["good movie"], str(folder), 8, tmp_path / "cache"))
    import json

    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["good"], vocab["movie"] = vocab["movie"], vocab["good"]  # the same path, other ids
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    second = np.array(tokenize_cached(["good movie"], str(folder), 8, tmp_path / "cache"))
    assert first[0, 0, 1] == second[0, 0, 2] and first[0, 0, 2] == second[0, 0, 1]


def test_inputs_the_file_cannot_give_are_an_error(synthetic_mosi, cache_dir):
    dm = MOSIDataModule(str(synthetic_mosi), cache_dir=str(cache_dir), inputs=["audio", "text_feats", "waveform"])
    with pytest.raises(DataError, match=r"the model reads \['text_feats', 'waveform'\], which MOSIDataModule cannot"):
        dm.setup()


def test_a_second_model_with_other_inputs_gets_them(synthetic_mosi, cache_dir):
    from types import SimpleNamespace

    dm = MOSIDataModule(str(synthetic_mosi), batch_size=8, cache_dir=str(cache_dir))

    def attach(required):
        dm.trainer = SimpleNamespace(
            lightning_module=SimpleNamespace(required_inputs=required), world_size=1, global_rank=0
        )
        dm.setup("fit")
        return next(iter(dm.val_dataloader()))

    b = attach({"audio", "audio_lengths"})
    assert b.audio is not None and b.vision is None
    first = dm.datasets["valid"]
    b = attach({"audio"})  # a subset: the datasets stay
    assert dm.datasets["valid"] is first
    b = attach({"vision", "vision_lengths"})  # e.g. trainer.test with another model
    assert b.vision is not None and b.audio is None
