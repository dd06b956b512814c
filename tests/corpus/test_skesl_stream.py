"""SKESL pretraining from streaming shards: the reader's batches, disjoint and complete
shares per DDP rank, mid-epoch resume, the shipped configs through ``msa fit``, one clear error for missing or
unfinished shards.

Shards are real litdata ``optimize`` outputs in the layout of ``msa pretrain-data build`` (written here by
:func:`write_shards`); the model is the in-process ``tiny-bert``. Runs that recorded the clips they trained
on write them with :class:`RecordIds` (imported by ``msa fit`` from this file). ``msa fit`` runs in a subprocess
where the test is about processes (2 gloo ranks, kill -9); elsewhere it runs in this process through the same
entry point (:func:`_msa_here`), which saves the seconds of importing the suite that every process start costs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO, msa_in_process

from msa_lightning.corpus.format import read_manifest
from msa_lightning.data.base import DataFacts
from msa_lightning.errors import DataError
from msa_lightning.papers.skesl.data import SKESLStreamDataModule
from msa_lightning.papers.skesl.masking import mask_sentiment_words

TESTS = Path(__file__).resolve().parent
WORDS = ["good", "great", "horrible", "bad", "home", "table", "we", "went", "the", "movie", "was", "today", "and"]
N_TRAIN, N_VALID = 23, 6
AUDIO_FRAMES, VISION_FRAMES = 12, 6
TINY_MODEL = [
    "--model.init_args.text_model=tiny-bert",
    "--model.init_args.num_blocks=1",
    "--model.init_args.ffn_dim=16",
    "--model.init_args.head_hidden=8",
]


# ---------------------------------------------------------------------------------------------- shards
def _clip(i: int) -> dict:
    """One clip in the builder's item format (frames already cut to at most the manifest's lengths)."""
    rng = np.random.default_rng(i)
    return {
        "id": f"id1{i % 7:04d}/yt{i:05d}/00001",
        "text": " ".join(rng.choice(WORDS, size=3 + i % 5)),
        "audio": rng.normal(size=(4 + i % 9, 33)).astype(np.float32),
        "vision": rng.normal(size=(2 + i % 5, 709)).astype(np.float32),
    }


def write_shards(
    out: Path, n_train: int = N_TRAIN, n_valid: int = N_VALID, chunk_size: int = 4, finished: bool = True
) -> Path:
    """``OUT/train``, ``OUT/valid`` (litdata ``optimize``, several chunks) and ``OUT/manifest.json``."""
    from litdata import optimize

    for split, rows in (("train", range(n_train)), ("valid", range(1000, 1000 + n_valid))):
        optimize(
            fn=_clip,
            inputs=list(rows),
            output_dir=str(out / split),
            chunk_size=chunk_size,
            num_workers=1,
            verbose=False,
            mode="overwrite",
            start_method="fork",
        )
    manifest = {
        "format": "msa-skesl-shards/1",
        "finished": finished,
        "audio_dim": 33,
        "vision_dim": 709,
        "audio_frames": AUDIO_FRAMES,
        "vision_frames": VISION_FRAMES,
        "splits": {"train": n_train, "valid": n_valid},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards") / "out")


TRAIN_IDS = sorted(_clip(i)["id"] for i in range(N_TRAIN))


def _dm(shards: Path, world: int = 1, rank: int = 0, **kwargs) -> SKESLStreamDataModule:
    """A DataModule that builds its loaders for ``rank`` of ``world`` (as a trainer under DDP would)."""
    args = dict(tokenizer="tiny-bert", text_max_length=12, batch_size=3, shuffle_seed=5)
    dm = SKESLStreamDataModule(str(shards), **{**args, **kwargs})
    dm.setup("fit")
    dm._world = lambda: (world, rank)
    return dm


# ---------------------------------------------------------------------------------------------- batches
def test_batches_are_what_the_masked_datamodule_serves(shards, tok):
    """Masked transcript ids (mask_sentiment_words per clip id and mask_seed), padded frames with lengths,
    empty labels, the masking targets in extras; the same masked words in every epoch."""
    dm = _dm(shards, mask_seed=3, batch_size=5)
    assert dm.data_facts() == DataFacts(
        audio_dim=33,
        vision_dim=709,
        label_bound=3.0,
        metric_family="mosi",
        num_train_samples=N_TRAIN,
    )
    loader = dm.train_dataloader()
    epoch1 = list(loader)
    clips = {c["id"]: c for c in map(_clip, range(N_TRAIN))}
    for batch in epoch1:
        assert batch.labels == {} and len(batch) == len(batch.ids) == batch.index.shape[0]
        expected = mask_sentiment_words([clips[i]["text"] for i in batch.ids], tok, 12, "vader", batch.ids, seed=3)
        width = batch.text_ids.shape[1]
        assert width == int(expected.ids[:, 1].sum(1).max())  # trailing padding trimmed
        np.testing.assert_array_equal(batch.text_ids.numpy(), expected.ids[:, 0, :width])
        np.testing.assert_array_equal(batch.text_mask.numpy(), expected.ids[:, 1, :width])
        np.testing.assert_array_equal(batch.extras["skesl_target"].numpy(), expected.target[:, :width])
        np.testing.assert_array_equal(batch.extras["skesl_label"].numpy(), expected.label)
        assert (batch.text_ids[batch.extras["skesl_target"]] == tok.mask_token_id).all()
        assert batch.audio.shape[1:] == (AUDIO_FRAMES, 33) and batch.vision.shape[1:] == (VISION_FRAMES, 709)
        for row, clip_id in enumerate(batch.ids):
            a, v = clips[clip_id]["audio"], clips[clip_id]["vision"]
            assert batch.audio_lengths[row] == len(a) and batch.vision_lengths[row] == len(v)
            np.testing.assert_array_equal(batch.audio[row, : len(a)].numpy(), a)
            assert not batch.audio[row, len(a) :].any() and not batch.vision[row, len(v) :].any()
            np.testing.assert_array_equal(batch.vision[row, : len(v)].numpy(), v)
    assert sorted(i for b in epoch1 for i in b.ids) == TRAIN_IDS
    epoch2 = list(loader)
    assert [b.ids for b in epoch2] != [b.ids for b in epoch1]  # a new order every epoch ...
    words = lambda batches: {i: float(x) for b in batches for i, x in zip(b.ids, b.extras["skesl_label"])}  # noqa: E731
    assert words(epoch2) == words(epoch1)  # ... and the same masked words
    text_only = _dm(shards, inputs=["text_ids", "text_mask", "text_segment"])  # e.g. w/o AV: frames not batched
    batch = next(iter(text_only.train_dataloader()))
    assert batch.audio is None and batch.vision is None and batch.text_ids is not None


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_read_disjoint_shares_covering_every_clip_once(shards, workers):
    """1-4 ranks (23 clips, batch 3): every clip exactly once per epoch, every rank the same number of batches
    (the odd clip joins a batch, nothing dropped or repeated), the same shares whatever the loader workers."""
    for world in (1, 2, 3, 4):
        loaders = [_dm(shards, world, rank, num_workers=workers).train_dataloader() for rank in range(world)]
        epochs = [[[b.ids for b in loader] for _ in range(2)] for loader in loaders]  # each rank's epochs 1 and 2
        for epoch in range(2):
            seen, counts = [], set()
            for rank, loader in enumerate(loaders):
                batches = epochs[rank][epoch]
                assert len(batches) == len(loader) and min(map(len, batches)) >= 2
                counts.add(len(batches))
                seen += [i for b in batches for i in b]
            assert sorted(seen) == TRAIN_IDS, (world, epoch)
            assert len(counts) == 1, (world, counts)  # DDP steps in lockstep
        valid = [
            i
            for rank in range(world)
            for b in _dm(shards, world, rank, num_workers=workers).val_dataloader()
            for i in b.ids
        ]
        assert sorted(valid) == sorted(_clip(i)["id"] for i in range(1000, 1000 + N_VALID)), world


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_state_resumes_mid_epoch_on_every_rank(shards, workers):
    """Rank 0's loader state (what a checkpoint holds) after k batches of epoch 2: each rank of a new run
    continues with exactly its remaining clips, then epoch 3 is the uninterrupted run's."""
    world = 2
    references = []  # each rank's epochs 2 and 3, uninterrupted
    for rank in range(world):
        reference = _dm(shards, world, rank, num_workers=workers).train_dataloader()
        list(reference)
        references.append(([b.ids for b in reference], [b.ids for b in reference]))
    for k in (1, 3):
        state = None
        for rank in range(world):
            epoch2, epoch3 = references[rank]
            if rank == 0:
                loader = _dm(shards, world, rank, num_workers=workers).train_dataloader()
                list(loader)
                it = iter(loader)
                assert [next(it).ids for _ in range(k)] == epoch2[:k]
                state = loader.state_dict()
            resumed = _dm(shards, world, rank, num_workers=workers).train_dataloader()
            resumed.load_state_dict(state)
            assert [b.ids for b in resumed] == epoch2[k:], (rank, k)
            assert [b.ids for b in resumed] == epoch3
    changed = _dm(shards, 2, 0, num_workers=workers, batch_size=4).train_dataloader()
    with pytest.raises(DataError, match=r"same setting.*batch_size: checkpoint 3, now 4"):
        changed.load_state_dict(state)
    # at an epoch's end (last.ckpt) the settings may change: the next epoch starts afresh
    ended = _dm(shards, 2, 0, num_workers=workers).train_dataloader()
    list(ended)
    more_ranks = _dm(shards, 3, 1, num_workers=workers, batch_size=4).train_dataloader()
    more_ranks.load_state_dict(ended.state_dict())
    reference = _dm(shards, 3, 1, num_workers=workers, batch_size=4).train_dataloader()
    list(reference)
    assert [b.ids for b in more_ranks] == [b.ids for b in reference]  # epoch 2 of the new setting


