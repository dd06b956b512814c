"""Speed-ups that must not change results: each batch's token padding is cut to the
columns its samples attend to (``trim_text``, on by default), frames to the batch's longest sequence, the
one-directional RNNs run over the padded batch instead of a packed one (the same function: equal up to float
rounding, outputs and gradients), and batches can be pinned for GPU copies. The opt-in length-bucketing
sampler (``bucket_by_length``, off by default because it changes the batches) keeps every sample once per
epoch and its order a function of (seed, epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_swrm_model import CONTEXT, SMALL, mosi_asr  # noqa: F401  (the synthetic MOSI-ASR fixture)
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from msa_lightning.batch import MSABatch
from msa_lightning.data.datamodule import MOSIDataModule
from msa_lightning.data.dataset import text_width
from msa_lightning.data.sampling import EpochBatchSampler
from msa_lightning.errors import DataError
from msa_lightning.nn.rnn import SequenceEncoder
from msa_lightning.papers.swrm.data import MOSIASRDataModule
from msa_lightning.papers.swrm.module import SelfMMModule, SWRMModule

REPO = Path(__file__).resolve().parents[2]


def test_text_width_keeps_attended_columns_and_stored_positions():
    right = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    assert text_width(right) == 3
    assert text_width(right, np.array([1, 4])) == 5  # a stored token position is never cut off
    assert text_width(right[:, ::-1]) == 6  # left padding (XLNet): nothing can go
    assert text_width(np.zeros((2, 6), dtype=np.int64)) == 1


def _loaders(dm):
    dm.prepare_data()
    dm.setup("fit")
    return {"train": dm.train_dataloader(), "valid": dm.val_dataloader(), "test": dm.test_dataloader()}


@pytest.mark.parametrize("module", [SelfMMModule, SWRMModule], ids=["selfmm", "swrm"])
def test_trimmed_and_full_width_batches_give_the_same_outputs(mosi_asr, module):  # noqa: F811
    trimmed = _loaders(MOSIASRDataModule(**mosi_asr))
    full = _loaders(MOSIASRDataModule(**mosi_asr, trim_text=False))
    torch.manual_seed(0)
    kwargs = {**SMALL, **(CONTEXT if module is SWRMModule else {})}
    model = module(**kwargs).eval()
    widths = []
    for split in ("train", "valid", "test"):
        for short, long in zip(trimmed[split], full[split], strict=True):
            width = short.text_ids.shape[1]
            widths.append(width)
            assert long.text_ids.shape[1] == 50 and short.ids == long.ids
            for name in ("text_ids", "text_mask", "text_segment"):
                assert torch.equal(getattr(short, name), getattr(long, name)[:, :width]), name
            assert int(long.text_mask[:, width:].sum()) == 0  # only padding was cut
            positions = short.extras["swrm_position"]
            assert bool((positions < short.text_mask.sum(1)).all())  # SWRM's positions index real tokens
            with torch.no_grad():
                a, b = model(short).flat(), model(long).flat()
            assert a.keys() == b.keys()
            for name in a:
                assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-5), f"{split}: {name} differs"
    assert max(widths) < 50  # the synthetic texts are short: every batch was trimmed


def test_pinned_batch_keeps_every_tensor():
    batch = MSABatch(
        index=torch.arange(2),
        text_ids=torch.ones(2, 3, dtype=torch.long),
        labels={"M": torch.zeros(2)},
        extras={"swrm_position": torch.tensor([1, 2])},
        ids=["a", "b"],
    )
    if not torch.cuda.is_available():  # pinning needs a CUDA runtime; the method must still exist for the loader
        assert callable(batch.pin_memory)
        pytest.skip("no CUDA device: page-locked memory is not available")
    pinned = batch.pin_memory()
    assert pinned.text_ids.is_pinned() and pinned.labels["M"].is_pinned() and pinned.extras["swrm_position"].is_pinned()
    assert pinned.ids == ["a", "b"] and pinned.text_mask is None


@pytest.mark.parametrize("variant, layers", [("sLSTM", 1), ("sGRU", 1), ("sLSTM", 2)])
def test_padded_rnn_is_the_packed_rnn(variant, layers):
    """The padded path gives the packed path's states, summary and weight gradients (float rounding apart)."""
    torch.manual_seed(0)
    enc = SequenceEncoder(5, 8, variant, num_layers=layers, out_dim=4)
    assert enc.runs_padded
    x = torch.randn(6, 40, 5)
    lengths = torch.tensor([40, 1, 17, 0, 33, 9])  # a zero length reads one (padding) step, as packing did
    states, summary = enc(x, lengths)
    packed = pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
    out, hidden = enc.rnn(packed)
    ref_states, _ = pad_packed_sequence(out, batch_first=True, total_length=40)
    ref_summary = enc.proj(hidden[0][-1] if isinstance(hidden, tuple) else hidden[-1])
    torch.testing.assert_close(states, ref_states, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(summary, ref_summary, atol=1e-6, rtol=1e-5)
    assert bool((states[1, 1:] == 0).all()) and bool((states[3, 1:] == 0).all())
    params = list(enc.parameters())
    grads = torch.autograd.grad(summary.pow(2).sum() + states.sum(), params)
    ref_grads = torch.autograd.grad(ref_summary.pow(2).sum() + ref_states.sum(), params)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, atol=1e-5, rtol=1e-4)


def test_rnns_that_must_pack_still_do():
    assert not SequenceEncoder(5, 8, "bLSTM").runs_padded  # the backward direction starts at each sample's end
    assert not SequenceEncoder(5, 8, "sLSTM", num_layers=2, dropout=0.1).runs_padded  # dropout masks on padding


