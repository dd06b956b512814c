"""`--asr` backends: transformers' Whisper against faster-whisper (CTranslate2) on the same clips; clips/s, peak memory.

Run ``python benchmarks/asr_backends.py --help``. Prints Markdown tables; nothing is asserted.

**The weights are random: only speed is measured, never what a model hears.** No model hub is reachable here,
so each model has the *architecture* of openai/whisper-tiny (and ``--sizes base``: openai/whisper-base) from
its config values (d_model, layers, heads, feed-forward size, 80 mel bins, 1500 audio positions, 448 text
positions) and a vocabulary of the same 51865 ids in Whisper's layout (:func:`~msa_lightning.nn.pretrained.
whisper_tokenizer`: byte-level BPE with 50001 merges, 99 language tokens, the task tokens and 1501 time
tokens), randomly initialised (:func:`~msa_lightning.nn.pretrained.tiny_whisper` with those sizes), saved with
``save_pretrained`` and converted for faster-whisper with CTranslate2's public converter
(``TransformersConverter``, int8 and float32 weights).

Both backends run what ``msa features extract --asr`` runs (:class:`~msa_lightning.corpus.transcribe.Transcriber`,
float32 on the CPU, batches of ``--batch-size`` clips; :class:`~msa_lightning.corpus.transcribe.
FasterWhisperTranscriber`, one clip at a time, greedy, no timestamp tokens) on ``--clips`` clips of
``--seconds`` s at 16 kHz (a tone with a pitch wobble plus noise, the same arrays for every run), English.
``<|endoftext|>`` is suppressed in both, so every clip decodes exactly ``--tokens`` tokens (checked: the table
gives the tokens decoded per clip). Text only, then with word timestamps (``--align words``: transformers'
token timestamps from cross-attention DTW, faster-whisper's ``word_timestamps=True``).

Each configuration runs in its own process (the model loaded, one clip to warm up, then the clips timed), so
the peak resident memory (``VmHWM``) is that configuration's own. ``OMP_NUM_THREADS`` is the same for all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measure import load_average  # noqa: E402

#: openai/whisper-tiny's and -base's config.json values (the rest is shared: 80 mel bins, 1500 / 448 positions)
SIZES = {
    size: {
        "d_model": width,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": 4 * width,
        "decoder_ffn_dim": 4 * width,
    }
    for size, width, layers, heads in (("tiny", 384, 4, 6), ("base", 512, 6, 8))
}
RATE = 16_000


def clips(count: int, seconds: float) -> list[np.ndarray]:
    """The same ``count`` waves in every process: a wobbling tone plus noise, 16 kHz."""
    t = np.arange(int(seconds * RATE)) / RATE
    waves = []
    for i in range(count):
        rng = np.random.default_rng(i)
        pitch = 120 + 20 * i % 180 + 10 * np.sin(2 * np.pi * 0.5 * t)
        wave = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / RATE) + 0.02 * rng.normal(size=len(t))
        waves.append(wave.astype(np.float32))
    return waves


def build_models(size: str, folder: Path) -> dict[str, str]:
    """A random Whisper of ``size``'s architecture saved in ``folder/hf``, and its CTranslate2 conversions
    ``folder/ct2-int8`` and ``folder/ct2-float32``: ``{name: path}``."""
    from ctranslate2.converters import TransformersConverter
    from tokenizers import pre_tokenizers

    from msa_lightning.nn.pretrained import tiny_whisper, whisper_tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [(a, b) for a in alphabet for b in alphabet][:50001]  # 256 bytes + 50001 merges = Whisper's 50257
    tokenizer = whisper_tokenizer(merges, languages=99, timestamps=True)
    model, processor = tiny_whisper(0, tokenizer, **SIZES[size])
    assert model.config.vocab_size == 51865, model.config.vocab_size
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.suppress_tokens = sorted({*model.generation_config.suppress_tokens, end})  # fixed length
    hf = folder / "hf"
    model.save_pretrained(hf)
    processor.save_pretrained(hf)
    paths = {"hf": str(hf), "parameters": sum(p.numel() for p in model.parameters())}
    for quantization in ("int8", "float32"):
        out = folder / f"ct2-{quantization}"
        TransformersConverter(str(hf), copy_files=["tokenizer.json"]).convert(str(out), quantization=quantization)
        paths[f"ct2-{quantization}"] = str(out)
    return paths


def run_one(args: argparse.Namespace) -> dict:
    """One configuration in this process: load, warm up on one clip, time the clips; the figures as a dict."""
    from msa_lightning.corpus.transcribe import FasterWhisperTranscriber, Transcriber

    waves = clips(args.clips, args.seconds)
    started = time.perf_counter()
    if args.run == "transformers":
        asr = Transcriber(args.model, "cpu", "float32", "en", args.tokens, word_timestamps=args.words)
        loaded = time.perf_counter() - started

        def decode(batch: list[np.ndarray]) -> list[int]:
            if args.words:  # the same generate call (eos suppressed), its length checked without word timestamps
                asr.words(batch)
                return []
            _, capped, _ = asr(batch)
            return [args.tokens if c else -1 for c in capped]  # -1: ended early (an end token came)

        batch_size = args.batch_size
    else:
        asr = FasterWhisperTranscriber(args.model, "en", args.tokens, compute_type=args.compute_type)
        loaded = time.perf_counter() - started
        # as the transformers model's generation config: every special token (the end, time tokens too) suppressed
        end, size = asr.model.hf_tokenizer.token_to_id("<|endoftext|>"), asr.model.hf_tokenizer.get_vocab_size()
        options = {**asr.options, "suppress_tokens": list(range(end, size)), "word_timestamps": args.words}

        def decode(batch: list[np.ndarray]) -> list[int]:
            return [sum(len(s.tokens) for s in asr.model.transcribe(w, **options)[0]) for w in batch]

        batch_size = 1
    decode(waves[:1])  # warm-up: first-call allocations, lazy initialisation (words: their alignment too)
    load = load_average()
    started = time.perf_counter()
    tokens = []
    for i in range(0, len(waves), batch_size):
        tokens += decode(waves[i : i + batch_size])
    wall = time.perf_counter() - started
    return {
        "clips": len(waves),
        "wall": wall,
        "load_s": loaded,
        "tokens": sorted(set(tokens)),
        "peak_mib": peak_rss_mib(),
        "uptime": load,
    }


def peak_rss_mib() -> float:
    """This process's peak resident memory: ``VmHWM`` (``getrusage``'s maximum survives the ``exec`` that started
    the process, so it would report the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(backend: str, model: str, args: argparse.Namespace, **extra) -> dict:
    command = [
        sys.executable, __file__, "--run", backend, "--model", model, "--clips", str(args.clips),
        "--seconds", str(args.seconds), "--tokens", str(args.tokens),
    ]  # fmt: skip
    for key, value in extra.items():
        if value is True:
            command.append(f"--{key.replace('_', '-')}")
        elif value is not False:
            command += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["tiny"])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length (VoxCeleb's are about 8 s)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens decoded per clip (about an 8 s sentence)")
    parser.add_argument("--batch-size", type=int, default=8, help="transformers' batch (msa features extract: 8)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every configuration")
    parser.add_argument("--words", action="store_true", help="(one configuration) with word timestamps")
    parser.add_argument("--run", choices=("transformers", "faster-whisper"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--compute-type", default="int8", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(args)))
        return
    import ctranslate2
    import faster_whisper
    import torch
    import transformers

    print(
        f"RANDOM WEIGHTS: only speed is measured. {args.clips} clips of {args.seconds:g} s, {args.tokens} tokens each; "
        f"OMP_NUM_THREADS={args.threads}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"faster-whisper {faster_whisper.__version__}, ctranslate2 {ctranslate2.__version__}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    header = (
        "architecture | backend | weights | batch | word timestamps | tokens/clip | load s | clips/s | peak RSS MiB"
    )
    print(f"| {header} | `uptime` load |")
    print("|---|---|---|---:|---|---|---:|---:|---:|---|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            paths = build_models(size, Path(tmp))
            name = f"whisper-{size} ({paths['parameters'] / 1e6:.1f} M parameters)"
            runs = []
            for words in (False, True):
                for batch in sorted({1, args.batch_size}) if not words else [args.batch_size]:
                    runs.append(("transformers", "float32", batch, words, paths["hf"], {"batch_size": batch}))
                for weights in ("int8", "float32") if not words else ("int8",):
                    extra = {"compute_type": weights}
                    runs.append(("faster-whisper", weights, 1, words, paths[f"ct2-{weights}"], extra))
            for backend, weights, batch, words, model, extra in runs:
                r = child(backend, model, args, words=words, **extra)
                tokens = "/".join(str(t) for t in r["tokens"]) or "as without"
                print(
                    f"| {name} | {backend} | {weights} | {batch} | {'yes' if words else 'no'} | {tokens} | "
                    f"{r['load_s']:.1f} | {r['clips'] / r['wall']:.2f} | {r['peak_mib']:.0f} | {r['uptime']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