def test_epoch_shares_are_contiguous_chunk_runs_cut_by_rank_then_worker():
    """Chunks in a (seed, epoch) order, their items cut into contiguous shares (sizes by rank, then worker,
    differing by at most one), each chunk's piece permuted by (seed, epoch, chunk); without shuffle the shards'
    order; the rank's clips alternate between its workers' shares."""
    from msa_lightning.corpus.stream import epoch_shares, interleave

    sizes = [4, 4, 4, 4, 4, 3]
    chunk_of = np.repeat(np.arange(len(sizes)), sizes)
    for epoch in (1, 2):
        shares = epoch_shares(sizes, seed=5, epoch=epoch, shuffle=True, world_size=2, num_workers=2)
        assert [len(s) for s in shares] == [6, 6, 6, 5]
        assert sorted(np.concatenate(shares).tolist()) == list(range(23))
        order = np.random.RandomState([5, epoch]).permutation(len(sizes)).tolist()
        runs = [c for share in shares for c in dict.fromkeys(chunk_of[share].tolist())]
        assert [c for c in dict.fromkeys(runs)] == order  # the chunks' sequence, cut into shares
        for share in shares:  # a piece of a chunk is one run
            assert len(dict.fromkeys(chunk_of[share].tolist())) == len(np.flatnonzero(np.diff(chunk_of[share]))) + 1
    plain = epoch_shares(sizes, seed=5, epoch=3, shuffle=False, world_size=3, num_workers=1)
    assert [s.tolist() for s in plain] == [list(range(0, 8)), list(range(8, 16)), list(range(16, 23))]
    assert interleave([np.array([1, 2, 3]), np.array([7, 8])]).tolist() == [1, 7, 2, 8, 3]


