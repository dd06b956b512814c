"""Raw-media DataModule (data/raw_media.py) on tiny mp4 files written here with PyAV."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from msa_lightning.data import raw as raw_media  # noqa: E402
from msa_lightning.data.raw import RawMediaDataModule
from msa_lightning.errors import ConfigError, DataError  # noqa: E402
from msa_lightning.media.decode import (
    decode_clip,  # noqa: E402
    load_crop,
)
from msa_lightning.media.synthetic import SYNTHETIC_ROWS, make_synthetic_raw, write_synthetic_clip

# the tiny release the tests write (moved into the package for notebooks and benchmarks)
write_clip = write_synthetic_clip
ROWS = SYNTHETIC_ROWS


def make_dataset(root: Path, unimodal: bool = True) -> Path:
    return make_synthetic_raw(root, unimodal=unimodal)


@pytest.fixture()
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "sims_raw")


def _dm(path: Path, cache: Path, **kwargs) -> RawMediaDataModule:
    kwargs.setdefault("size", 16)
    return RawMediaDataModule(
        str(path),
        dataset="simsv2",
        batch_size=2,
        tokenizer="tiny-bert",
        text_max_length=12,
        cache_dir=str(cache),
        **kwargs,
    )


def test_decode_samples_frames_at_10_fps_and_resamples_audio(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", seconds=1.0, fps=25, tone=440.0)
    frames, audio = decode_clip(path, sample_rate=16_000, fps=10, size=16)
    assert frames.dtype == np.uint8 and frames.shape == (10, 16, 16, 3)
    # output k shows the last source frame at or before k / 10 s: source index floor(2.5 k), brightness 10x that
    expected = 10 * np.floor(2.5 * np.arange(10))
    assert np.abs(frames[:, 8, 8, 0].astype(float) - expected).max() <= 4
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - 16_000) < 800  # codec priming
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * 16_000 / len(audio)
    assert abs(peak - 440) < 5
    short = decode_clip(path, fps=10, size=16, max_seconds=0.5)
    assert len(short[0]) == 5 and len(short[1]) == 8_000


def test_batches_from_raw_clips_decoded_once(dataset, tmp_path, monkeypatch):
    calls = []
    real = decode_clip
    monkeypatch.setattr(raw_media, "decode_clip", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    dm = _dm(dataset, tmp_path / "cache")
    dm.setup("fit")
    assert len(calls) == len(ROWS)
    assert dm.num_train_samples() == 5 and dm.data_facts().frame_size == 16
    np.testing.assert_allclose(dm.train_labels("T"), [0.6, -0.8, 0.0, -1.0, 0.8], atol=1e-6)
    batch = next(iter(dm.val_dataloader()))
    assert batch.ids == ["vidC_2", "vidD_1"] and batch.raw_text == ["not good", "so funny"]
    assert batch.frames.dtype == torch.uint8 and batch.frames.shape == (2, 9, 3, 16, 16)
    assert batch.frame_mask.sum(1).tolist() == [6, 9]
    assert batch.waveform.dtype == torch.float32 and batch.waveform_mask.dtype == torch.bool
    lengths = batch.waveform_mask.sum(1)
    assert abs(lengths[0].item() - 0.6 * 16_000) < 800 and lengths[1] == batch.waveform.shape[1]
    assert (batch.waveform[0, lengths[0] :] == 0).all() and (batch.frames[0, 6:] == 0).all()
    assert set(batch.labels) == {"M", "T", "A", "V"} and batch.labels["V"].tolist() == pytest.approx([-0.2, 0.0])
    assert batch.text_ids.shape == (2, 12) and batch.text_mask[:, 0].tolist() == [1, 1]
    train = [b for b in dm.train_dataloader()]
    assert sorted(i for b in train for i in b.ids) == sorted(f"{r[0]}_{r[1]}" for r in ROWS if r[7] == "train")
    assert min(len(b) for b in train) >= 2  # no batch of one

    # a second DataModule (a later run, another rank) reads the store: nothing is decoded again
    again = _dm(dataset, tmp_path / "cache", inputs=["frames", "frame_mask"])
    again.setup("fit")
    assert len(calls) == len(ROWS)
    b2 = next(iter(again.val_dataloader()))
    assert torch.equal(b2.frames, batch.frames) and b2.waveform is None and b2.text_ids is None


def test_corrupt_clip_is_named_or_skipped_and_reported(dataset, tmp_path, caplog):
    (dataset / "Raw" / "vidB" / "1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with pytest.raises(DataError, match=r"clip vidB_1: .*vidB/1.mp4: cannot decode"):
        _dm(dataset, tmp_path / "cache").setup("fit")
    dm = _dm(dataset, tmp_path / "cache", on_error="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert list(dm.skipped) == ["vidB_1"] and "cannot decode" in dm.skipped["vidB_1"]
    assert "1 clips skipped: vidB_1" in caplog.text
    assert dm.num_train_samples() == 4
    assert "vidB_1" not in [i for b in dm.train_dataloader() for i in b.ids]


def test_missing_streams_and_unmatched_files_are_reported(dataset, tmp_path):
    write_clip(dataset / "Raw" / "vidA" / "2.mp4", seconds=0.6, audio=False)
    with pytest.raises(DataError, match="clip vidA_2: .*has no audio stream"):
        _dm(dataset, tmp_path / "c1").setup("fit")
    write_clip(dataset / "Raw" / "vidA" / "2.mp4", seconds=0.6)
    (dataset / "Raw" / "vidE" / "1.mp4").unlink()
    with pytest.raises(DataError, match=r"clip vidE_1: label row without a file"):
        _dm(dataset, tmp_path / "c2").setup("fit")
    write_clip(dataset / "Raw" / "vidE" / "1.mp4", seconds=0.6)
    write_clip(dataset / "Raw" / "vidZ" / "9.mp4", seconds=0.5)
    with pytest.raises(DataError, match=r"clip vidZ_9: file without a label row"):
        _dm(dataset, tmp_path / "c3").setup("fit")
    dm = _dm(dataset, tmp_path / "c3", on_error="skip")
    dm.setup("fit")
    assert list(dm.skipped) == ["vidZ_9"] and dm.num_train_samples() == 5


def test_mosi_release_has_only_the_multimodal_label(tmp_path):
    root = tmp_path / "mosi_raw"
    root.mkdir()
    make_dataset(root, unimodal=False)
    dm = RawMediaDataModule(
        str(root),
        dataset="mosi",
        batch_size=2,
        tokenizer="tiny-bert",
        size=16,
        cache_dir=str(tmp_path / "cache"),
        inputs=["waveform", "waveform_mask"],
    )
    dm.setup("fit")
    assert set(next(iter(dm.test_dataloader())).labels) == {"M"}
    with pytest.raises(DataError, match="split 'train' has no labels 'T'.*label_T"):
        dm.train_labels("T")


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.init_args.on_error"):
        RawMediaDataModule(str(tmp_path), on_error="ignore")
    with pytest.raises(ConfigError, match="data.init_args.crop='no_such_module:crop'"):
        load_crop("no_such_module:crop")
    with pytest.raises(DataError, match="label.csv: label file not found"):
        RawMediaDataModule(str(tmp_path), tokenizer="tiny-bert", cache_dir=str(tmp_path / "c")).setup("fit")


def test_crop_hook_runs_before_the_resize(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", seconds=0.5, fps=25)
    seen = []

    def top_left(frame: np.ndarray) -> np.ndarray:
        seen.append(frame.shape)
        return frame[:12, :12]

    frames, _ = decode_clip(path, fps=10, size=8, crop=top_left)
    assert frames.shape == (5, 8, 8, 3)
    assert seen and all(shape == (24, 32, 3) for shape in seen)  # the hook sees full-resolution RGB frames


def write_image(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 20, 20, "rgb24"
        image = av.VideoFrame.from_ndarray(np.full((20, 20, 3), value, np.uint8), format="rgb24")
        for packet in list(stream.encode(image)) + list(stream.encode()):
            out.mux(packet)
    return path


def test_frames_from_a_folder_of_face_crops(dataset, tmp_path):
    """Frames written by an external face tracker (25 fps images) replace the video stream; audio
    still comes from the mp4."""
    folder = tmp_path / "faces"
    for i in range(12):
        write_image(folder / f"{i:06d}.png", 10 * i)
    frames, audio = decode_clip(dataset / "Raw" / "vidA" / "1.mp4", fps=10, size=8, frames_folder=folder, frames_fps=25)
    # 12 images = 0.48 s -> 5 outputs showing images floor(2.5 k)
    assert frames[:, 0, 0, 0].tolist() == [0, 20, 50, 70, 100] and frames.shape == (5, 8, 8, 3)
    assert abs(len(audio) - 16_000) < 800

    for video, clip, *_ in ROWS:
        for i in range(3):
            write_image(dataset / "Faces" / video / clip / f"{i:03d}.png", 100 + 50 * i)
    dm = _dm(dataset, tmp_path / "cache", frames_dir="Faces", frames_fps=10)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch.frames.shape == (2, 3, 3, 16, 16) and batch.frames[:, :, 0, 0, 0].tolist() == [[100, 150, 200]] * 2
    (dataset / "Faces" / "vidE" / "1" / "000.png").unlink()
    (dataset / "Faces" / "vidE" / "1" / "001.png").unlink()
    (dataset / "Faces" / "vidE" / "1" / "002.png").unlink()
    (dataset / "Faces" / "vidE" / "1").rmdir()
    with pytest.raises(DataError, match="clip vidE_1: .*Faces/vidE/1: frame folder not found"):
        _dm(dataset, tmp_path / "cache", frames_dir="Faces").setup("fit")


def test_zero_length_clip_is_reported(dataset, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.mp4: cannot decode the clip"):
        decode_clip(empty, size=8)
    (tmp_path / "no_frames").mkdir()
    with pytest.raises(DataError, match=r"1.mp4: the clip is empty \(0 frames"):
        decode_clip(dataset / "Raw" / "vidA" / "1.mp4", size=8, frames_folder=tmp_path / "no_frames")


def test_raw_batch_through_the_extractors_and_mult(dataset, tmp_path):
    """The pieces of TwoStepMSA fit together: raw batch -> BERT / HuBERT / Video Swin -> MulT, with
    each modality's padding carried as a mask."""
    from msa_lightning.nn.audio_encoder import AudioEncoder
    from msa_lightning.nn.mult import MulT
    from msa_lightning.nn.text_encoder import TextEncoder
    from msa_lightning.nn.video_swin import VideoSwinEncoder

    dm = _dm(dataset, tmp_path / "cache", size=32)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    torch.manual_seed(0)
    text, audio, video = (
        TextEncoder("tiny-bert", finetune=False),
        AudioEncoder("tiny-hubert", finetune=False),
        VideoSwinEncoder("tiny-swin3d", finetune=False),
    )
    fusion = MulT((text.hidden_size, audio.hidden_size, video.hidden_size), dim=8, num_heads=2, layers=1).eval()
    with torch.no_grad():
        t_seq = text(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state
        a_seq, a_mask, a_pooled = audio(batch.waveform, batch.waveform_mask)
        v_seq, v_mask, v_pooled = video(batch.frames, batch.frame_mask)
        out = fusion(t_seq, a_seq, v_seq, batch.text_mask.bool(), a_mask, v_mask)
    assert v_mask.sum(1).tolist() == [3, 5]  # 6 and 9 frames at 10 fps -> ceil(T / 2) Swin time steps
    assert a_mask.sum(1).tolist() == audio.frame_lengths(batch.waveform_mask.sum(1)).tolist()
    assert a_pooled.shape == (2, 32) and v_pooled.shape == (2, video.hidden_size)
    assert out["fused"].shape == (2, 48) and torch.isfinite(out["fused"]).all()


def _counting(dm) -> dict[str, int]:
    """Count the clips each extractor of ``dm`` sees."""
    counts = {"text": 0, "audio": 0, "vision": 0}
    for modality, module in dm.extractors().items():
        module.register_forward_hook(lambda mod, args, out, m=modality: counts.__setitem__(m, counts[m] + len(args[0])))
    return counts


#: step 2 on the tiny extractors as built, named explicitly (a missing entry is an error)
ALL_PRETRAINED = {"text": "pretrained", "audio": "pretrained", "vision": "pretrained"}


def _feature_dm(dataset, cache, step1_checkpoints=None, **kwargs):
    from msa_lightning.papers.twostep.data import ExtractedFeaturesDataModule

    return ExtractedFeaturesDataModule(
        str(dataset),
        step1_checkpoints={**ALL_PRETRAINED, **(step1_checkpoints or {})},
        text_model="tiny-bert",
        audio_model="tiny-hubert",
        video_arch="tiny-swin3d",
        dataset="simsv2",
        batch_size=2,
        text_max_length=12,
        size=16,
        cache_dir=str(cache),
        extract_batch_size=4,
        **kwargs,
    )


def test_step2_extracts_each_clip_once_and_serves_feature_batches(dataset, tmp_path):
    from msa_lightning.nn.audio_encoder import AudioEncoder
    from msa_lightning.nn.mult import MulT

    dm = _feature_dm(dataset, tmp_path / "cache")
    counts = _counting(dm)
    dm.setup("fit")
    for epoch in range(3):  # several epochs: the extractors are not called again
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        assert sorted(i for b in loader for i in b.ids) == sorted(dm.splits["train"]["ids"])
    list(dm.val_dataloader())
    assert counts == {"text": len(ROWS), "audio": len(ROWS), "vision": len(ROWS)}
    facts = dm.data_facts()
    assert (facts.audio_dim, facts.vision_dim, facts.text_dim) == (32, 128, 32)

    batch = next(iter(dm.val_dataloader()))
    assert batch.text_feats.shape == (2, 12, 32) and batch.extras["audio_pooled"].shape == (2, 32)
    assert batch.text_ids.shape == (2, 12) and torch.equal(batch.text_mask, (batch.text_ids != 0).long())
    assert batch.vision_lengths.tolist() == [3, 5] and batch.vision.shape == (2, 5, 128)
    # the stored rows are the extractor's outputs on the raw clips, valid frames only
    raw = _dm(dataset, tmp_path / "cache")
    raw.setup("fit")
    raw_batch = next(iter(raw.val_dataloader()))
    with torch.no_grad():
        torch.manual_seed(0)
        audio = dm.extractors()["audio"]
        sequence, mask, pooled = audio(raw_batch.waveform, raw_batch.waveform_mask)
    assert batch.audio_lengths.tolist() == mask.sum(1).tolist()
    n = int(mask[0].sum())
    torch.testing.assert_close(batch.audio[0, :n], sequence[0, :n], rtol=0, atol=1e-5)
    assert (batch.audio[0, n:] == 0).all()
    torch.testing.assert_close(batch.extras["audio_pooled"], pooled, rtol=0, atol=1e-5)
    # a fusion network reads the batch like any feature-file batch
    fusion = MulT((facts.text_dim, facts.audio_dim, facts.vision_dim), dim=8, num_heads=2, layers=1).eval()
    with torch.no_grad():
        assert torch.isfinite(fusion.forward_batch(batch)["fused"]).all()

    # another run reads the store: no extractor call at all
    again = _feature_dm(dataset, tmp_path / "cache")
    counts_again = _counting(again)
    again.setup("fit")
    assert counts_again == {"text": 0, "audio": 0, "vision": 0}

    # step-1 weights (any prefix in a Lightning checkpoint) change the fingerprint: extracted anew
    torch.manual_seed(1)
    tuned = AudioEncoder("tiny-hubert", finetune=False)
    ckpt = tmp_path / "step1_audio.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"net.audio_encoder.{k}": v for k, v in tuned.state_dict().items()}}, ckpt)
    stepped = _feature_dm(dataset, tmp_path / "cache", step1_checkpoints={"audio": str(ckpt)})
    counts_stepped = _counting(stepped)
    stepped.setup("fit")
    assert counts_stepped["audio"] == len(ROWS)
    assert not torch.allclose(next(iter(stepped.val_dataloader())).extras["audio_pooled"], pooled)


def test_step1_checkpoint_without_the_extractor_is_refused(dataset, tmp_path):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.head.weight": torch.zeros(1, 4)}}, ckpt)
    dm = _feature_dm(dataset, tmp_path / "cache", step1_checkpoints={"vision": str(ckpt)})
    with pytest.raises(
        ConfigError,
        match=r"step1_checkpoints.vision: checkpoint .*other.ckpt.* holds no complete "
        r"copies of the VideoSwinEncoder weights",
    ):
        dm.setup("fit")
    with pytest.raises(ConfigError, match="step1_checkpoints: unknown modalities"):
        _feature_dm(dataset, tmp_path / "cache", step1_checkpoints={"face": str(ckpt)})


def test_parallel_first_pass_gives_the_same_clips_and_errors(dataset, tmp_path):
    sequential = _dm(dataset, tmp_path / "seq")
    sequential.setup("fit")
    (dataset / "Raw" / "vidD" / "1.mp4").write_bytes(b"garbage")
    parallel = _dm(dataset, tmp_path / "par", decode_workers=2, on_error="skip")
    parallel.setup("fit")
    assert list(parallel.skipped) == ["vidD_1"] and "cannot decode" in parallel.skipped["vidD_1"]
    for a, b in zip(parallel.splits["train"]["entries"], sequential.splits["train"]["entries"]):
        assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["audio"], b["audio"])
    with pytest.raises(DataError, match="clip vidD_1: .*cannot decode"):
        _dm(dataset, tmp_path / "par", decode_workers=2).setup("fit")


