"""``msa transcribe``: ASR transcripts of an audio corpus with a Hugging Face speech-to-text model.

VoxCeleb ships without transcripts; SKESL (Qian et al., Findings of ACL 2023, Section 4.3) ran a cloud ASR
service over it. This command runs a Whisper-architecture model (``transformers``: ``openai/whisper-*``,
``distil-whisper/*``, fine-tunes; a hub name or a local folder, offline-first through
:func:`msa_lightning.nn.pretrained.load_speech_recognizer`) and writes the transcript
format of :mod:`msa_lightning.data.transcripts`: one ``id<TAB>text`` line per clip, UTF-8.

* **Clips**: every wav/flac/m4a/mp3/ogg file under ``--audio``; a clip's id is its path relative to that
  folder without the suffix (:func:`~msa_lightning.corpus.sources.index_files`), so VoxCeleb's
  ``id10001/1zcIwhmdeo4/00001.wav`` is ``id10001/1zcIwhmdeo4/00001``, the id the corpus joiner looks for.
  ``--ids FILE`` restricts the run to the ids listed (one per line; a TSV's first column works too).
* **Audio** is decoded to the model's sample rate (16 kHz for Whisper), mono, in a few threads, one batch
  ahead of the model (:func:`~msa_lightning.media.decode.load_audio`: librosa for wav/flac/ogg/mp3,
  PyAV's FFmpeg for m4a, which is what VoxCeleb2 ships, and as a fallback).
* **Long clips**: Whisper sees 30-second windows. A longer clip is cut into the fewest equal windows of at
  most 30 s, all transcribed in the same ``generate`` call, and their texts are joined with a space; a word
  that straddles a cut may come out garbled or twice. The summary counts such clips (VoxCeleb clips last
  about 8 s, few pass 30 s).
* **Token limit**: ``--max-new-tokens`` (default: the model's own limit, 448 positions for Whisper) caps the
  tokens of one window; the summary counts windows that stopped there without an end token (their text may
  be cut, or the model looped).
* **Resume**: each finished batch is appended to the TSV, flushed and fsync'd. A re-run reads the TSV (with
  :func:`~msa_lightning.data.transcripts.read_transcripts`, so a malformed file is reported, not overwritten) and
  skips the ids it holds; a last line without its newline (a run killed while writing) is cut off first and
  its clip is transcribed again. Deleting lines redoes exactly those clips.
* **Bad input never stops the run and is never dropped silently**: a clip whose audio cannot be decoded is
  written to ``OUT.errors.tsv`` (``id<TAB>reason<TAB>detail``) and counted in the summary. That file lists
  the failures of the latest run: failed clips are not in the TSV, so every run retries them.
* **Language screening** (the paper kept English clips only, Section 4.1): ``--detect-language`` also writes
  ``OUT.language.tsv``, ``id<TAB>code<TAB>probability``: Whisper's most likely language token after
  ``<|startoftranscript|>`` on the clip's first window (one more encoder pass per clip). ``--language``
  still fixes the decoding language. Lines go in before the transcripts, so each clip in the TSV has one
  (when every run had the flag: a re-run names the clips transcribed without it).
* **Text** is written on one line: tabs, newlines and other control characters (random or confused models
  emit them) become spaces, runs of spaces one, and the text is stripped. An empty text is written as
  such (``id<TAB>``) and counted: the corpus builder records it as an empty transcript.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msa_lightning.corpus.sources import AUDIO_SUFFIXES, index_files
from msa_lightning.data.reader import normalise_id
from msa_lightning.data.transcripts import read_transcripts
from msa_lightning.errors import ClipError, ConfigError, DataError, MSAError
from msa_lightning.media.decode import load_audio
from msa_lightning.textfiles import read_text_lines

#: audio files the command reads (the corpus' ready ``.npy`` features are not audio)
log = logging.getLogger(__name__)

MEDIA_SUFFIXES = tuple(s for s in AUDIO_SUFFIXES if s != ".npy")
DTYPES = ("float32", "bfloat16", "float16")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\s]+")
_BAD_ID = re.compile(r"[\x00-\x1f\x7f]")  # would break the id<TAB>text line


def clean_text(text: str) -> str:
    """``text`` on one TSV-safe line: control characters and whitespace runs become one space, stripped."""
    return _CONTROL.sub(" ", text).strip()


def errors_path(out: str | Path) -> Path:
    """The side file listing the clips a run could not transcribe: ``OUT.errors.tsv``."""
    return Path(f"{out}.errors.tsv")


def language_path(out: str | Path) -> Path:
    """The side file of ``--detect-language``: ``OUT.language.tsv``, ``id<TAB>code<TAB>probability``."""
    return Path(f"{out}.language.tsv")


def _first_column(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.split("\t", 1)[0] for line in read_text_lines(path, "side file") if line.strip()}


def repair_last_line(path: Path) -> str | None:
    """Cut an incomplete last line (no newline: a run killed while writing) off ``path``; returns it or None."""
    if not path.is_file():
        return None
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        end = size  # read backwards until the previous newline
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        handle.seek(keep)
        partial = handle.read().decode("utf-8", errors="replace")
        handle.truncate(keep)
    return partial


def windows(y: np.ndarray, window: int) -> list[np.ndarray]:
    """``y`` cut into the fewest equal pieces of at most ``window`` samples (``[y]`` when it fits)."""
    if len(y) <= window:
        return [y]
    pieces = math.ceil(len(y) / window)
    return np.array_split(y, pieces)


def read_ids(path: str | Path) -> list[str]:
    """Clip ids listed in a file, one per line (text after a tab is ignored, so a TSV works), in order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: ids file not found (--ids; expected one clip id per line)")
    ids = [line.split("\t", 1)[0].strip() for line in read_text_lines(path, "ids file")]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise DataError(f"{path}: no clip id in the ids file (--ids)")
    return ids


