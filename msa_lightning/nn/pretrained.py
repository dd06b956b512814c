"""Loading pretrained Hugging Face models and tokenizers, offline-first, with clear errors.

Names are Hugging Face hub names (``bert-base-uncased``) or local directories. The loader looks
in the local Hugging Face cache first and only then asks the hub (once, and only when the hub's host
answers within seconds: no retry loop on a machine without network), so such a machine works as long
as the model was downloaded once. When neither has it, :class:`PretrainedNotAvailable`
says what was looked for, where, and how to get it, instead of a network traceback.

Special names ``tiny-bert`` and ``tiny-xlnet`` build small randomly initialised models in-process
(no files at all): they are what the tests, the synthetic quickstart and the benchmarks use;
``tiny-whisper`` does the same for speech recognition (:func:`load_speech_recognizer`).
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

from torch import nn
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertTokenizerFast,
    PretrainedConfig,
    PreTrainedModel,
    XLNetConfig,
)

from msa_lightning.errors import ConfigError, MSAError


class PretrainedNotAvailable(MSAError, RuntimeError):
    """A pretrained model or tokenizer is neither a local path nor in the Hugging Face cache."""


#: Vocabulary size of BERT's uncased vocabulary: tiny models keep it so that token ids stored in
#: real and synthetic feature files (``text_bert``) index valid embeddings.
BERT_VOCAB_SIZE = 30522

TINY_MODELS = ("tiny-bert", "tiny-xlnet")
TINY_SPEECH_MODELS = ("tiny-whisper",)


def tiny_config(name: str, hidden_size: int = 32, num_layers: int = 2) -> PretrainedConfig:
    if name == "tiny-bert":
        return BertConfig(
            vocab_size=BERT_VOCAB_SIZE,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=2,
            intermediate_size=2 * hidden_size,
            max_position_embeddings=512,
        )
    if name == "tiny-xlnet":
        return XLNetConfig(
            vocab_size=BERT_VOCAB_SIZE,
            d_model=hidden_size,
            n_layer=num_layers,
            n_head=2,
            d_inner=2 * hidden_size,
            pad_token_id=0,
        )
    raise ValueError(f"unknown tiny model {name!r}; expected one of {TINY_MODELS}")


def _missing_message(what: str, name: str, reason: str, tiny: tuple[str, ...] = TINY_MODELS) -> str:
    cache = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return (
        f"pretrained {what} {name!r} is not available: it is not a local directory, not in the "
        f"Hugging Face cache ({cache}), and {reason}. "
        f"On a machine with network run `hf download {name}` (older huggingface_hub: `huggingface-cli download "
        f"{name}`), then copy the cache, "
        f"or pass a local directory; for tests use one of {tiny}."
    )


def _offline() -> bool:
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@functools.lru_cache(maxsize=None)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection within ``timeout`` seconds (checked once per
    process). Without it, a download attempt on a machine with no network retries for half a minute."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    port = urlparse(constants.ENDPOINT).port or 443
    result: list[bool] = []

    def connect() -> None:  # name resolution has no timeout of its own: run it in a thread we can abandon
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def _from_pretrained(loader, what: str, name: str, tiny: tuple[str, ...] = TINY_MODELS, **kwargs):
    """A local path, else the local cache, else the hub (once, only if it is reachable): every failure
    becomes one :class:`PretrainedNotAvailable` (its message suggests the in-process ``tiny`` names)."""
    if Path(name).expanduser().exists():
        return loader(str(Path(name).expanduser()), **kwargs)
    try:
        return loader(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if _offline():
        raise PretrainedNotAvailable(
            _missing_message(what, name, "offline mode is on (HF_HUB_OFFLINE)", tiny)
        ) from None
    if not hub_reachable():
        raise PretrainedNotAvailable(
            _missing_message(what, name, "the hub cannot be reached (no network)", tiny)
        ) from None
    try:
        return loader(name, **kwargs)
    except Exception as err:  # not found, gated, connection lost: errors come in many types
        detail = str(err).splitlines()[0][:200] if str(err) else ""
        raise PretrainedNotAvailable(
            _missing_message(what, name, f"the hub did not provide it ({type(err).__name__}: {detail})", tiny)
        ) from None


def load_model(name: str, masked_lm: bool = False, **kwargs) -> PreTrainedModel:
    """A pretrained encoder (``AutoModel``) or masked LM (``AutoModelForMaskedLM``), in training mode
    like any new module (``from_pretrained`` returns eval mode; fine-tuning must not run without dropout)."""
    cls = AutoModelForMaskedLM if masked_lm else AutoModel
    if name in TINY_MODELS:
        return cls.from_config(tiny_config(name, **kwargs))
    return _from_pretrained(cls.from_pretrained, "model", name).train()


def freeze(module: nn.Module) -> nn.Module:
    """A frozen extractor: no gradients for its weights, and eval mode (no dropout) for good: the
    suite's LightningModules keep modules marked ``frozen_extractor`` in eval mode during training."""
    module.requires_grad_(False)
    module.eval()
    module.frozen_extractor = True
    return module


# A small English word-piece vocabulary for the in-process tiny tokenizer: special tokens, letters
# (so every word can be split into pieces) and a few hundred frequent words of movie reviews.
_TINY_WORDS = (
    "the a an and or but if so to of in on at for with about from by as is are was were be been "
    "it this that these those i you he she we they me my your his her our their him them not no "
    "do does did have has had can could will would should very really just like so too also more "
    "most much many some any all one two good bad great awesome terrible funny sad happy upset set "
    "love hate best worst nice boring amazing awful cool fun stupid interesting beautiful ugly "
    "movie film story actor actors acting part parts character characters plot scene scenes end "
    "think know mean say said see saw watch watched go going get got make made want feel felt "
    "well yeah um uh okay lot little think thing things time way people guy guys actually pretty"
).split()