def test_a_feature_model_trains_on_step2_batches(dataset, tmp_path):
    """The step-2 batches are ordinary feature batches: an existing fusion model (TFN) fits and tests
    on them with the data sizes the DataModule reports."""
    import lightning as L

    from msa_lightning.papers.baselines.module import TFNModule

    dm = _feature_dm(dataset, tmp_path / "cache")
    facts = dm.data_facts()
    model = TFNModule(
        audio_dim=facts.audio_dim,
        vision_dim=facts.vision_dim,
        text_encoder="bag",
        metric_family=facts.metric_family,
    )
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert np.isfinite(result["test/mae"]) and "test/acc2_weak" in result  # CH-SIMS v2 metrics


# ------------------------------------------------------------------------------------------- label.csv checks
def _edit_labels(dataset: Path, edit) -> Path:
    """Rewrite ``label.csv`` as ``edit(lines)`` (the lines without their CRLF ends) returns them."""
    path = dataset / "label.csv"
    lines = path.read_bytes().decode("utf-8").split("\r\n")[:-1]
    path.write_bytes(("\r\n".join(edit(lines)) + "\r\n").encode("utf-8"))
    return path


def _set(lines: list[str], clip: str, column: str, value: str) -> list[str]:
    header = lines[0].split(",")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if f"{cells[0]}_{cells[1]}" == clip:
            cells[header.index(column)] = value
        out.append(",".join(cells))
    return out