@dataclass
class Tally:
    """What a run did, for the summary."""

    found: int = 0
    skipped: int = 0
    transcribed: int = 0
    empty: int = 0
    long_clips: int = 0
    at_limit: int = 0
    failed: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)  #: detected language of each clip (--detect-language)
    out: Path | None = None  #: the transcript file written
    seconds: float = 0.0  #: time spent transcribing
    max_new_tokens: int | None = None  #: the token limit per window (None: the model's)
    window_s: float = 30.0  #: the model's window, in seconds

    def summary(self) -> str:
        out, seconds, window_s = self.out, self.seconds, self.window_s
        rate = self.transcribed / seconds if seconds > 0 else 0.0
        failed = sum(self.failed.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items()))
        limit = f"--max-new-tokens {self.max_new_tokens}" if self.max_new_tokens else "the model's limit"
        lines = [
            f"transcribed {self.transcribed} clips into {out} ({rate:.2f} clips/s); {self.skipped} skipped as "
            f"already there; {failed} failed" + (f" ({reasons}): see {errors_path(out)}" if failed else ""),
            f"{self.empty} empty transcripts; {self.at_limit} windows stopped at the token limit ({limit}); "
            f"{self.long_clips} clips longer than {window_s:g} s, cut into windows of at most {window_s:g} s",
        ]
        if self.languages:
            shown = ", ".join(f"{code} {n}" for code, n in self.languages.most_common(8))
            lines.append(
                f"detected languages: {shown}"
                + (", ..." if len(self.languages) > 8 else "")
                + f" (per clip: {language_path(out)})"
            )
        return "\n".join(lines)


