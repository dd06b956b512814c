"""``msa pretrain-data``: SKESL's unlabeled video corpus as streaming shards.

``msa pretrain-data build`` joins ASR transcripts (``id<TAB>text``), audio files (or ready ``[T, 33]``
``.npy``) and OpenFace 2.x CSVs (or ready ``[T, 709]`` ``.npy``) by clip id (the path under each folder
without suffix; VoxCeleb: ``idNNNNN/<youtube id>/<clip>``), extracts the features of Qian et al. (Findings of
ACL 2023), Section 4.2, in worker processes, and writes ``litdata`` shards that ``StreamingDataset`` reads
under multi-node DDP::

    OUT/manifest.json   settings, input fingerprints, counts, every left-out clip by id and reason, summary
    OUT/train/, OUT/valid/   litdata chunks + index.json; items {"id", "text", "audio" [Ta, 33], "vision" [Tv, 709]}
    OUT/parts/          the extracted features, part by part, while the build runs (kept with --keep-parts)

How a build goes:

1. **Join** (:func:`~msa_lightning.corpus.sources.join_sources`): a clip missing from one source or with an
   empty transcript is left out and recorded, by id and reason.
2. **Features, part by part**: the complete clips, in an order given by a hash of each id (so a shard chunk
   mixes speakers; sorted VoxCeleb ids would group them), are cut into parts of ``--clips-per-part``
   clips, extracted by ``--workers`` processes (``--start-method``: ``forkserver`` by default, ``spawn`` works
   too: a task is a module-level function of picklable arguments). Each part's features are extracted
   (:func:`~msa_lightning.corpus.sources.extract_clip`; a clip
   whose files fail is left out with its :class:`~msa_lightning.errors.ClipError` reason) and
   written atomically as ``OUT/parts/part-NNNNNN-<key>.npz``. The key hashes the feature settings and each
   clip's id, text and files (name, size, modification time), so a re-run -- after a crash, a kill, or a
   build stopped by too many bad clips -- reuses every finished part and extracts only the others.
3. **Check**: the build fails (one ``msa: error:`` line) only when the share of left-out clips exceeds
   ``--max-bad-share``; the manifest (``"finished": false``) still lists them.
4. **Shards**: clips go to ``valid`` when a hash of their id falls below ``--valid-share`` (the same rule as
   :class:`~msa_lightning.papers.skesl.data.SKESLCorpusDataModule`, so the split does not move when clips are
   added); each split is written to a temporary folder and renamed into place, then the manifest says
   ``"finished": true``.

Items are cut to at most ``audio_frames`` / ``vision_frames`` frames but not padded: the reader
(:mod:`msa_lightning.corpus.stream`) pads, makes the masks, and masks the sentiment word per clip id,
so the shards do not depend on a tokenizer. OpenFace frames with ``success == 0`` are zero rows.

Settings and where they come from: the 33-d audio features (log F0 + 20 MFCC + 12 CQT chroma) and the
709-d OpenFace features are the paper's Section 4.2; ``--f0 pyin`` is the paper's log F0, ``--f0 zcr`` the
zero-crossing rate the authors' released scripts put there; ``--sample-rate 22050``, ``--hop-length 512``,
``--audio-frames 400`` and ``--vision-frames 55`` are the authors' released feature scripts (the paper gives
no lengths). ``--valid-share`` and ``--max-bad-share`` are the suite's (the paper has no pretraining validation
split and does not say how unusable clips were handled).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msa_lightning.corpus.format import (
    FORMAT,
    MANIFEST,
    PART_FORMAT,
    SHARD_SPLITS,
    VALID_SALT,
    read_build_manifest,
    write_manifest,
)
from msa_lightning.corpus.sources import (
    AUDIO_SUFFIXES,
    VISUAL_SUFFIXES,
    CorpusReport,
    bad_share_error,
    extract_clip,
    index_files,
    join_sources,
    listing_fingerprint,
)
from msa_lightning.data.sampling import id_draws
from msa_lightning.errors import ClipError, ConfigError, DataError, MSAError
from msa_lightning.media.acoustic import AUDIO_DIM
from msa_lightning.media.openface import VISION_DIM
from msa_lightning.media.synthetic import add_bad_clips, make_synthetic_corpus
from msa_lightning.store import atomic_write, canonical_json, content_hash

log = logging.getLogger(__name__)

START_METHODS = tuple(m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods())
DEFAULT_START = START_METHODS[0]

#: settings that shape the shards: a finished OUT built with other values is not overwritten without --force
SETTING_NAMES = ("audio_frames", "vision_frames", "sample_rate", "hop_length", "f0", "valid_share", "chunk_bytes")


# ---------------------------------------------------------------------------------------------- parts
def _file_stamp(path: Path) -> list:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def part_key(clips: list[tuple[str, str, str, str]], features: dict) -> str:
    """The content key of one part: the feature settings and each clip's id, text and files (name, size,
    modification time; not their bytes, which would mean reading a million media files twice)."""
    rows = [[clip, text, _file_stamp(Path(a)), _file_stamp(Path(v))] for clip, text, a, v in clips]
    text = canonical_json({"format": PART_FORMAT, "features": features, "clips": rows})
    return hashlib.sha256(text.encode()).hexdigest()


def extract_part(path: str, clips: list[tuple[str, str, str, str]], features: dict) -> tuple[int, int]:
    """Extract the features of ``clips`` (``(id, text, audio file, visual file)``), cut them to the frame limits,
    and write them atomically to ``path`` (an ``.npz``): ``ids``, ``texts``, ``audio`` / ``vision`` (every clip's
    frames concatenated) with ``audio_lengths`` / ``vision_lengths``, and the left-out clips as ``bad_ids``,
    ``bad_reasons``, ``bad_details``. Returns ``(used, left out)``. Runs in a worker process (spawn-safe: a
    plain function of picklable arguments)."""
    ids, texts, audio, vision, bad = [], [], [], [], []
    for clip, text, audio_path, visual_path in clips:
        try:
            c = extract_clip(
                clip, text, audio_path, visual_path, features["sample_rate"], features["hop_length"], features["f0"]
            )
        except ClipError as err:
            bad.append((clip, err.reason, str(err)))
            continue
        except Exception as err:  # a decoder or librosa failure on one odd file must not stop a million-clip build
            bad.append((clip, "extraction_failed", f"{audio_path}, {visual_path}: {type(err).__name__}: {err}"[:500]))
            continue
        ids.append(clip)
        texts.append(text)
        audio.append(c.audio[: features["audio_frames"]])
        vision.append(c.vision[: features["vision_frames"]])
    arrays = {
        "ids": np.array(ids, dtype=str),
        "texts": np.array(texts, dtype=str),
        "audio": np.concatenate(audio) if audio else np.zeros((0, AUDIO_DIM), np.float32),
        "audio_lengths": np.array([len(a) for a in audio], dtype=np.int64),
        "vision": np.concatenate(vision) if vision else np.zeros((0, VISION_DIM), np.float32),
        "vision_lengths": np.array([len(v) for v in vision], dtype=np.int64),
        "bad_ids": np.array([b[0] for b in bad], dtype=str),
        "bad_reasons": np.array([b[1] for b in bad], dtype=str),
        "bad_details": np.array([b[2] for b in bad], dtype=str),
    }
    try:
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
    except OSError as err:
        raise DataError(f"{path}: cannot write the part ({err})") from None
    return len(ids), len(bad)


def part_items(path: str | Path, split: str | None = None, valid_share: float = 0.02):
    """The items of one part file (all, or those of ``split``): ``{"id", "text", "audio", "vision"}``."""
    with np.load(path, allow_pickle=False) as part:
        ids, texts = part["ids"].tolist(), part["texts"].tolist()
        if not ids:
            return
        a_end, v_end = np.cumsum(part["audio_lengths"]), np.cumsum(part["vision_lengths"])
        a_start, v_start = a_end - part["audio_lengths"], v_end - part["vision_lengths"]
        audio, vision = part["audio"], part["vision"]
    held_out = id_draws(ids, VALID_SALT) < valid_share
    for i, clip in enumerate(ids):
        if split is not None and held_out[i] != (split == "valid"):
            continue
        yield {
            "id": clip,
            "text": texts[i],
            "audio": np.ascontiguousarray(audio[a_start[i] : a_end[i]]),
            "vision": np.ascontiguousarray(vision[v_start[i] : v_end[i]]),
        }


class SplitItems:
    """``litdata.optimize``'s ``fn``: part number -> the items of one split in that part (a generator)."""

    def __init__(self, parts: list[str], split: str, valid_share: float) -> None:
        self.parts, self.split, self.valid_share = parts, split, valid_share

    def __call__(self, index: int):
        yield from part_items(self.parts[index], self.split, self.valid_share)


