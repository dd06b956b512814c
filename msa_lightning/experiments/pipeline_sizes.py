"""The feature sizes of a pipeline's stages, checked before its first stage runs.

A stage that loads another stage's checkpoint into its model (``--model.init_args.<x>=${s.best_ckpt}`` or
``${s.last_ckpt}``, or ``--ckpt_path=${s...}``) must read features of the sizes that stage was trained on: SKESL
fine-tuning from a pretraining on 33-d librosa / 709-d OpenFace features cannot read MMSA's 5-d / 20-d MOSI file,
and that should be one line at the start, not an error after a day of pretraining. A stage whose model sets
``audio_dim`` / ``vision_dim`` must read data of those sizes too.

Each stage's sizes are resolved without running it (no model is built, no data loaded):

* the model's ``audio_dim`` / ``vision_dim`` when its config or command line sets them;
* else its data's: ``data.init_args.path`` naming the manifest of ``msa pretrain-data build`` shards, the manifest
  ``msa features extract`` writes beside its file, or a feature pickle (its arrays' shapes, read without building
  them: :func:`~msa_lightning.data.reader.feature_sizes`); ``${s.features}`` a features stage's extractors
  (:func:`~msa_lightning.media.extractors.known_dims`).

Sizes alone miss one difference: librosa's 33-d audio with another pitch column (``--f0 pyin`` or ``zcr``),
sample rate or hop length has the same size but other values. Where both the checkpoint's data and the stage's
data record these settings (the shards' and ``msa features extract``'s manifests, a features stage's options), a
stage that loads the checkpoint must read audio extracted the same way.

What cannot be known yet (a file not made, a stage's export, a speech model's size) is skipped, not guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from msa_lightning.data.specs import ALIGNED_FILE, DATASETS
from msa_lightning.errors import ConfigError
from msa_lightning.experiments.argv import option_value

#: ``${stage.field}`` in a stage's words
REFERENCE = re.compile(r"\$\{([^}]*)\}")
#: the data file names of a dataset folder (``data.init_args.path`` a folder), from the datasets' specs that
#: MSADataModule picks them by (the stage's dataset is not resolved here: the first that exists)
FOLDER_FILES = {False: tuple(dict.fromkeys(spec.unaligned_file for spec in DATASETS.values())), True: (ALIGNED_FILE,)}
CKPT_FIELDS = ("best_ckpt", "last_ckpt")
#: the settings of librosa's audio frames that change their values but not their size
LIBROSA_KEYS = ("f0", "sample_rate", "hop_length")


@dataclass(frozen=True)
class Sizes:
    """A stage's feature sizes (None: not known before it runs) and where they come from, for messages."""

    audio: int | None
    vision: int | None
    source: str
    librosa: dict | None = None  #: the audio's librosa settings (LIBROSA_KEYS) where known, None otherwise

    def known(self) -> bool:
        return self.audio is not None or self.vision is not None

    def differ(self, other: Sizes) -> bool:
        return any(a is not None and b is not None and a != b for a, b in self._pairs(other))

    def _pairs(self, other: Sizes):
        return ((self.audio, other.audio), (self.vision, other.vision))

    def extracted_otherwise(self, other: Sizes) -> bool:
        """Both audio streams are librosa frames with known settings, and these differ."""
        return self.librosa is not None and other.librosa is not None and self.librosa != other.librosa

    def librosa_text(self) -> str:
        return ", ".join(f"{key} {self.librosa[key]}" for key in LIBROSA_KEYS) if self.librosa else ""

    def __str__(self) -> str:
        parts = [f"{name} {value}" for name, value in (("audio", self.audio), ("vision", self.vision)) if value]
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------- a stage's settings
def stage_settings(args: list[str]) -> dict[str, object]:
    """The settings a stage's ``msa fit`` words give, as dotted keys without ``init_args`` (``model.audio_dim``,
    ``data.path``, ``model.class_path``): its ``--config`` files in order, then its ``--key=value`` options (values
    read as YAML). An option choosing another class (``--data=X``) drops the config files' arguments of that
    section, as ``msa fit`` starts the new class from its defaults."""
    documents, options = [], []
    words = iter(enumerate(args))
    for i, arg in words:
        key, eq, value = arg.partition("=")
        if not arg.startswith("--"):
            continue
        if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            next(words, None)
        if key in ("--config", "-c"):
            try:
                document = yaml.safe_load(Path(value).read_text()) if Path(value).is_file() else None
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                document = None  # the stage's own `msa fit` reports a bad config file
            if isinstance(document, dict):
                documents.append(document)
        else:
            options.append((key[2:], value))
    settings: dict[str, object] = {}
    for document in documents:
        _flatten(document, "", settings)
    for key, value in options:
        key = ".".join(p for p in key.split(".") if p != "init_args")
        if key in ("model", "data"):
            key += ".class_path"
        if key.endswith(".class_path") and _short(value) != _short(settings.get(key)):
            section = key.partition(".")[0] + "."
            settings = {k: v for k, v in settings.items() if not k.startswith(section)}
        try:
            settings[key] = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            settings[key] = value
    return settings


def _flatten(node: dict, prefix: str, out: dict) -> None:
    for key, value in node.items():
        dotted = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            _flatten(value, dotted, out)
        else:
            out[dotted + ".class_path" if dotted in ("model", "data") else dotted] = value  # `model: ClassName`


def _short(class_path) -> str | None:
    return str(class_path).rsplit(".", 1)[-1] if class_path else None