# rank 0's loader state after 2 batches of epoch 2 (2 ranks, batch 3, seed 5, the `shards` fixture), as the
# litdata-based loader of earlier versions wrote it into checkpoints ("dataset" trimmed: litdata's own keys)
LITDATA_ERA_STATE = {
    "dataset": {
        "num_samples_yielded": 6,
        "num_workers": 1,
        "batch_size": 1,
        "current_epoch": 2,
        "seed": 5,
        "drop_last": False,
        "world_size": 2,
        "shuffle": True,
        "sample_in_epoch": 12,
    },
    "current_epoch": 2,
    "num_samples_yielded": 6,
    "latest_worker_idx": 0,
    "msa": {
        "batches": 2,
        "epoch_batches": 4,
        "world_size": 2,
        "num_workers": 0,
        "batch_size": 3,
        "clips": 23,
        "seed": 5,
        "shuffle": True,
    },
}


def test_a_checkpoint_of_the_litdata_based_loader_resumes(shards):
    """Checkpoints written before the loader kept its own order (its state then held litdata's too) resume:
    each rank serves the rest of epoch 2, as an uninterrupted run (the epoch orders are those of that loader)."""
    for rank in (0, 1):
        reference = _dm(shards, 2, rank).train_dataloader()
        list(reference)
        epoch2 = [b.ids for b in reference]
        resumed = _dm(shards, 2, rank).train_dataloader()
        resumed.load_state_dict(LITDATA_ERA_STATE)
        assert [b.ids for b in resumed] == epoch2[2:], rank


