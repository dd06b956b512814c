"""The extractors of `msa features extract` by name (media/extractors.py): speech models, optional backends, ASR."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from msa_lightning.errors import ConfigError
from msa_lightning.media.decode import load_audio
from msa_lightning.media.extractors import audio_settings, extract_audio, vision_settings
from msa_lightning.media.synthetic import write_synthetic_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return (
        write_synthetic_clip(root / "tone.mp4", seconds=0.5, tone=300.0),
        write_synthetic_clip(root / "silent.mp4", seconds=0.5, tone=0.0),
        write_synthetic_clip(root / "mute.mp4", seconds=0.5, audio=False),
    )


def test_a_speech_model_gives_its_last_layer_frames(clips):
    settings = audio_settings("tiny-hubert")
    assert settings == {
        "extractor": "speech_model", "model": "tiny-hubert", "sample_rate": 16_000, "dim": 32, "frame_rate": 800.0
    }  # fmt: skip
    features, status = extract_audio(clips[0], settings)
    frames = len(load_audio(clips[0], 16_000))
    for kernel, stride in ((10, 5), (3, 2), (3, 2)):  # tiny-hubert's waveform convolutions, no padding
        frames = (frames - kernel) // stride + 1
    assert status is None and features.shape == (frames, 32) and features.any()
    silent, status = extract_audio(clips[1], settings)
    assert status == "silent" and silent.shape == features.shape and not silent.any()


def test_silence_and_a_missing_sound_track_are_zero_filled(clips):
    settings = audio_settings("librosa", "zcr")
    features, status = extract_audio(clips[0], settings)
    assert status is None and features.shape[1] == 33 and features.any()
    silent, status = extract_audio(clips[1], settings)
    assert status == "silent" and silent.shape[1] == 33 and not silent.any()
    mute, status = extract_audio(clips[2], settings)
    assert status == "no_audio" and mute.shape == (1, 33)


def test_unknown_or_missing_backends_are_one_clear_error():
    if importlib.util.find_spec("opensmile") is None:
        with pytest.raises(ConfigError, match=r"pip install 'msa_lightning\[opensmile\]'"):
            audio_settings("opensmile")
    if importlib.util.find_spec("faster_whisper") is None:
        from msa_lightning.corpus.extract import asr_settings

        with pytest.raises(ConfigError, match=r"pip install 'msa_lightning\[faster-whisper\]'"):
            asr_settings("tiny", "faster-whisper")
    with pytest.raises(ConfigError, match="expected 'dlib' .* or 'openface:DIR'"):
        vision_settings("mediapipe")
    with pytest.raises(ConfigError, match="--audio librossa: expected librosa, opensmile or a Hugging Face speech"):
        audio_settings("librossa")


def test_asr_transcripts_are_cached_per_clip(clips, tmp_path):
    from msa_lightning.corpus.extract import asr_settings, transcribe_clips
    from msa_lightning.store import Store

    store = Store(tmp_path)
    videos = {"tone": clips[0], "mute": clips[2]}
    found = transcribe_clips(videos, asr_settings("tiny-whisper", max_new_tokens=4), store)
    texts = {i: meta["text"] for i, meta in found.items()}
    assert set(texts) == {"tone", "mute"} and all(isinstance(t, str) and "\n" not in t for t in texts.values())
    assert len(list(store.entries("clip_transcript"))) == 2
    assert (
        transcribe_clips(videos, asr_settings("tiny-whisper", max_new_tokens=4), store) == found
    )  # read back, not transcribed again
    assert np.all([e.meta["text"] in texts.values() for e in store.entries("clip_transcript")])


def test_opensmile_gives_the_25_egemaps_descriptors_at_100_frames_per_second(clips):
    pytest.importorskip("opensmile")  # the optional extra msa_lightning[opensmile]
    settings = audio_settings("opensmile")
    assert settings["dim"] == 25
    features, status = extract_audio(clips[0], settings)
    assert status is None and features.shape[1] == 25 and abs(len(features) - 50) <= 4 and np.isfinite(features).all()
    silent, status = extract_audio(clips[1], settings)
    assert status == "silent" and silent.shape == features.shape and not silent.any()


def test_a_clip_longer_than_whispers_window_is_heard_whole(clips, tmp_path):
    """A clip longer than the window is cut into equal windows: every sample is heard once, and each window's word
    times are shifted by its start (the first 30 s only would drop words silently)."""
    from msa_lightning.corpus.extract import asr_settings, transcribe_clips
    from msa_lightning.store import Store

    class Recorder:  # a recognizer whose window is 0.2 s: the 0.5 s clip needs three windows
        sample_rate, window = 16_000, 3_200
        heard: list[int] = []

        def words(self, waves):
            self.heard += [len(w) for w in waves]
            return [[(f"w{len(w)}", 0.0, 0.1)] for w in waves]

    recorder = Recorder()
    found = transcribe_clips({"tone": clips[0]}, asr_settings("tiny-whisper", words=True), Store(tmp_path), recorder)
    assert len(recorder.heard) == 3 and sum(recorder.heard) == len(load_audio(clips[0], 16_000))
    starts = [round(s, 3) for _, s, _ in found["tone"]["words"]]
    assert starts == [0.0, round(recorder.heard[0] / 16_000, 3), round(sum(recorder.heard[:2]) / 16_000, 3)]
    assert found["tone"]["text"] == " ".join(f"w{n}" for n in recorder.heard)