@functools.lru_cache(maxsize=None)
def _tiny_tokenizer_dir() -> str:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = ["##" + c for c in letters]
    vocab = specials + letters + pieces + list(dict.fromkeys(_TINY_WORDS))
    folder = tempfile.mkdtemp(prefix="msa_tiny_tokenizer_")
    ids = {token: i for i, token in enumerate(vocab)}
    BertTokenizerFast(vocab=ids, do_lower_case=True).save_pretrained(folder)
    return folder


def load_tokenizer(name: str):
    """A Hugging Face tokenizer by name or path; ``tiny-bert``/``tiny-xlnet`` give an in-process
    word-piece tokenizer over a small English vocabulary (ids fit the tiny models)."""
    if name in TINY_MODELS:
        return AutoTokenizer.from_pretrained(_tiny_tokenizer_dir())
    return _from_pretrained(AutoTokenizer.from_pretrained, "tokenizer", name)


def require_tokenizer(name: str, where: str):
    """:func:`load_tokenizer`, for commands that check it before their long work: a tokenizer that is not
    available is one :class:`~msa_lightning.errors.ConfigError` starting with ``where`` (the option that named
    it), its message saying how to get it."""
    try:
        return load_tokenizer(name)
    except PretrainedNotAvailable as err:
        raise ConfigError(f"{where} {name}: {err}") from None


# ---------------------------------------------------------------------------------------------- speech recognition
def whisper_tokenizer(merges: list[tuple[str, str]] | None = None, languages: int | None = None, timestamps=False):
    """A byte-level BPE tokenizer in Whisper's layout, built offline: the 256 byte symbols and ``merges`` (by
    default a few), then ``<|endoftext|>``, ``<|startoftranscript|>``, one token per Whisper language (the first
    ``languages`` of transformers' list, contiguous, in Whisper's order: the tokenizer finds a language token by
    its offset), the task tokens, ``<|notimestamps|>`` and, with ``timestamps``, the 1501 time tokens
    ``<|0.00|>`` ... ``<|30.00|>``. Any text can be encoded; it is not Whisper's vocabulary. With 50001 merges,
    99 languages and the time tokens it has openai/whisper-tiny's 51865 ids, the same ids in the same places."""
    from tokenizers import pre_tokenizers
    from transformers import WhisperTokenizer
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    if merges is None:
        merges = [("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("\u0120", "a"), ("i", "n"), ("e", "r")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)  # adds <|endoftext|> (unk, bos and eos)
    specials = (
        ["<|startoftranscript|>"]
        + [f"<|{code}|>" for code in list(LANGUAGES)[:languages]]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
        + ([f"<|{i * 0.02:.2f}|>" for i in range(1501)] if timestamps else [])
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def tiny_whisper(seed: int = 0, tokenizer=None, **architecture):
    """``(model, processor)``: a randomly initialised two-layer Whisper (d_model 32, 80 mel bins, 30 s
        windows) with the tokenizer of :func:`whisper_tokenizer` and a generation config that has what
        ``generate(language=..., task=...)`` needs (language and task token ids, ``<|notimestamps|>``). Its
        special tokens other than ``<|endoftext|>`` are suppressed so random weights emit text. Output is junk
    (bytes, control characters among them), different from clip to clip:
        it is for tests and throughput measurements; ``save_pretrained`` both to make a local model folder.
        ``tokenizer`` (default :func:`whisper_tokenizer`'s small one) and ``architecture`` (``WhisperConfig``
        values: ``d_model``, ``encoder_layers``, ...) give other sizes, e.g. openai/whisper-tiny's with random
        weights (``benchmarks/asr_backends.py``)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    tokenizer = tokenizer or whisper_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    sizes = {
        "d_model": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
    }
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        **{**sizes, **architecture},
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=start,
        begin_suppress_tokens=None,
        suppress_tokens=None,
        init_std=0.2,
    )  # BERT-like 0.02 makes every clip's output the same repeated token
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = WhisperForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    generation = GenerationConfig(  # not derived from the model config: such a config is not saved as is
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        decoder_start_token_id=start,
        max_length=448,
        is_multilingual=True,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in ids},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        suppress_tokens=sorted(i for token, i in ids.items() if i != end),
        begin_suppress_tokens=[end],
    )
    model.generation_config = generation
    return model, WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer)


def load_speech_recognizer(name: str):
    """``(model, processor)`` of a speech-to-text model (``AutoModelForSpeechSeq2Seq``, e.g. the Whisper
    family) by hub name or local folder, offline-first like :func:`load_model`, in eval mode;
    ``tiny-whisper`` gives :func:`tiny_whisper`."""
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    if name in TINY_SPEECH_MODELS:
        return tiny_whisper()
    tiny = TINY_SPEECH_MODELS
    try:
        processor = _from_pretrained(AutoProcessor.from_pretrained, "speech-recognition processor", name, tiny)
        model = _from_pretrained(AutoModelForSpeechSeq2Seq.from_pretrained, "speech-recognition model", name, tiny)
    except (OSError, ValueError, KeyError) as err:  # a local folder that holds something else
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise MSAError(
            f"{name}: not a speech-recognition model folder (a processor and a model saved with "
            f"save_pretrained, e.g. a downloaded openai/whisper-small): {detail}"
        ) from None
    return model.eval(), processor