def test_only_litdata_s_public_api_is_used():
    """The shard reader and builder import from litdata only names of its top-level ``__all__`` (no private module
    or class that a litdata release may change: the loader's order, shares and state are the suite's own)."""
    import ast

    import litdata

    for module in ("stream.py", "shards.py"):
        tree = ast.parse((REPO / "msa_lightning" / "corpus" / module).read_text())
        used = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "litdata":
                assert node.module == "litdata", (module, node.module)
                used += [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                assert all(a.name == "litdata" or not a.name.startswith("litdata") for a in node.names), module
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "litdata":
                used.append(node.attr)
        assert used, module
        assert set(used) <= set(litdata.__all__) | {"__version__"}, (module, sorted(set(used) - set(litdata.__all__)))


def test_missing_unfinished_or_inconsistent_shards_are_one_clear_error(shards, tmp_path):
    with pytest.raises(DataError, match=r"absent: no SKESL pretraining shards here .*msa pretrain-data build"):
        read_manifest(tmp_path / "absent")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "manifest.json").write_text(
        json.dumps({**json.loads((shards / "manifest.json").read_text()), "finished": False})
    )
    with pytest.raises(DataError, match=r"the shard build did not finish \(manifest.json has finished: false\)"):
        read_manifest(unfinished)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "train").symlink_to(shards / "train")
    (wrong / "valid").symlink_to(shards / "valid")
    manifest = json.loads((shards / "manifest.json").read_text())
    (wrong / "manifest.json").write_text(json.dumps({**manifest, "splits": {"train": 30, "valid": N_VALID}}))
    with pytest.raises(DataError, match=r"the shards hold 23 clips but manifest.json says 30"):
        read_manifest(wrong)


def _msa(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "MSA_CACHE_DIR": str(cwd / "cache"),
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _msa_here(args: list[str], cwd: Path, capsys) -> subprocess.CompletedProcess:
    """``msa ARGS`` in this process, in ``cwd`` with :func:`_msa`'s environment (conftest.msa_in_process)."""
    return msa_in_process(
        capsys,
        *args,
        cwd=cwd,
        env={"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MSA_CACHE_DIR": str(cwd / "cache")},
    )


def test_msa_fit_names_missing_shards(shards, tmp_path, capsys):
    """The shipped config without shards at its data path: one line naming the folder and how to build it
    (unfinished or inconsistent shards: test_missing_unfinished_or_inconsistent_shards_are_one_clear_error).
    In this process, from ``tmp_path`` (the config's relative path is not there)."""
    config = str(REPO / "configs" / "skesl" / "pretrain_bert_base.yaml")
    tiny = [
        "--data.init_args.tokenizer=tiny-bert",
        *TINY_MODEL,
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    missing = _msa_here(["fit", "--config", config, *tiny], tmp_path, capsys)  # its data/skesl/shards is not there
    assert missing.returncode == 2, missing.stderr[-3000:]
    message = missing.stderr.strip().splitlines()[-1]
    assert message.startswith("msa: error: data/skesl/shards: no SKESL pretraining shards here"), message
    assert "msa pretrain-data build ... --out data/skesl/shards" in message and "Traceback" not in missing.stderr


# ---------------------------------------------------------------------------------------------- runs
class RecordIds(L.Callback):
    """Appends ``{"epoch", "step", "ids"}`` of every trained batch to ``folder/ids_rank{rank}.jsonl``
    (flushed at once: a killed run's lines are complete)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        line = json.dumps({"epoch": trainer.current_epoch, "step": trainer.global_step, "ids": list(batch.ids)})
        with open(Path(self.folder) / f"ids_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


class KillAt(L.Callback):
    """kill -9 this process at the start of training step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _records(folder: Path, rank: int = 0) -> list[dict]:
    path = folder / f"ids_rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _callback(cls: str, **init_args) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": f"test_skesl_stream.{cls}", "init_args": init_args})


def _pretrain_args(
    shards: Path, tmp_path: Path, config: str = "pretrain_bert_base.yaml", workers: int = 0
) -> list[str]:
    return [
        "fit",
        "--config",
        str(REPO / "configs" / "skesl" / config),
        f"--data.init_args.path={shards}",
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.batch_size=4",
        f"--data.init_args.num_workers={workers}",
        *TINY_MODEL,
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]


