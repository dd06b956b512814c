"""``msa infer VIDEO... --ckpt RUN``: score new videos with a model trained on a file of ``msa features extract``.

The checkpoint carries how its training file was extracted (the DataModule's ``state_dict``: the settings of the
file's manifest; for an older checkpoint, the manifest beside its ``data.path``). Each video is extracted exactly
so (:mod:`msa_lightning.media.extractors`; OpenFace-trained models need the videos' CSVs, ``--openface DIR``),
cut to the training file's frame lengths, its text taken from ``--transcripts`` or transcribed (``--asr``),
tokenised as in training, and scored in one batch. A feature size that differs from the model's (another
extractor) is one error naming both. The table gives each clip's score and its class by the dataset's metric
family (:func:`~msa_lightning.metrics.msa.three_classes`); the CSV has the same columns.

A model trained on raw clips (TwoStepMSA on :class:`~msa_lightning.data.raw.RawMediaDataModule`, or step 2 on
:class:`~msa_lightning.papers.twostep.data.ExtractedFeaturesDataModule`) carries its DataModule's class and
decoding settings instead (its ``state_dict``): that DataModule is rebuilt and serves the new videos as it served
its clips (:meth:`~msa_lightning.data.raw.RawMediaDataModule.clips_dataset`: the same decoding, stream checks and
tokenizer; step 2 runs its step-1 extractors over them), scored in batches of its ``eval_batch_size``. The
model is rebuilt with its weights from the checkpoint alone (``inference_overrides``), so only the pretrained
architectures' folders or cached hub names must still exist; a missing one is one error naming it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from msa_lightning.batch import MSABatch
from msa_lightning.checkpoints import checkpoint_class, read_checkpoint, resolve_checkpoint
from msa_lightning.corpus.sources import fix_length
from msa_lightning.data.custom import read_features_manifest
from msa_lightning.errors import ClipError, ConfigError, DataError
from msa_lightning.experiments.lightning_cli import import_class
from msa_lightning.media.extractors import describe, extract_audio, extract_vision
from msa_lightning.metrics.msa import CLASS_NAMES, three_classes
from msa_lightning.store import Store, atomic_write


def extraction_of(state: dict, ckpt: str) -> dict:
    """The extraction settings a checkpoint carries (or its training file's manifest gives)."""
    for value in state.values():
        if isinstance(value, dict) and isinstance(value.get("extraction"), dict):
            return value["extraction"]
    data = state.get("datamodule_hyper_parameters") or {}
    path = data.get("path") if isinstance(data, dict) else None
    manifest = read_features_manifest(path) if path and Path(path).is_file() else None
    if manifest is None:
        raise ConfigError(
            f"--ckpt {ckpt}: the model was not trained on a file of `msa features extract` nor on raw clips (the "
            f"checkpoint carries neither extraction nor decoding settings"
            f"{f' and {path} has no manifest beside it' if path else ''}; a raw-clip run saved before msa infer "
            "served them carries none either: fit it again), so msa infer cannot prepare new videos the way its "
            "inputs were made"
        )
    return {k: manifest[k] for k in ("settings", "dataset", "audio_frames", "vision_frames") if k in manifest}


def raw_media_of(state: dict) -> dict | None:
    """The raw-clip DataModule a checkpoint carries (``class_path``, ``init_args``), or None."""
    for value in state.values():
        if isinstance(value, dict) and isinstance(value.get("raw_media"), dict):
            return value["raw_media"]
    return None


def load_model(path: str, state: dict):
    """The LightningModule of a checkpoint, in eval mode on the CPU, rebuilt with the class's
    ``inference_overrides`` (no weights read from anywhere but the checkpoint)."""
    from msa_lightning.nn.pretrained import PretrainedNotAvailable

    class_path = checkpoint_class(path, state)
    if class_path is None:
        raise ConfigError(f"--ckpt {path}: the checkpoint does not say which model class saved it")
    cls = import_class(class_path)
    overrides = getattr(cls, "inference_overrides", lambda hparams: {})(state.get("hyper_parameters") or {})
    try:
        return cls.load_from_checkpoint(path, map_location="cpu", **overrides).eval()
    except Exception as err:  # LightningCLI's instantiation wraps the model's own error in a ValueError
        cause = err
        while cause is not None and not isinstance(cause, PretrainedNotAvailable):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise ConfigError(
            f"--ckpt {path}: the model's architecture is built from its pretrained parts before the checkpoint's "
            f"weights replace theirs, and one is missing: {cause}"
        ) from None


def check_dims(model, settings: dict, ckpt: str) -> None:
    """The model's feature sizes must be the extractors'."""
    for modality in ("audio", "vision"):
        expected = getattr(model.hparams, f"{modality}_dim", None) if hasattr(model, "hparams") else None
        got = settings[modality]["dim"]
        if expected not in (None, "auto") and int(expected) != int(got):
            raise ConfigError(
                f"--ckpt {ckpt}: the model reads {modality} features of size {expected}, but the extraction it "
                f"records gives {describe(settings[modality])}"
            )


def video_texts(
    videos: list[Path], transcripts: dict[str, str] | None, asr: dict | None, recognizer, store: Store
) -> dict[str, str]:
    """Each video's text (by its file stem): from the transcripts TSV's lines, ASR (``asr`` settings and the loaded
    ``recognizer``), or empty."""
    ids = [v.stem for v in videos]
    if asr:
        from msa_lightning.corpus.extract import transcribe_clips

        found = transcribe_clips(dict(zip(ids, videos)), asr, store, recognizer)
        return {i: found[i]["text"] for i in ids}
    if transcripts is not None:
        return {i: transcripts[i] for i in ids}
    return {i: "" for i in ids}


def text_sources(files: list[Path], transcripts: str | None, asr: str | None, tokenizer: str | None, ckpt: str):
    """What the texts need, checked before any video is decoded: the tokenizer the model was trained with, a line
    of ``--transcripts`` per video, the ``--asr`` model (loaded once). Returns ``(lines, asr settings, recognizer)``."""
    from msa_lightning.nn.pretrained import require_tokenizer

    if tokenizer:
        require_tokenizer(tokenizer, f"--ckpt {ckpt}: the tokenizer it was trained with")
    said = None
    if transcripts:
        from msa_lightning.data.transcripts import read_transcripts

        said = read_transcripts(Path(transcripts).expanduser())
        missing = [f.stem for f in files if f.stem not in said]
        if missing:
            raise DataError(f"--transcripts {transcripts}: no line for {', '.join(missing[:5])} (ids are file stems)")
    asr_options = recognizer = None
    if asr:
        from msa_lightning.corpus.extract import asr_settings, speech_recognizer

        asr_options = asr_settings(asr)
        recognizer = speech_recognizer(asr_options)
    return said, asr_options, recognizer


def check_videos(videos: list[str]) -> list[Path]:
    """The video files, each present, their stems (the clips' ids) distinct."""
    files = [Path(v).expanduser() for v in videos]
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: video not found")
    stems = [f.stem for f in files]
    if len(set(stems)) < len(stems):
        twice = next(s for s in stems if stems.count(s) > 1)
        raise ConfigError(f"two videos named {twice!r}: a video's id is its file stem (transcripts, CSVs, the table)")
    return files


def infer(
    videos: list[str],
    ckpt: str,
    out: str | None = None,
    transcripts: str | None = None,
    asr: str | None = None,
    openface: str | None = None,
    cache_dir: str | None = None,
    echo=print,
) -> list[dict]:
    """``msa infer`` (module docstring); returns the rows ``{"clip", "score", "class"}``."""
    path = resolve_checkpoint(ckpt)
    state = read_checkpoint(path)
    raw = raw_media_of(state)
    if raw is not None:
        if openface is not None:
            raise ConfigError(
                f"--openface: the model of --ckpt {ckpt} was trained on raw clips ({raw['class_path']}), not on "
                "OpenFace features; leave --openface out"
            )
        model = load_model(path, state)
        files = check_videos(videos)
        scores, texts, family = score_raw_clips(files, raw, model, ckpt, transcripts, asr, cache_dir, echo)
    else:
        extraction = extraction_of(state, ckpt)
        model = load_model(path, state)
        check_dims(model, extraction["settings"], ckpt)
        files = check_videos(videos)
        scores, texts = score_features(files, extraction, model, ckpt, transcripts, asr, openface, cache_dir, echo)
        family = extraction["dataset"]["metric_family"]
    return report(files, scores, texts, family, out, echo)


def score_raw_clips(
    files: list[Path],
    raw: dict,
    model,
    ckpt: str,
    transcripts: str | None,
    asr: str | None,
    cache_dir: str | None,
    echo,
) -> tuple[torch.Tensor, dict[str, str], str]:
    """Scores of new videos for a model trained on raw clips: its DataModule rebuilt from the checkpoint serves
    them (decoded, checked, tokenised as its training clips; step 2 through its extractors), batch by batch."""
    from msa_lightning.store import DEFAULT_ROOT

    cls = import_class(raw["class_path"])
    root = cache_dir if cache_dir is not None else DEFAULT_ROOT
    datamodule = cls(path=str(files[0].parent), cache_dir=root, **raw["init_args"])  # no release: new videos only
    inputs = set(model.required_inputs) if getattr(model, "required_inputs", None) is not None else None
    reads_text = inputs is None or "text_ids" in inputs or "text_feats" in inputs
    store = Store(cache_dir)
    if reads_text:
        sources = text_sources(files, transcripts, asr, raw["init_args"].get("tokenizer"), ckpt)
        texts = video_texts(files, *sources, store)
    else:
        texts = {f.stem: "" for f in files}
    if reads_text and not transcripts and not asr:
        echo("no --transcripts or --asr: the texts are empty")
    dataset = datamodule.clips_dataset(files, [texts[f.stem] for f in files], inputs)
    size = datamodule.eval_batch_size
    with torch.inference_mode():
        scores = [
            model(dataset.__getitems__(list(range(i, min(i + size, len(files)))))).M.float()
            for i in range(0, len(files), size)
        ]
    return torch.cat(scores), texts, datamodule.spec.family


def score_features(
    files: list[Path],
    extraction: dict,
    model,
    ckpt: str,
    transcripts: str | None,
    asr: str | None,
    openface: str | None,
    cache_dir: str | None,
    echo,
) -> tuple[torch.Tensor, dict[str, str]]:
    """Scores of new videos for a model trained on a file of ``msa features extract``: extracted alike, one batch."""
    from msa_lightning.data.datamodule import tokenize_cached

    settings = extraction["settings"]
    if settings["vision"]["extractor"] == "openface" and openface is None:
        raise ConfigError(
            f"--ckpt {ckpt}: the model was trained on OpenFace {settings['vision']['layout']} CSVs; give the "
            "videos' CSVs with --openface DIR (DIR/<video file stem>.csv)"
        )
    # what the text needs, checked before any video is decoded
    sources = text_sources(files, transcripts, asr, settings["tokenizer"], ckpt)
    audio, vision = [], []
    for f in files:
        csv_file = Path(openface).expanduser() / f"{f.stem}.csv" if openface else None
        try:
            vision_features, *_ = extract_vision(f, settings["vision"], csv_file)
            audio_features, _ = extract_audio(f, settings["audio"])
        except ClipError as err:
            if err.reason == "wrong_columns":
                raise ConfigError(
                    f"{err}; the model was trained on {describe(settings['vision'])}: extract the new videos alike"
                ) from None
            raise
        for modality, features in (("audio", audio_features), ("vision", vision_features)):
            if features.shape[1] != settings[modality]["dim"]:
                raise ConfigError(
                    f"{f}: its {modality} features have size {features.shape[1]}, the model was trained on "
                    f"{describe(settings[modality])}"
                )
        audio.append(fix_length(audio_features, extraction["audio_frames"]))
        vision.append(fix_length(vision_features, extraction["vision_frames"]))
    store = Store(cache_dir)
    texts = video_texts(files, *sources, store)
    ids = [f.stem for f in files]
    tokens = tokenize_cached([texts[i] for i in ids], settings["tokenizer"], settings["text_max_length"], store.root)
    tokens = torch.from_numpy(np.array(tokens))  # a read-only memory map in the store
    if not transcripts and not asr:
        echo("no --transcripts or --asr: the texts are empty (the model sees only audio and vision)")
    batch = MSABatch(
        index=torch.arange(len(files)),
        text_ids=tokens[:, 0],
        text_mask=tokens[:, 1],
        text_segment=tokens[:, 2],
        audio=torch.from_numpy(np.stack([a for a, _ in audio])),
        audio_lengths=torch.tensor([n for _, n in audio]),
        vision=torch.from_numpy(np.stack([v for v, _ in vision])),
        vision_lengths=torch.tensor([n for _, n in vision]),
        ids=ids,
        raw_text=[texts[i] for i in ids],
    )
    with torch.inference_mode():
        return model(batch).M.float(), texts


def report(files: list[Path], scores: torch.Tensor, texts: dict[str, str], family: str, out: str | None, echo):
    """The table (clip, score, class by the dataset's metric family) on stdout and the same rows as a CSV."""
    classes = three_classes(scores, family)
    rows = [
        {"clip": str(f), "score": float(s), "class": CLASS_NAMES[int(c)]}
        for f, s, c in zip(files, scores.tolist(), classes.tolist())
    ]
    width = max(len(r["clip"]) for r in rows)
    echo(f"{'clip':<{width}}  {'score':>8}  class ({family} family)")
    for r in rows:
        echo(f"{r['clip']:<{width}}  {r['score']:>+8.3f}  {r['class']}")
    target = Path(out) if out else Path("infer.csv")

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["clip", "score", "class", "text"])
            for r, f in zip(rows, files):
                writer.writerow([r["clip"], f"{r['score']:.6g}", r["class"], texts[f.stem]])

    atomic_write(target, write)
    echo(f"wrote {target}")
    return rows
