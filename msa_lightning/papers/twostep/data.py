"""Step 2 of TwoStepMSA: the frozen extractors run once over every raw clip, their outputs served as features.

:class:`ExtractedFeaturesDataModule` runs frozen BERT, HuBERT and Video Swin (with the fine-tuned weights
of step 1, :func:`load_encoder_weights`) once over every clip of a :class:`~msa_lightning.data.raw.RawMediaDataModule`;
their outputs are stored and served as ordinary feature batches (``text_feats``, ``audio``, ``vision``
with lengths), so a step-2 epoch costs what the fusion network costs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from msa_lightning.batch import MODALITIES, MSABatch
from msa_lightning.data.base import DataFacts
from msa_lightning.data.datamodule import tokenize_cached
from msa_lightning.data.raw import RawClipDataset, RawMediaDataModule
from msa_lightning.errors import ConfigError

log = logging.getLogger(__name__)


#: the ``step1_checkpoints`` value that keeps an extractor's pretrained weights on purpose (no step 1)
PRETRAINED = "pretrained"

#: the extractors of TwoStepMSA, by their ``step1_checkpoints`` names
EXTRACTOR_NAMES = ("text", "audio", "vision")


def step1_sources(given: dict | None, needed: list[str], key: str) -> dict[str, str]:
    """``{extractor: checkpoint or "pretrained"}`` for the ``needed`` extractors of step 2. Step 2 means
    frozen *fine-tuned* extractors, so an entry that is missing or null is one ConfigError naming it (and
    the explicit ``pretrained`` that keeps the pretrained extractor); an unknown extractor name is one too."""
    given = dict(given or {})
    unknown = set(given) - set(EXTRACTOR_NAMES)
    if unknown:
        raise ConfigError(f"{key}: unknown modalities {sorted(unknown)}; expected text, audio, vision")
    missing = [name for name in needed if given.get(name) in (None, "")]
    if missing:
        raise ConfigError(
            f"{key}: no step-1 weights for {', '.join(missing)} ({', '.join(f'{key}.{n}' for n in missing)} "
            f"missing or null); step 2 would run {'that extractor' if len(missing) == 1 else 'those extractors'} "
            f"as pretrained, never fine-tuned by step 1. Give each a step-1 checkpoint (a .ckpt file or run "
            f"folder), or {PRETRAINED!r} to use the pretrained extractor on purpose"
        )
    return {name: str(given[name]) for name in needed}


def load_encoder_weights(encoder: torch.nn.Module, checkpoint: str | Path, what: str) -> str:
    """Load ``encoder``'s weights from a (step-1) checkpoint: a Lightning ``.ckpt`` (``state_dict``)
    or a plain state dict, or a run folder (its best checkpoint, resolved as ``msa test`` and ``msa
    export`` do; ``RUN/last`` for the last). The encoder's keys are looked for under any prefix
    (``net.audio.`` ...), so the checkpoint's model layout does not matter; exactly one prefix must
    hold all of them with the same shapes. Returns the prefix."""
    from msa_lightning.checkpoints import resolve_checkpoint

    path = Path(checkpoint).expanduser()
    if path.is_dir() or (path.name in ("best", "last") and path.parent.is_dir()):
        try:
            path = Path(resolve_checkpoint(path, "best"))
        except ConfigError as err:
            raise ConfigError(f"{what}: {err}") from None
    if not path.is_file():
        raise ConfigError(f"{what}: checkpoint {str(path)!r} does not exist (expected a .ckpt file or a run folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or foreign files fail in many ways
        raise ConfigError(f"{what}: cannot read checkpoint {str(path)!r} ({type(err).__name__}: {err})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    own = encoder.state_dict()
    anchor = next(iter(own))
    prefixes = [k[: -len(anchor)] for k in state if k.endswith(anchor)]
    fits = [
        p
        for p in prefixes
        if all(p + k in state and tuple(state[p + k].shape) == tuple(v.shape) for k, v in own.items())
    ]
    if len(fits) != 1:
        raise ConfigError(
            f"{what}: checkpoint {str(path)!r} holds {'no' if not fits else len(fits)} complete copies "
            f"of the {type(encoder).__name__} weights (looked for {len(own)} tensors such as "
            f"{anchor!r} under any prefix{'; found prefixes ' + str(fits) if fits else ''})"
        )
    encoder.load_state_dict({k: state[fits[0] + k] for k in own})
    return fits[0]


def _fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureClipDataset(Dataset):
    """One split of extractor outputs: ragged sequences (concatenated rows + offsets) padded per batch."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        ids: list[str],
        raw_text: list[str],
        labels: dict[str, np.ndarray],
        tokens: np.ndarray,
    ) -> None:
        self.arrays, self.ids, self.raw_text, self.labels, self.tokens = arrays, ids, raw_text, labels, tokens

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i) -> MSABatch:
        if isinstance(i, (list, tuple, np.ndarray, torch.Tensor)):
            return self.__getitems__([int(j) for j in i])
        return self.__getitems__([int(i)])

    def _ragged(self, name: str, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows, offsets = self.arrays[name], self.arrays[f"{name}_offsets"]
        lengths = offsets[idx + 1] - offsets[idx]
        out = np.zeros((len(idx), int(lengths.max()), rows.shape[1]), np.float32)
        for row, (start, n) in enumerate(zip(offsets[idx], lengths)):  # ragged clips: one copy each
            out[row, :n] = rows[start : start + n]
        return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64))

    def __getitems__(self, indices: list[int]) -> MSABatch:
        idx = np.asarray(indices, dtype=np.int64)
        audio, audio_lengths = self._ragged("audio", idx)
        vision, vision_lengths = self._ragged("vision", idx)
        tokens = torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))  # [B, 3, L]
        return MSABatch(
            text_ids=tokens[:, 0],
            text_segment=tokens[:, 2],
            index=torch.from_numpy(idx),
            text_feats=torch.from_numpy(np.asarray(self.arrays["text"][idx], np.float32)),
            text_mask=tokens[:, 1],
            audio=audio,
            audio_lengths=audio_lengths,
            vision=vision,
            vision_lengths=vision_lengths,
            labels={k: torch.from_numpy(v[idx].astype(np.float32)) for k, v in self.labels.items()},
            ids=[self.ids[i] for i in idx],
            raw_text=[self.raw_text[i] for i in idx],
            extras={
                f"{m}_pooled": torch.from_numpy(np.asarray(self.arrays[f"{m}_pooled"][idx], np.float32))
                for m in MODALITIES
            },
        )