@pytest.fixture(scope="module")
def ddp_run(shards, tmp_path_factory) -> dict:
    """`msa fit` with the shipped config on 2 gloo processes (12 and 11 clips at batch 4: 3 steps an epoch), both
    killed (-9) at the start of step 5 (the 2nd of epoch 1) after a checkpoint every 2 steps, then resumed from
    ``step=4.ckpt`` to the end of epoch 2: the processes and the ids each rank trained on before and after the kill.
    Shared by the two DDP tests (one DDP launch less: epoch 0 of the killed run is an uninterrupted epoch)."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    ids = tmp_path / "ids"
    ckpts = tmp_path / "every2"
    every = "--trainer.callbacks+=" + json.dumps(
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(ckpts), "every_n_train_steps": 2, "save_top_k": -1, "filename": "{step}"},
        }
    )
    args = [
        *_pretrain_args(shards, tmp_path),
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_epochs=3",
        every,
        _callback("RecordIds", folder=str(ids)),
    ]
    killed = _msa([*args, _callback("KillAt", step=4)], tmp_path)  # 3 steps an epoch: step 4 = 2nd of epoch 1
    before = [_records(ids, rank) for rank in (0, 1)]
    ckpt = ckpts / "step=4.ckpt"
    for rank in (0, 1):
        (ids / f"ids_rank{rank}.jsonl").unlink(missing_ok=True)
    resumed = _msa([*args, f"--ckpt_path={ckpt}"], tmp_path) if ckpt.is_file() else None
    return {
        "killed": killed,
        "resumed": resumed,
        "ckpts": ckpts,
        "ckpt": ckpt,
        "before": before,
        "after": [_records(ids, rank) for rank in (0, 1)],
    }


def _epoch_ids(records: list[dict], epoch: int) -> list[str]:
    return [i for r in records if r["epoch"] == epoch for i in r["ids"]]


@pytest.mark.slow
def test_two_process_ddp_epochs_cover_every_clip_exactly_once(ddp_run):
    """`msa fit` with the shipped config on 2 gloo processes: in each epoch the ranks train on disjoint clips
    that together are every training clip once, in the same number of steps (epoch 0: before the kill; epoch 2:
    after the resume; epoch 1, cut by the kill: test_two_process_ddp_killed_mid_epoch_resumes_...)."""
    assert ddp_run["killed"].returncode == -signal.SIGKILL, ddp_run["killed"].stderr[-3000:]
    assert ddp_run["resumed"] is not None and ddp_run["resumed"].returncode == 0, ddp_run["resumed"]
    for epoch, ranks in ((0, ddp_run["before"]), (2, ddp_run["after"])):
        per_rank = [_epoch_ids(records, epoch) for records in ranks]
        steps = [[r["step"] for r in records if r["epoch"] == epoch] for records in ranks]
        assert steps[0] == steps[1] and len(steps[0]) == 3, steps  # 12 and 11 clips at batch 4: 3 steps each
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == TRAIN_IDS, epoch
    orders = [
        [_epoch_ids(ddp_run["before"][rank], epoch) + _epoch_ids(ddp_run["after"][rank], epoch) for rank in (0, 1)]
        for epoch in range(3)
    ]
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]  # each epoch its own order


@pytest.mark.slow
def test_killed_mid_epoch_resumes_with_exactly_the_clips_not_yet_seen(shards, tmp_path, capsys):
    """kill -9 in the middle of epoch 1, after a checkpoint every 2 steps: `msa fit --ckpt_path` (in this process)
    trains on exactly the clips of that epoch the checkpoint had not seen, then on a full epoch."""
    ids = tmp_path / "ids"
    ckpts = tmp_path / "every2"
    every = "--trainer.callbacks+=" + json.dumps(
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(ckpts), "every_n_train_steps": 2, "save_top_k": -1, "filename": "{step}"},
        }
    )
    args = [*_pretrain_args(shards, tmp_path), "--trainer.max_epochs=3", every, _callback("RecordIds", folder=str(ids))]
    killed = _msa([*args, _callback("KillAt", step=10)], tmp_path)  # 6 steps an epoch: step 10 = 5th of epoch 1
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = ckpts / "step=10.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in ckpts.iterdir())
    before = _records(ids)
    assert [r["step"] for r in before] == list(range(1, 11))
    seen_in_epoch = [i for r in before if r["epoch"] == 1 for i in r["ids"]]  # 4 batches of epoch 1
    assert len(seen_in_epoch) == 16
    (ids / "ids_rank0.jsonl").unlink()
    resumed = _msa_here([*args, f"--ckpt_path={ckpt}"], tmp_path, capsys)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _records(ids)
    rest_of_epoch = [i for r in after if r["epoch"] == 1 for i in r["ids"]]
    assert sorted(rest_of_epoch) == sorted(set(TRAIN_IDS) - set(seen_in_epoch))  # exactly the clips not yet seen
    assert sorted(seen_in_epoch + rest_of_epoch) == TRAIN_IDS
    assert sorted(i for r in after if r["epoch"] == 2 for i in r["ids"]) == TRAIN_IDS  # then a whole epoch
    assert [r["step"] for r in after] == list(range(11, 19))


@pytest.mark.parametrize("config", ["pretrain_bert.yaml", "pretrain_bert_base.yaml"])
def test_shipped_pretraining_configs_step_on_shards(config, shards, tmp_path):
    """The shipped streaming configs (test_configs builds them; here they train, with their 2 loader workers):
    2 steps on tiny shards, the model's audio/vision sizes filled from the manifest."""
    from msa_lightning.experiments.lightning_cli import make_cli

    cli = make_cli(
        [
            *_pretrain_args(shards, tmp_path, config, workers=2),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.devices=1",
            f"--checkpoint.dirpath={tmp_path / 'ckpt'}",
        ]
    )
    assert type(cli.datamodule).__name__ == "SKESLStreamDataModule" and cli.trainer.global_step == 2
    assert (cli.model.hparams.audio_dim, cli.model.hparams.vision_dim) == (33, 709)
    assert cli.datamodule.text_max_length == 39 and cli.model.hparams.encoder_lr == 5e-6
    assert cli.datamodule.num_workers == 2 and cli.trainer.train_dataloader.num_workers == 2