def _pad_frames(batch, audio_frames: int, vision_frames: int, value: float):
    """The batch with its frames padded to a fixed length with ``value`` (as an untrimmed file would be, but
    with garbage instead of zeros: what lies behind a sample's length must not matter)."""

    def pad(x, total):
        return torch.cat([x, torch.full((x.shape[0], total - x.shape[1], x.shape[2]), value)], dim=1)

    padded = MSABatch(**{f: getattr(batch, f) for f in batch.__dataclass_fields__})
    padded.audio, padded.vision = pad(batch.audio, audio_frames), pad(batch.vision, vision_frames)
    return padded


@pytest.mark.parametrize("module", [SelfMMModule, SWRMModule], ids=["selfmm", "swrm"])
def test_trimmed_and_untrimmed_frames_give_the_same_outputs(mosi_asr, module):  # noqa: F811
    """Batches carry frames up to their longest sequence; the full file width (375/500), padded with zeros or
    with garbage, gives the same outputs."""
    loaders = _loaders(MOSIASRDataModule(**mosi_asr))
    torch.manual_seed(0)
    model = module(**{**SMALL, **(CONTEXT if module is SWRMModule else {})}).eval()
    trimmed = 0
    for split in ("train", "test"):
        for batch in loaders[split]:
            assert batch.audio.shape[1] == int(batch.audio_lengths.max())
            assert batch.vision.shape[1] == int(batch.vision_lengths.max())
            trimmed += batch.audio.shape[1] < 375 or batch.vision.shape[1] < 500
            with torch.no_grad():
                short = model(batch).flat()
                for value in (0.0, 7.0):
                    full = model(_pad_frames(batch, 375, 500, value)).flat()
                    for name in short:
                        torch.testing.assert_close(
                            short[name], full[name], atol=1e-6, rtol=1e-5, msg=f"{split}: {name}"
                        )
    assert trimmed  # some batch was shorter than the file's width


@pytest.mark.parametrize("world", [1, 2])
def test_bucketed_sampler_covers_every_sample_once_and_is_deterministic(world):
    n, size = 203, 8
    lengths = np.random.default_rng(0).integers(20, 500, n)

    def epoch(seed, e, rank):
        sampler = EpochBatchSampler(n, size, seed=seed, num_replicas=world, rank=rank, lengths=lengths, pool_batches=4)
        sampler.set_epoch(e)
        return list(sampler)

    for e in (0, 1):
        ranks = [epoch(3, e, r) for r in range(world)]
        rows = [i for batches in ranks for batch in batches for i in batch]
        assert sorted(rows) == list(range(n))  # every sample exactly once per epoch
        assert len({len(batches) for batches in ranks}) == 1  # DDP ranks step in lockstep
        assert ranks == [epoch(3, e, r) for r in range(world)]  # same (seed, epoch): same batches
    assert epoch(3, 0, 0) != epoch(3, 1, 0) and epoch(3, 0, 0) != epoch(4, 0, 0)

    # batches hold clips of similar length: far less padding than the plain shuffle
    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    plain = EpochBatchSampler(n, size, seed=3, num_replicas=world, rank=0)
    plain.set_epoch(0)
    assert padding(epoch(3, 0, 0)) < padding(list(plain)) / 2


def test_bucket_by_length_is_off_by_default_and_orders_training_batches(synthetic_mosi, cache_dir):
    def first_epoch(**kwargs):
        dm = MOSIDataModule(path=str(synthetic_mosi), batch_size=8, cache_dir=str(cache_dir), shuffle_seed=0, **kwargs)
        dm.setup("fit")
        return dm, [b.index.tolist() for b in dm.train_dataloader()]

    plain_dm, plain = first_epoch()
    assert (
        plain_dm.train_dataloader().sampler.lengths is None
        and "bucketed" not in plain_dm.train_dataloader().state_dict()
    )
    dm, bucketed = first_epoch(bucket_by_length=True)
    assert sorted(sum(plain, [])) == sorted(sum(bucketed, [])) and plain != bucketed
    state = dm.train_dataloader().state_dict()
    assert state["bucketed"] is True
    # a mid-epoch resume needs the same order: switching bucketing on or off in between is refused
    with pytest.raises(DataError, match="bucket_by_length"):
        plain_dm.train_dataloader().load_state_dict(state)
    with pytest.raises(DataError, match="bucket_by_length"):
        dm.train_dataloader().load_state_dict(plain_dm.train_dataloader().state_dict())


@pytest.mark.slow
def test_msa_fit_with_bucket_by_length(synthetic_mosi, cache_dir, tmp_path, monkeypatch, capsys):
    """As used: ``msa fit ... --data.init_args.bucket_by_length=true`` trains and its checkpoint records the
    bucketed order; a value that is not a boolean is one error line naming the key. The command runs in this
    process, through its entry point (``main``: exit status, ``msa: error:`` boundary): a subprocess would only
    add seconds of imports (real ``msa fit`` processes: tests/test_resume.py, tests/test_cli_runs.py)."""
    from types import SimpleNamespace

    from msa_lightning.cli import main

    monkeypatch.delenv("MSA_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)

    def fit(*args):
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
                    "--trainer.logger=false",
                    f"--trainer.default_root_dir={tmp_path}",
                    *args,
                ]
            )
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=exit_.value.code or 0, stdout=out, stderr=err)

    proc = fit("--data.init_args.bucket_by_length=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = next(tmp_path.rglob("last.ckpt"))
    state = torch.load(last, map_location="cpu", weights_only=False)["loops"]["fit_loop"]["state_dict"]
    assert state["combined_loader"][0]["bucketed"] is True
    bad = fit("--data.init_args.bucket_by_length=maybe")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    error = [line for line in bad.stderr.splitlines() if line.startswith("msa: error:")]
    assert len(error) == 1 and "data.init_args.bucket_by_length" in error[0], bad.stderr[-2000:]