class ExtractedFeaturesDataModule(RawMediaDataModule):
    """Step 2 of TwoStepMSA (paper 3.4): the extractors are frozen, so their outputs are computed once
    per clip and stored (kind ``frozen_features``, keyed by the decoded clips and a fingerprint of
    each extractor's weights); epochs then cost what the fusion network costs.

    Batches carry the standard feature fields, so every fusion model of the suite reads them:
    ``text_feats [B, L, D_t]`` + ``text_mask`` (BERT's last layer; the token ids too), ``audio [B, Ta, D_a]`` +
    ``audio_lengths`` (HuBERT's last layer, valid frames), ``vision [B, Tv, D_v]`` + ``vision_lengths``
    (Video Swin, mean over space), and the global vectors in ``extras["text_pooled"]`` (``[CLS]``),
    ``extras["audio_pooled"]`` and ``extras["vision_pooled"]`` (means over valid steps).

    Args (besides :class:`RawMediaDataModule`'s):
        text_model, audio_model: names or folders (``tiny-bert``, ``tiny-hubert`` in tests).
        video_arch, video_checkpoint: the Video Swin architecture and its pretrained weights file.
        step1_checkpoints: ``{"text"|"audio"|"vision": checkpoint}``: fine-tuned weights of step 1, a
            ``.ckpt`` file or a step-1 run folder (its best checkpoint; found under any prefix, see
            :func:`load_encoder_weights`), or ``pretrained`` (that extractor as pretrained, on purpose).
            All three are required: a missing or null entry is an error (:func:`step1_sources`).
        video_random_init: allow ``vision: pretrained`` with no ``video_checkpoint`` (random Swin, logged).
        tokenizer: left unset, it follows ``text_model`` (the stored BERT outputs are computed from
            that model's token ids); a different value is refused.
        extract_batch_size: clips per extractor call; ``extract_device``: ``auto`` (GPU if present).
    """

    provided_inputs = frozenset(
        {"text_ids", "text_mask", "text_segment", "text_feats", "audio", "audio_lengths", "vision", "vision_lengths"}
    )

    def __init__(
        self,
        path: str,
        text_model: str = "bert-base-chinese",
        audio_model: str = "facebook/hubert-base-ls960",
        video_arch: str = "swin3d_t",
        video_checkpoint: str | None = None,
        step1_checkpoints: dict[str, str | None] | None = None,
        video_random_init: bool = False,
        extract_batch_size: int = 8,
        extract_device: str = "auto",
        tokenizer: str | None = None,
        **kwargs,
    ) -> None:
        if tokenizer is not None and str(tokenizer) != str(text_model):
            raise ConfigError(
                f"data.init_args.tokenizer={tokenizer!r} differs from data.init_args.text_model="
                f"{text_model!r}: the stored BERT outputs are computed from text_model's token ids; "
                "leave tokenizer unset (it follows text_model)"
            )
        super().__init__(path, tokenizer=text_model, **kwargs)
        sources = step1_sources(step1_checkpoints, list(EXTRACTOR_NAMES), "data.init_args.step1_checkpoints")
        if sources["vision"] == PRETRAINED:
            from msa_lightning.nn.video_swin import check_video_weights

            check_video_weights(video_arch, video_checkpoint, video_random_init, "data.init_args.video_checkpoint", log)
        if isinstance(extract_batch_size, bool) or not isinstance(extract_batch_size, int) or extract_batch_size < 1:
            raise ConfigError(
                f"data.init_args.extract_batch_size: expected an integer >= 1, found {extract_batch_size!r}"
            )
        self.text_model, self.audio_model = text_model, audio_model
        self.video_arch, self.video_checkpoint, self.video_random_init = video_arch, video_checkpoint, video_random_init
        self.step1_checkpoints = {m: c for m, c in sources.items() if c != PRETRAINED}
        self.extract_batch_size, self.extract_device = extract_batch_size, extract_device
        self._extractors: dict[str, torch.nn.Module] | None = None
        self._fingerprints: dict[str, str] = {}
        self.features: dict[str, dict[str, np.ndarray]] = {}

    def extractors(self) -> dict[str, torch.nn.Module]:
        """The three frozen extractors (built once; random tiny models are seeded, so the same every time)."""
        if self._extractors is None:
            from msa_lightning.nn.audio_encoder import AudioEncoder
            from msa_lightning.nn.text_encoder import TextEncoder
            from msa_lightning.nn.video_swin import VideoSwinEncoder

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                built = {
                    "text": TextEncoder(self.text_model, finetune=False),
                    "audio": AudioEncoder(self.audio_model, finetune=False),
                    "vision": VideoSwinEncoder(self.video_arch, self.video_checkpoint, finetune=False),
                }
            for modality, checkpoint in self.step1_checkpoints.items():
                load_encoder_weights(built[modality], checkpoint, f"data.init_args.step1_checkpoints.{modality}")
            self._extractors = built
            self._fingerprints = {m: _fingerprint(e) for m, e in built.items()}
        return self._extractors

    def _device(self) -> torch.device:
        if self.extract_device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.extract_device)

    def rebuild_args(self) -> dict:
        """:meth:`RawMediaDataModule.rebuild_args` and the extractors (their step-1 weights by checkpoint)."""
        args = {k: v for k, v in super().rebuild_args().items() if k != "tokenizer"}  # it follows text_model
        return {
            **args,
            "text_model": self.text_model,
            "audio_model": self.audio_model,
            "video_arch": self.video_arch,
            "video_checkpoint": self.video_checkpoint,
            "step1_checkpoints": {m: self.step1_checkpoints.get(m, PRETRAINED) for m in EXTRACTOR_NAMES},
            "video_random_init": self.video_random_init,
            "extract_batch_size": self.extract_batch_size,
        }

    @torch.no_grad()
    def extract(self, part: dict) -> dict[str, np.ndarray]:
        """Every clip of ``part`` (a split: ``entries``, ``ids``, ``raw_text``, ``labels``) through the three
        extractors, in batches of clips of similar length (HuBERT-base normalises over the padded batch and
        Swin's windows see padding positions, so little padding keeps each clip's features close to what it
        gives alone). ``msa infer`` runs new videos through it too."""
        extractors, device = self.extractors(), self._device()
        for module in extractors.values():
            module.to(device).eval()
        raw = RawClipDataset(
            part["entries"],
            part["ids"],
            part["raw_text"],
            part["labels"],
            tokenize_cached(part["raw_text"], self.tokenizer_name, self.text_max_length, self.store.root),
            None,
        )
        durations = [e.meta["arrays"]["audio"]["shape"][0] for e in part["entries"]]
        order = np.argsort(durations, kind="stable")
        clips: list[dict[str, np.ndarray]] = [{} for _ in range(len(raw))]
        for start in range(0, len(raw), self.extract_batch_size):  # batches of clips through each extractor
            rows = order[start : start + self.extract_batch_size]
            batch = raw.__getitems__(rows.tolist()).to(device)
            text = extractors["text"](batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state
            text = text.float().cpu().numpy()
            text_mask = batch.text_mask.cpu().numpy()
            sequences = {
                m: tuple(t.cpu().numpy() for t in out)
                for m, out in (
                    ("audio", extractors["audio"](batch.waveform, batch.waveform_mask)),
                    ("vision", extractors["vision"](batch.frames, batch.frame_mask)),
                )
            }
            for j, row in enumerate(rows):  # split the batch back into clips (valid steps only)
                clips[row].update(text=text[j], text_mask=text_mask[j], text_pooled=text[j, 0])  # [CLS]
                for modality, (sequence, mask, pooled) in sequences.items():
                    clips[row][modality] = sequence[j][mask[j]].astype(np.float32)
                    clips[row][f"{modality}_pooled"] = pooled[j].astype(np.float32)
        arrays = {
            name: np.stack([c[name] for c in clips])
            for name in ("text", "text_mask", "text_pooled", "audio_pooled", "vision_pooled")
        }
        for modality in ("audio", "vision"):
            arrays[modality] = np.concatenate([c[modality] for c in clips])
            arrays[f"{modality}_offsets"] = np.concatenate([[0], np.cumsum([len(c[modality]) for c in clips])])
        return arrays

    def _features(self, split: str) -> dict[str, np.ndarray]:
        self.extractors()
        part = self.splits[split]
        inputs = {
            "clips": [e.meta["key"] for e in part["entries"]],
            "ids": part["ids"],
            "tokenizer": self.tokenizer_name,
            "text_max_length": self.text_max_length,
            "texts": hashlib.sha256("\x00".join(part["raw_text"]).encode()).hexdigest(),
            "extractors": self._fingerprints,
        }
        entry = self.store.get_or_build(
            "frozen_features", inputs, lambda: (self.extract(part), {"split": split, "source": str(self.path)})
        )
        log.info("%s/%s: frozen extractor outputs from %s", self.path, split, entry.path)
        return entry.arrays()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load()
        self.check_streams(None)  # the three extractors read every stream
        for split, part in self.splits.items():
            self.features[split] = self._features(split)
            self.datasets[split] = self.split_dataset(part, None, self.features[split])
        self._extractors = None  # not needed once the outputs are stored: free their (GPU) memory

    def split_dataset(
        self, part: dict, inputs: set[str] | None, features: dict[str, np.ndarray] | None = None
    ) -> FeatureClipDataset:
        """The extractor outputs of one split (``features``, else extracted now: ``msa infer``'s new videos)."""
        tokens = tokenize_cached(part["raw_text"], self.tokenizer_name, self.text_max_length, self.store.root)
        features = self.extract(part) if features is None else features
        return FeatureClipDataset(features, part["ids"], part["raw_text"], part["labels"], tokens)

    def clips_dataset(self, files: list[Path], texts: list[str], inputs: set[str] | None) -> FeatureClipDataset:
        """New videos through the step-1 extractors (:meth:`RawMediaDataModule.clips_dataset`): all three run,
        so every stream is needed."""
        return super().clips_dataset(files, texts, None)

    def prepare_data(self) -> None:
        super().prepare_data()
        self.setup()

    def data_facts(self) -> DataFacts:
        """The raw media's facts with the widths of the stored extractor outputs."""
        self.setup()
        train = self.features["train"]
        return dataclasses.replace(
            super().data_facts(),
            audio_dim=int(train["audio"].shape[1]),
            vision_dim=int(train["vision"].shape[1]),
            text_dim=int(train["text"].shape[2]),
        )
