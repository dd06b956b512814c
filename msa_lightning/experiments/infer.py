"""``msa infer VIDEO... --ckpt RUN``: score new videos with a model trained on a file of ``msa features extract``.

The checkpoint carries how its training file was extracted (the DataModule's ``state_dict``: the settings of the
file's manifest; for an older checkpoint, the manifest beside its ``data.path``). Each video is extracted exactly
so (:mod:`msa_lightning.media.extractors`; OpenFace-trained models need the videos' CSVs, ``--openface DIR``),
cut to the training file's frame lengths, its text taken from ``--transcripts`` or transcribed (``--asr``),
tokenised as in training, and scored in one batch. A feature size that differs from the model's (another
extractor) is one error naming both. The table gives each clip's score and its class by the dataset's metric
family (:func:`~msa_lightning.metrics.msa.three_classes`); the CSV has the same columns.
"""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import numpy as np
import torch

from msa_lightning.batch import MSABatch
from msa_lightning.checkpoints import checkpoint_class, read_checkpoint, resolve_checkpoint
from msa_lightning.corpus.sources import fix_length
from msa_lightning.data.custom import read_features_manifest
from msa_lightning.errors import ClipError, ConfigError, DataError
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
            f"--ckpt {ckpt}: the model was not trained on a file of `msa features extract` (the checkpoint carries "
            f"no extraction settings{f' and {path} has no manifest beside it' if path else ''}), so msa infer "
            "cannot extract new videos the way its features were made"
        )
    return {k: manifest[k] for k in ("settings", "dataset", "audio_frames", "vision_frames") if k in manifest}


def load_model(path: str, state: dict):
    """The LightningModule of a checkpoint, in eval mode on the CPU."""
    class_path = checkpoint_class(path, state)
    if class_path is None:
        raise ConfigError(f"--ckpt {path}: the checkpoint does not say which model class saved it")
    module, _, name = class_path.rpartition(".")
    if not module:
        module = "msa_lightning.papers.registry"
    cls = getattr(importlib.import_module(module), name)
    return cls.load_from_checkpoint(path, map_location="cpu").eval()


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


def _read_transcripts(path: str, ids: list[str]) -> dict[str, str]:
    from msa_lightning.data.transcripts import read_transcripts

    texts = read_transcripts(Path(path).expanduser())
    missing = [i for i in ids if i not in texts]
    if missing:
        raise DataError(f"--transcripts {path}: no line for {', '.join(missing[:5])} (ids are file stems)")
    return texts


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
    from msa_lightning.data.datamodule import tokenize_cached
    from msa_lightning.nn.pretrained import require_tokenizer

    path = resolve_checkpoint(ckpt)
    state = read_checkpoint(path)
    extraction = extraction_of(state, ckpt)
    settings, family = extraction["settings"], extraction["dataset"]["metric_family"]
    model = load_model(path, state)
    check_dims(model, settings, ckpt)
    files = [Path(v).expanduser() for v in videos]
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: video not found")
    stems = [f.stem for f in files]
    if len(set(stems)) < len(stems):
        twice = next(s for s in stems if stems.count(s) > 1)
        raise ConfigError(f"two videos named {twice!r}: a video's id is its file stem (transcripts, CSVs, the table)")
    if settings["vision"]["extractor"] == "openface" and openface is None:
        raise ConfigError(
            f"--ckpt {ckpt}: the model was trained on OpenFace {settings['vision']['layout']} CSVs; give the "
            "videos' CSVs with --openface DIR (DIR/<video file stem>.csv)"
        )
    # what the text needs, checked before any video is decoded
    require_tokenizer(settings["tokenizer"], f"--ckpt {ckpt}: the tokenizer it was trained with")
    said = _read_transcripts(transcripts, stems) if transcripts else None
    asr_options = recognizer = None
    if asr:
        from msa_lightning.corpus.extract import asr_settings, speech_recognizer

        asr_options = asr_settings(asr)
        recognizer = speech_recognizer(asr_options)
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
    texts = video_texts(files, said, asr_options, recognizer, store)
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
        scores = model(batch).M.float()
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
            for r, i in zip(rows, ids):
                writer.writerow([r["clip"], f"{r['score']:.6g}", r["class"], texts[i]])

    atomic_write(target, write)
    echo(f"wrote {target}")
    return rows