# ---------------------------------------------------------------------------------------------- data sizes
def data_sizes(path: str | Path, aligned: bool = False) -> Sizes | None:
    """The feature sizes of a data path, from the shards' or the feature file's manifest or the file's arrays
    (None: not known yet)."""
    from msa_lightning.corpus.format import MANIFEST
    from msa_lightning.data.custom import read_features_manifest
    from msa_lightning.data.reader import feature_sizes
    from msa_lightning.errors import MSAError

    path = Path(path).expanduser()
    if (path / MANIFEST).is_file():  # pretraining shards
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            librosa = _librosa(manifest.get("settings"))  # the shards' audio is always librosa's
            return Sizes(int(manifest["audio_dim"]), int(manifest["vision_dim"]), f"shards {path}", librosa)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # the stage's reader names what is wrong with them
    if path.is_dir():
        path = next((path / f for f in FOLDER_FILES[bool(aligned)] if (path / f).is_file()), path)
    if not path.is_file():
        return None
    try:
        manifest = read_features_manifest(path)
    except MSAError:
        manifest = None
    if manifest is not None:
        settings = manifest.get("settings", {})
        audio = settings["audio"]
        librosa = _librosa(audio) if audio.get("extractor") == "librosa" else None
        return Sizes(audio["dim"], settings["vision"]["dim"], f"data {path}", librosa)
    found = feature_sizes(path)
    return Sizes(*found, f"data {path}") if found else None


def _librosa(settings) -> dict | None:
    """The LIBROSA_KEYS of a manifest's audio settings (None when one is missing)."""
    if not isinstance(settings, dict) or any(key not in settings for key in LIBROSA_KEYS):
        return None
    return {key: settings[key] for key in LIBROSA_KEYS}


def features_stage_sizes(stage) -> Sizes:
    """The sizes a ``features extract`` stage's ``--audio`` / ``--vision`` extractors give (and librosa's
    settings, from its options or :func:`~msa_lightning.media.extractors.audio_settings`'s defaults)."""
    from msa_lightning.media.extractors import DEFAULT_AUDIO, DEFAULT_VISION, audio_settings, known_dims

    audio = option_value(stage.args, "--audio") or DEFAULT_AUDIO
    vision = option_value(stage.args, "--vision") or DEFAULT_VISION
    librosa = None
    if audio == "librosa":
        given = {k: option_value(stage.args, f"--{k.replace('_', '-')}") for k in LIBROSA_KEYS}
        try:
            options = {k: v if k == "f0" else int(v) for k, v in given.items() if v is not None}
            librosa = _librosa(audio_settings(audio, **options))
        except (ConfigError, ValueError):
            pass  # unknown: the stage's own `msa features extract` reports bad options
    where = f"features stage {stage.name!r} (--audio {audio}, --vision {vision})"
    return Sizes(*known_dims(audio, vision), where, librosa)


# ---------------------------------------------------------------------------------------------- the check
def stage_sizes(pipeline, stage) -> tuple[Sizes | None, Sizes | None]:
    """``(model sizes, data sizes)`` of a fit stage, each None when not known before it runs."""
    settings = stage_settings(stage.args)
    audio, vision = settings.get("model.audio_dim"), settings.get("model.vision_dim")
    model = None
    if isinstance(audio, int) or isinstance(vision, int):
        model = Sizes(
            audio if isinstance(audio, int) else None, vision if isinstance(vision, int) else None, "model.init_args"
        )
    path = settings.get("data.path")
    if not isinstance(path, str):
        return model, None
    reference = REFERENCE.fullmatch(path)
    if reference:
        target, _, what = reference.group(1).partition(".")
        names = [s.name for s in pipeline.stages]
        if what == "features" and target in names:
            return model, features_stage_sizes(pipeline.stage(target))
        return model, None
    return model, data_sizes(path, bool(settings.get("data.aligned")))


def check_feature_sizes(pipeline) -> None:
    """Every mismatch of feature sizes, and of librosa's settings, between the stages of ``pipeline`` (module
    docstring) in one ConfigError."""
    sizes = {s.name: stage_sizes(pipeline, s) for s in pipeline.stages if s.command == "fit"}
    trained = {name: model or data for name, (model, data) in sizes.items()}  # what its checkpoint carries
    trained_on = {name: data for name, (_, data) in sizes.items()}  # its data (how the audio was extracted)
    problems = []
    for stage in pipeline.stages:
        if stage.command != "fit":
            continue
        model, data = sizes[stage.name]
        if model is not None and data is not None and model.differ(data):
            problems.append(f"stage {stage.name!r} sets {model} (model.init_args) but its {data.source} gives {data}")
        ours = data or model
        for arg in stage.args:
            key = arg.partition("=")[0].removeprefix("--")
            if not (key.startswith("model.") or key == "ckpt_path"):
                continue
            for ref in REFERENCE.findall(arg):
                target, _, what = ref.partition(".")
                theirs = trained.get(target)
                if what not in CKPT_FIELDS:
                    continue
                if ours is not None and theirs is not None and ours.differ(theirs):
                    problems.append(
                        f"stage {stage.name!r} loads the checkpoint of {target!r} ({key}=${{{ref}}}), trained on "
                        f"{theirs} ({theirs.source}), but its {ours.source} gives {ours}"
                    )
                    continue
                source = trained_on.get(target)
                if data is not None and source is not None and data.extracted_otherwise(source):
                    problems.append(
                        f"stage {stage.name!r} loads the checkpoint of {target!r} ({key}=${{{ref}}}), whose librosa "
                        f"audio was extracted with {source.librosa_text()} ({source.source}), but its {data.source} "
                        f"was extracted with {data.librosa_text()} (the same size, other values)"
                    )
    if problems:
        raise ConfigError(
            f"pipeline {pipeline.name} ({pipeline.source}): features do not match, nothing was run: "
            + "; ".join(problems)
            + " (a model reads features of the sizes, and made the way, of the data it was trained on)"
        )