# ---------------------------------------------------------------------------------------------- the build
@dataclass(frozen=True)
class BuildOptions:
    """What ``msa pretrain-data build`` is asked to do (each field is the option of the same name, ``--f0`` ...;
    the module docstring says where each default comes from). Messages name the options."""

    transcripts: str | Path  #: the ``id<TAB>text`` file
    audio: str | Path  #: folder of audio files (or ``[T, 33]`` ``.npy``)
    visual: str | Path  #: folder of OpenFace 2.x CSVs (or ``[T, 709]`` ``.npy``)
    out: str | Path  #: the shards folder
    workers: int = 1
    audio_frames: int = 400
    vision_frames: int = 55
    sample_rate: int = 22050
    hop_length: int = 512
    f0: str = "pyin"
    valid_share: float = 0.02
    max_bad_share: float = 0.05
    clips_per_part: int = 100
    chunk_bytes: str = "64MB"
    shard_workers: int = 0
    start_method: str = DEFAULT_START
    keep_parts: bool = False
    force: bool = False

    def settings(self) -> dict:
        """The settings that shape the shards (:data:`SETTING_NAMES`)."""
        return {name: getattr(self, name) for name in SETTING_NAMES}

    def check(self) -> None:
        """One ConfigError naming the first option out of range (before any clip is read)."""
        for name in ("audio_frames", "vision_frames", "sample_rate", "hop_length", "clips_per_part", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')}: expected a positive number, found {getattr(self, name)}"
                )
        if self.shard_workers < 0:
            raise ConfigError(f"--shard-workers: expected 0 (one writer process) or more, found {self.shard_workers}")
        if not 0 < self.valid_share < 1:
            raise ConfigError(f"--valid-share: expected a share in (0, 1), found {self.valid_share:g}")
        if not 0 <= self.max_bad_share <= 1:
            raise ConfigError(f"--max-bad-share: expected a share in [0, 1], found {self.max_bad_share:g}")
        chunk_bytes(self.chunk_bytes)
        _probe_audio_settings(self.sample_rate, self.hop_length, self.f0)


