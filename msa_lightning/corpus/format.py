"""The on-disk format of SKESL pretraining shards, in one place: what ``msa pretrain-data build`` writes
(:mod:`msa_lightning.corpus.shards`) and the streaming reader checks (:mod:`msa_lightning.corpus.stream`).

A shards folder holds ``manifest.json`` (:data:`FORMAT`, the build settings, per-split clip counts,
``finished``) and one litdata folder per split of :data:`SHARD_SPLITS` (``index.json`` + chunks).
A clip goes to ``valid`` when ``id_draws([clip], VALID_SALT) < valid_share``.
"""

from __future__ import annotations

import json
from pathlib import Path

from msa_lightning.data.specs import SPLITS
from msa_lightning.errors import DataError
from msa_lightning.store import atomic_write

FORMAT = "msa-skesl-shards/1"
PART_FORMAT = 1  # bump when a part file's arrays change: every old part stops matching
MANIFEST = "manifest.json"
SHARD_SPLITS = SPLITS[:2]  # train, valid: pretraining has no test split
VALID_SALT = "valid"  # the valid split is id_draws(ids, "valid") < valid_share, as SKESLCorpusDataModule
#: manifest keys the reader needs
REQUIRED_KEYS = ("audio_dim", "vision_dim", "audio_frames", "vision_frames", "splits")


def _build_hint(path: Path) -> str:
    return f"build them with `msa pretrain-data build ... --out {path}` (see configs/skesl/README.md)"


def read_manifest(path: str | Path) -> dict:
    """The validated manifest of the shards folder ``path`` (one DataError naming the folder otherwise)."""
    root = Path(path).expanduser()
    file = root / MANIFEST
    if not file.is_file():
        what = "does not exist" if not root.exists() else f"has no {MANIFEST}"
        raise DataError(f"{root}: no SKESL pretraining shards here (the folder {what}); {_build_hint(root)}")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: unreadable manifest ({err}); {_build_hint(root)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{file}: expected format {FORMAT!r}, found {found!r}")
    if manifest.get("finished") is not True:
        raise DataError(
            f"{root}: the shard build did not finish (manifest.json has finished: "
            f"{json.dumps(manifest.get('finished'))}); run `msa pretrain-data build ... --out {root}` "
            f"again to complete it (finished work is kept)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{file}: missing {missing} (written by `msa pretrain-data build`)")
    for split in SHARD_SPLITS:
        index = root / split / "index.json"
        if not index.is_file():
            raise DataError(f"{root / split}: no litdata index.json; {_build_hint(root)}")
        count = sum(chunk_sizes(root / split))
        expected = manifest["splits"].get(split)
        if expected != count:
            raise DataError(
                f"{root / split}: the shards hold {count} clips but manifest.json says {expected} "
                f"(shards and manifest are from different builds); {_build_hint(root)}"
            )
    return manifest


def read_build_manifest(out: str | Path) -> dict | None:
    """The manifest a build left in ``out`` (finished or not), None if there is none: what a new build continues."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a SKESL shard manifest (expected format {FORMAT!r})")
    return manifest


def write_manifest(out: Path, manifest: dict) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        tmp.chmod(0o644)  # readable by every rank and user, like the shards (a temporary file starts private)

    atomic_write(out / MANIFEST, write)


def chunk_sizes(folder: str | Path) -> list[int]:
    """Clips per chunk of the litdata shards in ``folder``, in the order of their ``index.json`` (the order of the
    global item indices ``StreamingDataset`` serves by ``dataset[i]``)."""
    index = Path(folder) / "index.json"
    try:
        return [int(c["chunk_size"]) for c in json.loads(index.read_text())["chunks"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{index}: unreadable litdata index ({type(err).__name__}: {err})") from None