def _copy_as(lines: list[str], clip: str, mode: str) -> list[str]:
    row = next(line for line in lines[1:] if line.startswith(clip.replace("_", ",") + ","))
    return [*lines, row.rsplit(",", 1)[0] + "," + mode]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda ls: _set(ls, "vidB_2", "label_T", "nan"),
            r"label.csv, line 5: clip vidB_2 \(split 'train'\): column 'label_T': "
            r"expected a finite number, found 'nan'",
        ),
        (
            lambda ls: _set(ls, "vidE_1", "label", "-inf"),
            r"line 10: clip vidE_1 \(split 'test'\): column 'label': expected a finite number, found '-inf'",
        ),
        (
            lambda ls: _set(ls, "vidA_1", "label_V", ""),
            r"line 2: clip vidA_1 \(split 'train'\): column 'label_V': expected a finite number, found ''",
        ),
        (
            lambda ls: _copy_as(ls, "vidC_1", "train"),
            r"line 11: clip vidC_1 is listed again \(first on line 6\); list each clip once",
        ),
        (
            lambda ls: _copy_as(ls, "vidD_2", "train"),
            r"line 11: clip vidD_2 is listed again \(first on line 9\) \(under mode 'test' there and 'train' here: "
            r"an evaluation clip would also be trained on\)",
        ),
    ],
    ids=["nan", "inf", "empty", "twice", "two-modes"],
)
def test_label_file_problems_name_the_line_and_clip(dataset, tmp_path, edit, message):
    _edit_labels(dataset, edit)
    for on_error in ("raise", "skip"):  # a bad label file is never skipped over
        with pytest.raises(DataError, match=message):
            _dm(dataset, tmp_path / "cache", on_error=on_error).prepare_data()