@dataclass
class BuildResult:
    """What :func:`build` did: ``manifest`` of ``out`` (its ``summary`` line), and whether shards were written
    (False: ``out`` was up to date with the same inputs and settings, nothing rebuilt)."""

    out: Path
    manifest: dict
    rebuilt: bool


def _probe_audio_settings(sample_rate: int, hop_length: int, f0: str) -> None:
    """Features of one second of a generated tone, so settings librosa cannot work with (a constant-Q chroma above
    the Nyquist frequency of a low rate, a hop the CQT cannot decimate) are one error, not a million bad clips."""
    from msa_lightning.media.acoustic import audio_features

    t = np.arange(sample_rate) / sample_rate
    try:
        audio_features(0.3 * np.sin(2 * np.pi * 200 * t), sample_rate, hop_length, f0)
    except Exception as err:  # librosa's ParameterError and friends
        raise ConfigError(
            f"--sample-rate {sample_rate} --hop-length {hop_length} --f0 {f0}: the audio features "
            f"cannot be computed at these settings ({type(err).__name__}: {err})"
        ) from None


#: ``--chunk-bytes`` units, decimal as litdata's own spelling (``64MB`` = 64,000,000 bytes)
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
}


def chunk_bytes(value: str) -> int:
    """``--chunk-bytes`` in bytes: a plain number or litdata's spelling (``64MB``, ``500kB``; decimal units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", str(value).lower())
    n = int(float(match[1]) * _BYTE_UNITS[match[2]]) if match and match[2] in _BYTE_UNITS else 0
    if n <= 0:
        raise ConfigError(f"--chunk-bytes: expected a size such as 64MB, 500kB or 1000000, found {value!r}")
    return n


def _check_out(out: Path, old: dict | None, settings: dict, inputs: dict, force: bool) -> None:
    """An existing OUT is ours and its finished shards were built with the same settings and input folders, or
    --force is given (an unfinished build's parts are keyed by their settings, so nothing can mix)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if old is None:
        if out.is_dir() and any(
            p.name not in (*SHARD_SPLITS, "parts") and not p.name.startswith(".") for p in out.iterdir()
        ):
            raise ConfigError(
                f"--out {out}: the folder holds other files and no {MANIFEST}; give a new or empty folder"
            )
        return
    changed = [f"{k} {old['settings'].get(k)!r} -> {v!r}" for k, v in settings.items() if old["settings"].get(k) != v]
    before = {k: old.get("inputs", {}).get(k, {}).get("path") for k in inputs}
    changed += [f"--{k} {before[k]} -> {v['path']}" for k, v in inputs.items() if before[k] != v["path"]]
    if changed and not force and old.get("finished"):
        raise ConfigError(
            f"--out {out}: holds shards built from other inputs or settings ({'; '.join(changed)}); "
            "give another --out, or --force to rebuild it"
        )


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _extract_parts(
    tasks: list[tuple[str, list, dict]], total: int, done_clips: int, workers: int, start_method: str = DEFAULT_START
) -> None:
    """Run :func:`extract_part` on every task, in ``workers`` processes (in this one for 1), with a progress bar
    in clips per second. ``forkserver`` (the default where it exists) imports this module once in a server process
    and forks the workers from it; ``spawn`` imports it in every worker (each start-up re-imports the ``msa``
    command: torch, Lightning, the suite); ``fork`` starts at once but copies this process as it is."""
    from tqdm import tqdm

    if not tasks:
        return
    bar = tqdm(
        total=total, initial=done_clips, unit="clip", desc="features", file=sys.stderr, mininterval=1.0, smoothing=0.1
    )
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                extract_part(*task)
                bar.update(len(task[1]))
            return
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            context.set_forkserver_preload([__name__])
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context)
        try:
            futures = {pool.submit(extract_part, *task): len(task[1]) for task in tasks}
            for future in concurrent.futures.as_completed(futures):
                future.result()
                bar.update(futures[future])
        except concurrent.futures.process.BrokenProcessPool as err:
            raise MSAError(
                f"a feature worker process died ({err}); finished parts are kept: run the same command "
                "again to go on from them"
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _write_split(
    folder: Path,
    parts: list[str],
    split: str,
    valid_share: float,
    size: str,
    shard_workers: int,
    cache: Path,
    start_method: str = DEFAULT_START,
) -> None:
    """One split's litdata shards in ``folder``, written in the parts' order by ``litdata.optimize`` (litdata's
    public writer): for ``shard_workers`` 0 by one writer process forked from this one (it starts at once: a
    forkserver or spawned process would import the ``msa`` command first, seconds to tens of seconds, for a job that
    is I/O-bound), else by that many processes started by ``start_method`` (worth it when the parts are on slow
    storage). The build runs no thread of its own by then (tqdm's monitor sleeps), so forking it is safe."""
    import litdata

    workers = max(shard_workers, 1)
    if shard_workers == 0 and "fork" in multiprocessing.get_all_start_methods():
        start_method = "fork"
    elif start_method == "forkserver":  # the writers fork from a server that has imported this module (SplitItems)
        multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])
    # optimize's workers stage files under a temporary cache: keep it inside OUT, not in a /tmp shared by builds
    saved = {k: os.environ.get(k) for k in ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER")}
    os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(cache / "chunks")
    os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = str(cache / "data")
    try:
        litdata.optimize(
            fn=SplitItems(parts, split, valid_share),
            inputs=list(range(len(parts))),
            output_dir=str(folder),
            chunk_bytes=chunk_bytes(size),
            num_workers=workers,
            reorder_files=False,
            keep_data_ordered=True,
            start_method=start_method,
            verbose=False,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(cache, ignore_errors=True)


def _index_count(folder: Path) -> int:
    index = json.loads((folder / "index.json").read_text())
    return sum(chunk["chunk_size"] for chunk in index["chunks"])


def build(options: BuildOptions) -> BuildResult:
    """``msa pretrain-data build``: see the module docstring. Progress goes to the log."""
    from msa_lightning.data.transcripts import read_transcripts

    options.check()
    logging.getLogger("litdata").setLevel(logging.WARNING)  # its INFO lines are about its download cache
    out = Path(options.out).expanduser()
    settings = options.settings()
    features = {k: settings[k] for k in ("audio_frames", "vision_frames", "sample_rate", "hop_length", "f0")}
    tsv = Path(options.transcripts).expanduser()
    texts = read_transcripts(tsv)  # a malformed file fails here, naming the line, before any media is read
    audio, visual = index_files(options.audio, AUDIO_SUFFIXES), index_files(options.visual, VISUAL_SUFFIXES)
    inputs = {
        "transcripts": {"path": str(tsv.resolve()), "sha256": content_hash(tsv), "clips": len(texts)},
        "audio": {
            "path": str(Path(options.audio).expanduser().resolve()),
            "files": len(audio),
            "fingerprint": listing_fingerprint(audio),
        },
        "visual": {
            "path": str(Path(options.visual).expanduser().resolve()),
            "files": len(visual),
            "fingerprint": listing_fingerprint(visual),
        },
    }
    fingerprint = hashlib.sha256(
        canonical_json({"format": FORMAT, "settings": settings, "inputs": inputs}).encode()
    ).hexdigest()
    old = read_build_manifest(out)
    _check_out(out, old, settings, inputs, options.force)
    if (
        old
        and not options.force
        and old.get("finished")
        and old.get("fingerprint") == fingerprint
        and all((out / s / "index.json").is_file() for s in SHARD_SPLITS)
    ):
        total, left_out = old["counts"]["clips"], old["counts"]["left_out"]
        if total and left_out / total > options.max_bad_share:
            raise DataError(
                f"{out}: the shards are up to date but {left_out / total:.1%} of the clips are unusable, "
                f"more than --max-bad-share={options.max_bad_share:g} ({old['summary']})"
            )
        return BuildResult(out, old, rebuilt=False)
    if old and old.get("finished") and old.get("fingerprint") != fingerprint and not options.force:
        log.info("%s: the inputs changed since the last build: building again (unchanged parts are reused)", out)

    manifest = {
        "format": FORMAT,
        "finished": False,
        "audio_dim": AUDIO_DIM,
        "vision_dim": VISION_DIM,
        **settings,
        "settings": settings,
        "inputs": inputs,
        "fingerprint": fingerprint,
    }
    out.mkdir(parents=True, exist_ok=True)
    for split in SHARD_SPLITS:  # shards of another build must not sit beside an unfinished manifest
        shutil.rmtree(out / split, ignore_errors=True)
    write_manifest(out, manifest)

    # 1. join; 2. features part by part (finished parts reused)
    complete, bad = join_sources(texts, audio, visual)
    report = CorpusReport(total=len(complete) + len(bad), bad=dict(bad))
    log.info(
        "corpus: %d clip ids; %d in all three sources with a transcript, %d left out at the join",
        report.total,
        len(complete),
        len(bad),
    )
    parts_dir = out / "parts"
    parts_dir.mkdir(exist_ok=True)
    for stale in parts_dir.glob("*.tmp*"):  # a part half-written by a killed build (finished parts are renamed)
        stale.unlink()
    # parts (and so shard chunks) in an order drawn from a hash of each id, not sorted ids: sorted VoxCeleb ids
    # put one speaker's clips side by side, and a streamed chunk would then be one speaker
    complete = [complete[i] for i in np.argsort(id_draws(complete, "order"), kind="stable")]
    k = options.clips_per_part
    parts, tasks, reused = [], [], 0
    for number, start in enumerate(range(0, len(complete), k)):
        chunk = [(c, texts[c], str(audio[c]), str(visual[c])) for c in complete[start : start + k]]
        path = parts_dir / f"part-{number:06d}-{part_key(chunk, features)[:16]}.npz"
        parts.append(str(path))
        if path.is_file():
            reused += 1
        else:
            tasks.append((str(path), chunk, features))
    done_clips = len(complete) - sum(len(t[1]) for t in tasks)
    started = time.perf_counter()
    _extract_parts(tasks, len(complete), done_clips, options.workers, options.start_method)
    seconds = time.perf_counter() - started
    extracted = len(complete) - done_clips
    rate = f", {extracted / seconds:.1f} clips/s" if extracted and seconds > 0 else ""
    log.info(
        f"features: {len(parts)} parts of up to {k} clips: {reused} reused from an earlier run, {len(tasks)} "
        f"extracted ({extracted} clips, {options.workers} worker{'s' if options.workers > 1 else ''}{rate})"
    )

    # 3. the report and the threshold
    good_ids: list[str] = []
    for path in parts:
        with np.load(path, allow_pickle=False) as part:
            good_ids += part["ids"].tolist()
            for clip, reason, detail in zip(
                part["bad_ids"].tolist(), part["bad_reasons"].tolist(), part["bad_details"].tolist()
            ):
                report.bad[clip] = (reason, detail)
    report.good = good_ids
    report.bad = dict(sorted(report.bad.items()))
    held_out = id_draws(good_ids, VALID_SALT) < options.valid_share
    expected = {"train": int((~held_out).sum()), "valid": int(held_out.sum())}
    by_reason: dict[str, list[str]] = {}
    for clip, (reason, _) in report.bad.items():
        by_reason.setdefault(reason, []).append(clip)
    manifest.update(
        {
            "counts": {"clips": report.total, "used": len(good_ids), "left_out": len(report.bad), **report.counts()},
            "bad": by_reason,
            "bad_details": {clip: detail for clip, (_, detail) in report.bad.items()},
            "summary": report.summary(),
            "max_bad_share": options.max_bad_share,
        }
    )
    if report.bad_share > options.max_bad_share:
        write_manifest(out, manifest)
        raise bad_share_error(
            tsv,
            report,
            options.max_bad_share,
            "--max-bad-share",
            f"; every clip by id and reason: {out / MANIFEST}; finished parts are kept",
        )
    for split, n in expected.items():
        if n == 0:
            write_manifest(out, manifest)
            raise ConfigError(
                f"--valid-share {options.valid_share:g}: split {split!r} would be empty ({len(good_ids)} "
                f"usable clips); give a {'larger' if split == 'valid' else 'smaller'} share"
            )

    # 4. shards, each split written beside its place and renamed into it
    import litdata

    started = time.perf_counter()
    for split in SHARD_SPLITS:
        tmp = out / f".{split}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _write_split(
            tmp,
            parts,
            split,
            options.valid_share,
            options.chunk_bytes,
            options.shard_workers,
            out / ".litdata-cache",
            options.start_method,
        )
        found = _index_count(tmp)
        if found != expected[split]:
            raise MSAError(f"{tmp}: litdata wrote {found} items for split {split!r}, expected {expected[split]}")
        os.replace(tmp, out / split)
    sizes = {split: _dir_bytes(out / split) for split in SHARD_SPLITS}
    manifest.update(
        {
            "finished": True,
            "splits": expected,
            "bytes": sizes,
            "litdata": litdata.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "summary": f"{report.summary()} (train {expected['train']}, valid {expected['valid']})",
        }
    )
    write_manifest(out, manifest)
    log.info(
        f"shards: train {expected['train']} clips ({_mb(sizes['train'])}), valid {expected['valid']} clips "
        f"({_mb(sizes['valid'])}) in {out}, written in {time.perf_counter() - started:.1f} s"
    )
    if not options.keep_parts:
        shutil.rmtree(parts_dir, ignore_errors=True)
    else:  # parts of earlier inputs or settings can never be reused by this OUT's next build
        keep = {Path(p).name for p in parts}
        for stale in parts_dir.glob("part-*.npz"):
            if stale.name not in keep:
                stale.unlink()
    return BuildResult(out, manifest, rebuilt=True)


# ---------------------------------------------------------------------------------------------- synth, inspect
def synth(
    out: str | Path,
    clips: int = 12,
    seed: int = 0,
    sample_rate: int = 22050,
    with_bad: bool = False,
    force: bool = False,
) -> dict[str, str]:
    """``msa pretrain-data synth``: a synthetic corpus of ``clips`` clips in the on-disk layout (transcripts.tsv,
    audio/*.wav, openface/*.csv) in ``out``; with ``with_bad`` one unusable clip of each kind, returned as
    ``{clip id: kind}``."""
    if clips < 2:
        raise ConfigError(f"--clips: expected at least 2, found {clips}")
    out = Path(out).expanduser()
    if (out / "transcripts.tsv").exists() and not force:
        raise ConfigError(f"{out}: holds a corpus already (transcripts.tsv); give another folder or --force")
    make_synthetic_corpus(out, clips=clips, seed=seed, sample_rate=sample_rate)
    return add_bad_clips(out, sample_rate) if with_bad else {}


def inspect(out: str | Path, show: int = 10) -> str:
    """``msa pretrain-data inspect``: the manifest's summary, counts, left-out clips by reason (``show`` ids of
    each), sizes on disk."""
    out = Path(out).expanduser()
    manifest = read_build_manifest(out)
    if manifest is None:
        raise DataError(f"{out}: no {MANIFEST} (not a folder written by `msa pretrain-data build`)")
    s = manifest["settings"]
    state = "finished" if manifest.get("finished") else "NOT finished (the build stopped; run it again to go on)"
    lines = [
        f"# {out}: {manifest['format']}, {state}",
        f"settings: audio {s['audio_frames']} frames x {manifest['audio_dim']} (f0 {s['f0']}, "
        f"{s['sample_rate']} Hz, hop {s['hop_length']}), vision {s['vision_frames']} frames x "
        f"{manifest['vision_dim']}, valid share "
        f"{s['valid_share']:g}, chunks {s['chunk_bytes']}",
    ]
    for name, source in manifest["inputs"].items():
        count = source.get("clips", source.get("files"))
        lines.append(f"input {name}: {source['path']} ({count} {'lines' if 'clips' in source else 'files'})")
    if "summary" in manifest:
        lines.append(f"summary: {manifest['summary']}")
    for reason, ids in sorted(manifest.get("bad", {}).items()):
        shown = ", ".join(ids[:show]) + (f", ... and {len(ids) - show} more" if len(ids) > show else "")
        lines.append(f"  {reason} {len(ids)}: {shown}")
    for split in SHARD_SPLITS:
        folder = out / split
        if (folder / "index.json").is_file():
            chunks = len(json.loads((folder / "index.json").read_text())["chunks"])
            lines.append(
                f"{split}: {_index_count(folder)} clips, {chunks} chunk file{'s' * (chunks != 1)}, "
                f"{_mb(_dir_bytes(folder))} on disk"
            )
    if (out / "parts").is_dir():
        parts = list((out / "parts").glob("part-*.npz"))
        lines.append(f"parts: {len(parts)} files, {_mb(sum(p.stat().st_size for p in parts))}")
    return "\n".join(lines)