@pytest.mark.slow
def test_end_to_end_synthetic_corpus_to_shards_to_pretraining_to_mosi(tmp_path, capsys):
    """From the CLI with the shipped configs: `msa pretrain-data synth` -> `build` -> `msa fit` pretraining on
    the shards (the training loss goes down) -> `msa fit` MOSI fine-tuning from its last checkpoint. All in this
    process (each command in a subprocess: test_skesl_shards.py and the DDP and kill tests here)."""
    import csv
    import dataclasses

    from msa_lightning.data import synthetic as synthetic_module
    from msa_lightning.data.specs import get_spec

    corpus, out = tmp_path / "corpus", tmp_path / "shards"
    for args in (
        ["pretrain-data", "synth", str(corpus), "--clips", "24", "--seed", "1"],
        [
            "pretrain-data",
            "build",
            "--transcripts",
            str(corpus / "transcripts.tsv"),
            "--audio",
            str(corpus / "audio"),
            "--visual",
            str(corpus / "openface"),
            "--out",
            str(out),
            "--f0",
            "zcr",
            "--valid-share",
            "0.25",
            "--audio-frames",
            "40",
            "--vision-frames",
            "20",
        ],
    ):
        proc = _msa_here(args, tmp_path, capsys)
        assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest["splits"]["train"] + manifest["splits"]["valid"] == 24
    pretrain = _msa_here(
        [
            *_pretrain_args(out, tmp_path),
            "--trainer.max_epochs=4",
            "--model.init_args.lr=3e-3",
            "--model.init_args.encoder_lr=1e-3",
        ],
        tmp_path,
        capsys,
    )
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    run = next((tmp_path / "runs").rglob("last.ckpt")).parents[1]
    with open(run / "metrics.csv", newline="") as f:
        epoch_losses = [float(r["train/loss_epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")]
    assert len(epoch_losses) == 4 and epoch_losses[-1] < epoch_losses[0], epoch_losses

    # MOSI with the paper's re-extracted feature sizes (33-d audio, 709-d vision), as SKESL fine-tunes on it
    spec = dataclasses.replace(get_spec("mosi"), audio_dim=33, vision_dim=709, audio_len=40, vision_len=20)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic_module, "get_spec", lambda name: spec)
        mosi = synthetic_module.make_synthetic("mosi", tmp_path / "mosi33.pkl", size_factor=0.03, seed=2)
    ckpt = run / "checkpoints" / "last.ckpt"
    finetune = _msa_here(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "skesl" / "mosi_bert_base.yaml"),
            f"--model.init_args.pretrained={ckpt}",
            f"--data.init_args.path={mosi}",
            "--data.init_args.tokenizer=tiny-bert",
            "--data.init_args.batch_size=16",
            "--data.init_args.num_workers=0",
            *TINY_MODEL,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'mosi_runs'}",
        ],
        tmp_path,
        capsys,
    )
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    state = torch.load(next((tmp_path / "mosi_runs").rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["pretrained"] == str(ckpt)
    assert (state["hyper_parameters"]["audio_dim"], state["hyper_parameters"]["vision_dim"]) == (33, 709)


@pytest.mark.slow
def test_two_process_ddp_killed_mid_epoch_resumes_with_each_rank_s_remaining_clips(ddp_run):
    """2 gloo processes, both killed (-9) in the middle of epoch 1 after a checkpoint: the resumed ranks train
    on exactly the clips of that epoch the checkpoint had not seen (each its own share, from rank 0's loader
    state in the checkpoint), then on a whole epoch."""
    killed, resumed = ddp_run["killed"], ddp_run["resumed"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert ddp_run["ckpt"].is_file(), sorted(p.name for p in ddp_run["ckpts"].iterdir())
    seen = [_epoch_ids(records, 1) for records in ddp_run["before"]]
    assert [len(s) for s in seen] == [4, 4]
    assert [[r["step"] for r in records] for records in ddp_run["before"]] == [[1, 2, 3, 4]] * 2
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rest = [_epoch_ids(records, 1) for records in ddp_run["after"]]
    assert [len(r) for r in rest] == [8, 7]  # shares of 12 and 11 clips
    assert not set(seen[0] + seen[1]) & set(rest[0] + rest[1])
    assert sorted(seen[0] + seen[1] + rest[0] + rest[1]) == TRAIN_IDS
    assert [[r["step"] for r in records] for records in ddp_run["after"]] == [list(range(5, 10))] * 2
    last = [i for records in ddp_run["after"] for i in _epoch_ids(records, 2)]
    assert sorted(last) == TRAIN_IDS


def test_a_loader_rebuilt_every_epoch_continues_the_epoch_orders(shards, tmp_path):
    """``reload_dataloaders_every_n_epochs=1`` builds a new training loader each epoch: the orders are those of
    one loader kept for the whole run (a new order each epoch, not epoch 1's again)."""
    from msa_lightning.papers.skesl.module import SKESLPretrain

    class Seen(L.Callback):
        def __init__(self):
            self.ids = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ids.append((trainer.current_epoch, tuple(batch.ids)))

    runs = []
    for reload in (0, 1):
        L.seed_everything(0, verbose=False)
        seen = Seen()
        trainer = L.Trainer(
            max_epochs=3,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            reload_dataloaders_every_n_epochs=reload,
            callbacks=[seen],
            default_root_dir=tmp_path,
        )
        model = SKESLPretrain(text_model="tiny-bert", num_blocks=1, ffn_dim=16, head_hidden=8)
        trainer.fit(
            model,
            SKESLStreamDataModule(str(shards), tokenizer="tiny-bert", text_max_length=12, batch_size=4, shuffle_seed=5),
        )
        runs.append(seen.ids)
    assert runs[0] == runs[1]
    epochs = [[ids for e, ids in runs[1] if e == epoch] for epoch in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]


def test_predict_serves_the_held_out_clips_in_shard_order(shards, tmp_path):
    """``Trainer.predict`` (``msa predict``) on the streamed shards: every held-out clip once, in shard order (the
    loader is not a DataLoader, so Lightning does not try to re-create it with an index-tracking sampler)."""
    from msa_lightning.papers.skesl.module import SKESLPretrain

    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    model = SKESLPretrain(text_model="tiny-bert", num_blocks=1, ffn_dim=16, head_hidden=8)
    out = trainer.predict(
        model,
        datamodule=SKESLStreamDataModule(str(shards), tokenizer="tiny-bert", text_max_length=12, eval_batch_size=4),
    )
    assert [i for batch in out for i in batch["ids"]] == [_clip(i)["id"] for i in range(1000, 1000 + N_VALID)]