class Transcriber:
    """A Whisper-architecture model and its processor on one device and dtype: ``__call__(waves)`` gives each
    wave's text and whether its decoding stopped at the token limit (no end token)."""

    def __init__(
        self,
        name: str,
        device: str,
        dtype: str,
        language: str | None,
        max_new_tokens: int | None,
        detect_language: bool = False,
        word_timestamps: bool = False,
    ) -> None:
        import torch

        from msa_lightning.nn.pretrained import load_speech_recognizer

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available here (use --device cpu)")
        self.model, self.processor = load_speech_recognizer(name)
        kind = self.model.config.model_type
        if kind != "whisper":
            raise ConfigError(
                f"--model {name}: a {kind!r} model; msa transcribe runs Whisper-architecture models "
                "(openai/whisper-*, distil-whisper/*, their fine-tunes)"
            )
        self.device, self.torch_dtype = torch.device(device), getattr(torch, dtype)
        self.model.to(device=self.device, dtype=self.torch_dtype)
        extractor = self.processor.feature_extractor
        self.sample_rate, self.window = int(extractor.sampling_rate), int(extractor.n_samples)  # 16 kHz, 30 s
        self.generate_kwargs: dict = {}
        if max_new_tokens:
            most = self.model.config.max_target_positions - 4  # the decoder's positions minus Whisper's prompt
            if max_new_tokens > most:
                raise ConfigError(
                    f"--max-new-tokens {max_new_tokens}: {name} decodes at most {most} tokens per window "
                    f"({self.model.config.max_target_positions} positions less a 4-token prompt)"
                )
            self.generate_kwargs["max_new_tokens"] = max_new_tokens
        if language:
            if getattr(self.model.generation_config, "is_multilingual", True):
                from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

                known = getattr(self.model.generation_config, "lang_to_id", {})
                code = TO_LANGUAGE_CODE.get(language.lower(), language.lower())
                if f"<|{code}|>" not in known:
                    raise ConfigError(
                        f"--language {language}: not a language of {name} (codes such as en, de, zh "
                        "or names such as english; 'auto' to detect it per clip)"
                    )
                self.generate_kwargs.update(language=language, task="transcribe")
            elif language.lower() not in ("en", "english"):
                raise ConfigError(
                    f"--language {language}: {name} is an English-only model (use --language en, or "
                    "a multilingual Whisper such as openai/whisper-small)"
                )
        self.lang_codes, self.lang_ids = [], None
        if detect_language:
            lang_to_id = getattr(self.model.generation_config, "lang_to_id", None)
            if not lang_to_id or not getattr(self.model.generation_config, "is_multilingual", True):
                raise ConfigError(
                    f"--detect-language: {name} has no language tokens (an English-only model); use a "
                    "multilingual Whisper such as openai/whisper-small"
                )
            self.lang_codes = [token.strip("<|>") for token in lang_to_id]
            self.lang_ids = torch.tensor(list(lang_to_id.values()), device=self.device)
        #: word timing needs the decoder's cross-attention heads that follow the audio (``alignment_heads``, which
        #: the openai/whisper-* configs list); a model without them gets openai-whisper's own default: every head of
        #: the last half of the decoder's layers
        self.default_alignment_heads = False
        if word_timestamps and not getattr(self.model.generation_config, "alignment_heads", None):
            layers, heads = self.model.config.decoder_layers, self.model.config.decoder_attention_heads
            self.model.generation_config.alignment_heads = [
                [layer, head] for layer in range(layers // 2, layers) for head in range(heads)
            ]
            self.default_alignment_heads = True
        eos = self.model.generation_config.eos_token_id
        self.eos = torch.tensor(sorted(set(eos if isinstance(eos, (list, tuple)) else [eos])), device=self.device)

    def __call__(
        self, waves: list[np.ndarray], detect_rows: list[int] = ()
    ) -> tuple[list[str], list[bool], list[tuple[str, float]]]:
        """Texts and token-limit flags of ``waves``; with ``detect_language``, the most likely language and its
        probability for the waves at ``detect_rows`` (Whisper's language tokens after ``<|startoftranscript|>``)."""
        import torch

        features = self._log_mel(waves)["input_features"]
        try:
            with torch.inference_mode():
                tokens = self.model.generate(features, **self.generate_kwargs)
                languages = self._languages(features[list(detect_rows)]) if self.lang_ids is not None else []
        except torch.cuda.OutOfMemoryError:
            raise MSAError(
                f"out of GPU memory transcribing {len(waves)} windows at once: lower --batch-size "
                "(finished batches are saved; the re-run goes on from there)"
            ) from None
        if not isinstance(tokens, torch.Tensor):  # a dict output holds them under "sequences"
            tokens = tokens["sequences"]
        texts = self.processor.batch_decode(tokens, skip_special_tokens=True)
        capped = ~torch.isin(tokens, self.eos.to(tokens.device)).any(dim=1)
        return texts, capped.tolist(), languages

    def _log_mel(self, waves: list[np.ndarray], attention_mask: bool = False) -> dict:
        """The processor's log-mel features of 30 s windows (padded), on the model's device and dtype; with
        ``attention_mask``, also the mask of each wave's real samples."""
        inputs = self.processor(
            waves,
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            return_attention_mask=attention_mask,
            device=str(self.device),
        )
        out = {"input_features": inputs["input_features"].to(self.device, self.torch_dtype)}
        if attention_mask:
            out["attention_mask"] = inputs["attention_mask"].to(self.device)
        return out

    def texts(self, waves: list[np.ndarray]) -> list[str]:
        """The texts of ``waves`` (one window each)."""
        return self(waves)[0]

    def words(self, waves: list[np.ndarray]) -> list[list[tuple[str, float, float]]]:
        """Each wave's words with their start and end in seconds (one window each: ``waves`` of at most 30 s), from
        the token timestamps ``generate(return_token_timestamps=True)`` computes (dynamic time warping over the
        alignment heads' cross-attention), grouped into words by :func:`whisper_words`."""
        import torch

        inputs = self._log_mel(waves, attention_mask=True)
        with torch.inference_mode():
            # the encoder first, on its own: timestamps make generate return attention maps, and run in its call
            # they would include the encoder's (layers x heads x 1500 x 1500 per window: gigabytes per batch)
            encoded = self.model.get_encoder()(inputs["input_features"])
            out = self.model.generate(
                encoder_outputs=encoded,
                attention_mask=inputs["attention_mask"],
                return_token_timestamps=True,
                **self.generate_kwargs,
            )
        tokenizer = self.processor.tokenizer
        sequences, times = out["sequences"].tolist(), out["token_timestamps"].tolist()
        return [whisper_words(tokenizer, ids, at) for ids, at in zip(sequences, times)]

    def _languages(self, features) -> list[tuple[str, float]]:
        import torch

        if len(features) == 0:
            return []
        start = torch.full((len(features), 1), self.model.generation_config.decoder_start_token_id, device=self.device)
        logits = self.model(input_features=features, decoder_input_ids=start).logits[:, -1]
        best = logits[:, self.lang_ids].float().softmax(dim=-1).max(dim=-1)
        return [(self.lang_codes[i], p) for p, i in zip(best.values.tolist(), best.indices.tolist())]


def whisper_words(tokenizer, ids: list[int], times: list[float]) -> list[tuple[str, float, float]]:
    """``[(word, start, end)]`` of one decoded sequence: ``times[i]`` is where token ``i`` ends (so it starts at
    ``times[i - 1]``, the first at 0), as transformers' ASR pipeline reads them; a word starts at a token that
    begins with a space (Whisper's byte-level BPE marks it ``Ġ``) and runs to the next such token, as Whisper's
    own word timing splits English (scripts written without spaces come out as one word per run). Special tokens
    are skipped; words are cleaned like the transcripts (:func:`clean_text`) and empty ones dropped."""
    special = set(tokenizer.all_special_ids)
    groups: list[tuple[list[str], float, float]] = []
    for i, (token, end) in enumerate(zip(ids, times)):
        if token in special:
            continue
        piece = tokenizer.convert_ids_to_tokens(token)
        start = times[i - 1] if i else 0.0
        if not groups or piece.startswith("\u0120"):
            groups.append(([piece], start, end))
        else:
            groups[-1] = (groups[-1][0] + [piece], groups[-1][1], end)
    words = [(clean_text(tokenizer.convert_tokens_to_string(pieces)), start, end) for pieces, start, end in groups]
    return [(word, float(start), float(max(start, end))) for word, start, end in words if word]


class FasterWhisperTranscriber:
    """A CTranslate2 Whisper (``faster-whisper``) on the CPU with the settings of :class:`Transcriber`'s defaults:
    greedy decoding (``beam_size=1``, no temperature fallback), no timestamp tokens, no conditioning on the
    previous window, so both backends decode alike. ``texts(waves)`` and ``words(waves)`` as there."""

    sample_rate = 16_000
    window = 30 * 16_000

    def __init__(self, name: str, language: str | None, max_new_tokens: int | None, compute_type: str = "int8") -> None:
        faster_whisper = faster_whisper_module()
        path = Path(name).expanduser()
        try:
            self.model = faster_whisper.WhisperModel(
                str(path) if path.exists() else name, device="cpu", compute_type=compute_type, local_files_only=True
            )
        except Exception as err:  # a missing or foreign folder fails in CTranslate2 or huggingface_hub
            detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise ConfigError(
                f"--asr {name}: not a CTranslate2 Whisper model here (a local folder, or a faster-whisper name such as "
                "'small' or 'Systran/faster-whisper-small' in the Hugging Face cache: `hf download "
                "Systran/faster-whisper-small`; convert a transformers folder with `ct2-transformers-converter "
                f"--model DIR --output_dir OUT --copy_files tokenizer.json`): {detail}"
            ) from None
        self.options = {
            "language": language,
            "beam_size": 1,
            "temperature": 0.0,
            "without_timestamps": True,
            "condition_on_previous_text": False,
            # CTranslate2's Whisper decodes at most min(L / 2, L - prompt) tokens for faster-whisper's L = prompt
            # (4 tokens) + max_new_tokens (CTranslate2 GitHub #1856; openai-whisper's sample_len halves likewise):
            # asking 2N - 4 gives the N tokens asked, as transformers does, up to 224 (L <= 448 positions)
            "max_new_tokens": None if max_new_tokens is None else min(max(max_new_tokens, 2 * max_new_tokens - 4), 444),
        }

    def texts(self, waves: list[np.ndarray]) -> list[str]:
        return ["".join(s.text for s in self.model.transcribe(w, **self.options)[0]) for w in waves]

    def words(self, waves: list[np.ndarray]) -> list[list[tuple[str, float, float]]]:
        found = []
        for wave in waves:
            segments = self.model.transcribe(wave, word_timestamps=True, **self.options)[0]
            words = [(clean_text(w.word), float(w.start), float(w.end)) for s in segments for w in s.words or ()]
            found.append([(word, start, max(start, end)) for word, start, end in words if word])
        return found


def faster_whisper_module():
    """``faster_whisper``, or one error saying how to install the optional extra."""
    try:
        import faster_whisper
    except ImportError:
        raise ConfigError(
            "--asr-backend faster-whisper needs the optional extra: pip install 'msa_lightning[faster-whisper]' "
            "(faster-whisper, on CTranslate2)"
        ) from None
    return faster_whisper


@contextlib.contextmanager
def _exclusive(out: Path):
    """Hold ``OUT.lock`` while reading and appending ``out``: two runs appending to one file would interleave
    lines and transcribe clips twice. The lock goes with the process (a killed run leaves no stale lock; the
    empty file stays)."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{out}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DataError(
            f"{out}: another msa transcribe is writing this file (it holds {out}.lock); wait for it, "
            "or give each run its own --out (e.g. one per --ids list) and concatenate them"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _load(path: Path, sample_rate: int) -> np.ndarray | ClipError:
    try:
        return load_audio(path, sample_rate)
    except ClipError as err:
        return err


def _decoded_batches(batches: list[list[tuple[str, Path]]], sample_rate: int, workers: int):
    """``(batch, waves or ClipErrors)`` in order, decoding the next batch in threads while this one is used."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = None
        for batch in batches:
            futures = [pool.submit(_load, path, sample_rate) for _, path in batch]
            if pending is not None:
                yield pending[0], [f.result() for f in pending[1]]
            pending = (batch, futures)
        if pending is not None:
            yield pending[0], [f.result() for f in pending[1]]


def transcribe(
    model: str,
    audio: str | Path,
    out: str | Path,
    batch_size: int = 16,
    language: str | None = "en",
    device: str | None = None,
    dtype: str = "float32",
    max_new_tokens: int | None = None,
    ids: str | Path | None = None,
    workers: int = 4,
    progress: bool = True,
    detect_language: bool = False,
) -> Tally:
    """Transcribe the clips under ``audio`` that ``out`` does not hold yet (see the module docstring)."""
    import torch
    from tqdm import tqdm

    # librosa's fallback chatter on a file soundfile cannot open: the reason goes to the errors file
    warnings.filterwarnings("ignore", message="PySoundFile failed", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*audioread", category=FutureWarning)
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 1")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens}: expected at least 1")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    out, audio = Path(out).expanduser(), Path(audio).expanduser()
    if out.is_dir():
        raise ConfigError(f"--out {out}: a folder; expected the transcript file to write (e.g. {out / 'asr.tsv'})")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    asr = Transcriber(model, device, dtype, language, max_new_tokens, detect_language)  # first: fails fast
    files = index_files(audio, MEDIA_SUFFIXES)
    tally = Tally(out=out, max_new_tokens=max_new_tokens)
    missing: list[str] = []
    if ids is not None:
        wanted = read_ids(ids)
        missing = [i for i in wanted if i not in files]
        files = {i: files[i] for i in wanted if i in files}
    elif not files:
        raise DataError(f"{audio}: no audio files ({', '.join(s[1:] for s in MEDIA_SUFFIXES)}) under this folder")
    tally.found = len(files) + len(missing)

    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        partial = repair_last_line(out)
        done = set(read_transcripts(out)) if out.is_file() else set()
        known: set[str] = set()
        if detect_language:  # ids with a language line already (a redone clip keeps its first one)
            repair_last_line(language_path(out))
            known = _first_column(language_path(out))
        todo = [(clip, path) for clip, path in files.items() if normalise_id(clip) not in done]
        tally.skipped = len(files) - len(todo)
        log.info(
            f"{tally.found} clips ({audio}" + (f", the ids listed in {ids}" if ids is not None else "") + f"); "
            f"{tally.skipped} already in {out}, skipped; {len(todo) + len(missing)} to do"
        )
        lacking = sum(normalise_id(c) in done and c not in known for c in files) if detect_language else 0
        if lacking:
            log.warning(
                f"note: {lacking} clips already in {out} have no line in {language_path(out)} (transcribed "
                "without --detect-language); delete their transcript lines to have them redone"
            )
        if partial is not None:
            log.warning(
                f"{out}: its last line was incomplete (a run stopped while writing): removed, that clip is redone "
                f"({partial[:200]!r})"
            )

        if not todo and not missing:
            errors_path(out).unlink(missing_ok=True)  # every clip is in the TSV: earlier failures are gone
            return tally
        tally.window_s = asr.window / asr.sample_rate
        start = time.perf_counter()
        with (
            open(out, "a", encoding="utf-8", newline="\n") as sink,
            open(errors_path(out), "w", encoding="utf-8", newline="\n") as errors,
            (
                open(language_path(out), "a", encoding="utf-8", newline="\n")
                if detect_language
                else contextlib.nullcontext()
            ) as language_sink,
        ):

            def fail(clip: str, reason: str, detail: str) -> None:
                tally.failed[reason] += 1
                errors.write(f"{clean_text(clip)}\t{reason}\t{clean_text(detail)}\n")

            for clip in missing:
                fail(clip, "missing_audio", f"listed in {ids} but no audio file for it under {audio}")
            batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
            bar = tqdm(
                total=len(todo), unit="clip", desc="transcribe", mininterval=1.0, disable=not progress, file=sys.stderr
            )
            for batch, decoded in _decoded_batches(batches, asr.sample_rate, workers):
                lines, language_lines = _batch_lines(asr, batch, decoded, fail, tally)
                if language_sink is not None:  # before the transcripts: a clip in the TSV has its language line
                    language_sink.writelines(line for line in language_lines if line.split("\t", 1)[0] not in known)
                    language_sink.flush()
                    os.fsync(language_sink.fileno())
                sink.writelines(lines)
                sink.flush()
                os.fsync(sink.fileno())  # a finished batch survives a crash
                errors.flush()
                tally.transcribed += len(lines)
                bar.update(len(batch))
            bar.close()
        tally.seconds = time.perf_counter() - start
        return tally


def _batch_lines(
    asr: Transcriber, batch: list[tuple[str, Path]], decoded: list, fail, tally: Tally
) -> tuple[list[str], list[str]]:
    """The TSV lines of a batch's usable clips, all their 30 s windows in one ``generate`` call, and (with
    language detection) their ``id<TAB>language<TAB>probability`` lines, from each clip's first window; a clip
    that cannot be used goes to ``fail(clip, reason, detail)``."""
    pieces: list[np.ndarray] = []
    owners: list[str] = []
    firsts: list[int] = []
    for (clip, _), wave in zip(batch, decoded):
        if isinstance(wave, ClipError):
            fail(clip, wave.reason, str(wave))
        elif _BAD_ID.search(clip):
            fail(clip, "bad_id", "the file name holds a tab, newline or control character")
        else:
            cut = windows(wave, asr.window)
            tally.long_clips += len(cut) > 1
            firsts.append(len(pieces))
            pieces += cut
            owners += [clip] * len(cut)
    if not pieces:
        return [], []
    texts, capped, languages = asr(pieces, firsts)
    tally.at_limit += sum(capped)
    joined: dict[str, list[str]] = {}
    for clip, text in zip(owners, texts):
        joined.setdefault(clip, []).append(clean_text(text))
    lines = []
    for clip, parts in joined.items():
        text = clean_text(" ".join(parts))
        tally.empty += not text
        lines.append(f"{clip}\t{text}\n")
    language_lines = []
    for first, (code, p) in zip(firsts, languages):
        tally.languages[code] += 1
        language_lines.append(f"{owners[first]}\t{code}\t{p:.3f}\n")
    return lines, language_lines