def test_label_file_with_a_bom_and_a_byte_that_is_not_utf8(dataset, tmp_path):
    path = dataset / "label.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # Excel's "CSV UTF-8" (and CRLF, as csv writes)
    dm = _dm(dataset, tmp_path / "cache", inputs=["waveform", "waveform_mask"])
    dm.setup("fit")
    assert dm.splits["train"]["ids"][0] == "vidA_1" and dm.num_train_samples() == 5
    path.write_bytes(path.read_bytes().replace(b"great fun", b"caf\xe9 fun"))  # Latin-1
    with pytest.raises(DataError, match=r"label.csv, line 6: the label file is not UTF-8 \(byte 0xe9 at column 11\)"):
        _dm(dataset, tmp_path / "cache").prepare_data()


def test_msa_fit_refuses_bad_label_files(dataset, tmp_path, capsys):
    """`msa fit` on a raw release: a NaN label (the real command), a test clip also listed for training and a
    Latin-1 byte (its entry point in-process) are one `msa: error:` line each, before any clip is decoded."""
    from conftest import assert_one_line_error, msa_in_process, run_msa

    args = [
        "fit",
        "--model=TwoStepMSA",
        "--model.init_args.text_model=tiny-bert",
        "--model.init_args.audio_model=tiny-hubert",
        "--model.init_args.video_arch=tiny-swin3d",
        "--data=RawMediaDataModule",
        f"--data.init_args.path={dataset}",
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.size=16",
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    original = (dataset / "label.csv").read_bytes()
    label = str(dataset / "label.csv")
    _edit_labels(dataset, lambda ls: _set(ls, "vidB_2", "label", "NaN"))
    assert_one_line_error(
        run_msa(*args, cache=tmp_path / "cache"),
        label,
        "line 5: clip vidB_2 (split 'train')",
        "column 'label': expected a finite number, found 'NaN'",
    )
    (dataset / "label.csv").write_bytes(original)
    _edit_labels(dataset, lambda ls: _copy_as(ls, "vidE_1", "train"))
    in_process_env = {"MSA_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    assert_one_line_error(
        msa_in_process(capsys, *args, env=in_process_env),
        label,
        "line 11: clip vidE_1 is listed again",
        "under mode 'test' there and 'train' here",
    )
    (dataset / "label.csv").write_bytes(original.replace(b"so funny", b"s\xf6 funny"))
    assert_one_line_error(
        msa_in_process(capsys, *args, env=in_process_env), label, "line 8: the label file is not UTF-8"
    )
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("raw_media*"))
