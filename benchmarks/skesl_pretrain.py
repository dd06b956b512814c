"""SKESL pretraining step: samples/s and peak memory of ``SKESLPretrain`` at BERT-base and tiny size.

Run ``python benchmarks/skesl_pretrain.py --help``. Prints a Markdown table; asserts nothing.

A step is what ``msa fit`` does per batch: forward (BERT on the masked sentence, ``L`` non-verbal injection
blocks, the intensity predictor at the masked pieces), the L1 loss of Eq. 9, backward and an Adam step with
the module's own parameter groups (``encoder_lr`` for BERT, ``lr`` for the rest). BERT is trained too (the
paper's end-to-end setting; ``--freeze-text`` gives the released script's frozen BERT).

Batches have the paper's shapes: 39 tokens (the released code's length, not trimmed), audio 33-d x 400 frames,
vision 709-d x 55 frames, with random valid lengths (audio 200-400, vision 30-55 frames, so the padding masks
are exercised). The token ids, masked pieces and labels come from the real sentiment-word masking
(``mask_sentiment_words``, VADER) of synthetic sentences with the tiny word-piece tokenizer (its ids fit BERT's
vocabulary; no download); frames are random (the step's cost does not depend on their values).

Sizes (``--size``):

* ``base``: a randomly initialised BERT with bert-base-uncased's configuration (768 hidden, 12 layers,
  12 heads, 3072 inner), built in-process; blocks with d_T = 768 and FFN 4 d_T, predictor hidden 256 (Table 9);
* ``tiny``: the in-process ``tiny-bert`` (hidden 32, 2 layers), FFN 64, predictor hidden 16.

Each size runs in a fresh process, so peak memory is its own: CPU = peak RSS during the steps minus RSS before
them (``VmHWM`` reset through ``/proc/self/clear_refs``); CUDA = ``torch.cuda.max_memory_allocated`` over the
steps. ``process CPU s/step`` is the process's CPU time (all threads, warm-up steps included) per step: on a
shared CPU it moves less with other processes' load than the wall-clock figure. On a GPU: ``--device cuda --bf16`` (bf16
autocast; weights and Adam state stay float32).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

from measure import measure_steps

TEXT_LENGTH, AUDIO, VISION = 39, (400, 33), (55, 709)
_WORDS = (
    "i",
    "think",
    "the",
    "movie",
    "was",
    "really",
    "just",
    "so",
    "it",
    "actor",
    "story",
    "and",
    "this",
    "good",
    "bad",
    "great",
    "awful",
    "love",
    "hate",
    "boring",
    "happy",
    "sad",
    "best",
    "worst",
)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def make_batch(batch_size: int, seed: int = 0):
    """One pretraining batch of the paper's shapes (module docstring), on the CPU."""
    import numpy as np
    import torch

    from msa_lightning.batch import MSABatch
    from msa_lightning.nn.pretrained import load_tokenizer
    from msa_lightning.papers.skesl.masking import mask_sentiment_words

    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(_WORDS, size=int(rng.integers(5, 30)))) for _ in range(batch_size)]
    masked = mask_sentiment_words(texts, load_tokenizer("tiny-bert"), TEXT_LENGTH)
    g = torch.Generator().manual_seed(seed)
    ids = torch.from_numpy(masked.ids)
    return MSABatch(
        text_ids=ids[:, 0],
        text_mask=ids[:, 1],
        text_segment=ids[:, 2],
        audio=torch.randn(batch_size, *AUDIO, generator=g),
        audio_lengths=torch.randint(200, AUDIO[0] + 1, (batch_size,), generator=g),
        vision=torch.randn(batch_size, *VISION, generator=g),
        vision_lengths=torch.randint(30, VISION[0] + 1, (batch_size,), generator=g),
        labels={},
        index=torch.arange(batch_size),
        ids=[f"clip{i}" for i in range(batch_size)],
        extras={"skesl_target": torch.from_numpy(masked.target), "skesl_label": torch.from_numpy(masked.label)},
    )


def build_module(size: str, blocks: int, freeze_text: bool):
    """``SKESLPretrain`` with Table 9's optimiser settings; at ``base`` size its text model is a random
    bert-base-uncased-shaped BERT (the module's loader is pointed at it for the duration of the build)."""
    from msa_lightning.nn import text_encoder as text_encoder_module
    from msa_lightning.papers.skesl.module import SKESLPretrain

    common = dict(
        audio_dim=AUDIO[1],
        vision_dim=VISION[1],
        num_blocks=blocks,
        finetune_text=not freeze_text,
        optimizer="adam",
        encoder_lr=5e-6,
        lr=1e-4,
    )
    if size == "tiny":
        return SKESLPretrain(text_model="tiny-bert", ffn_dim=64, head_hidden=16, **common)
    from transformers import BertConfig, BertModel

    original = text_encoder_module.load_model
    text_encoder_module.load_model = lambda name, **kw: BertModel(BertConfig(), add_pooling_layer=False)
    try:
        return SKESLPretrain(text_model="bert-base-uncased", head_hidden=256, **common)
    finally:
        text_encoder_module.load_model = original


def _worker(size: str, args: argparse.Namespace, queue) -> None:
    import torch

    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        device = torch.device(args.device)
        model = build_module(size, args.blocks, args.freeze_text).to(device).train()
        batch = model.transfer_batch_to_device(make_batch(args.batch_size), device, 0)
        optimizer = model.configure_optimizers()
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

        def step(i: int) -> None:
            with autocast:
                loss, _ = model.compute_loss(model(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        cpu0 = time.process_time()
        r = measure_steps(step, args.warmup, args.steps, device)
        cpu_s = (time.process_time() - cpu0) / (args.warmup + args.steps)  # all threads: robust to a shared CPU
        queue.put(
            {
                "params": sum(p.numel() for p in model.parameters()),
                "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "ms": 1000 * r["median_s"],
                "min_ms": 1000 * r["min_s"],
                "samples_s": args.batch_size / r["median_s"],
                "mem": r["mem"],
                "exact": r["exact"],
                "cpu_s": cpu_s,
            }
        )
    except Exception as err:  # report, do not hang the parent
        queue.put({"error": f"{type(err).__name__}: {err}"})


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    p.add_argument("--batch-size", type=int, default=32, help="clips per step (Table 9: 32)")
    p.add_argument("--blocks", type=int, default=4, help="L, the non-verbal injection blocks (Table 9: 4)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--freeze-text", action="store_true", help="frozen BERT (the released pretraining script)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for size in args.size:
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(size, args, queue))
        proc.start()
        res = queue.get()
        proc.join()
        if "error" in res:
            rows.append([size, "-", "-", "-", "-", "-", res["error"]])
            continue
        mem = f"{res['mem'] / 2**20:,.0f}" + ("" if res["exact"] else " (ru_maxrss)")
        rows.append(
            [
                size,
                f"{res['params'] / 1e6:.1f} M ({res['trainable'] / 1e6:.1f} M trained)",
                f"{res['ms']:,.0f} ({res['min_ms']:,.0f})",
                f"{res['cpu_s']:,.2f}",
                f"{res['samples_s']:,.1f}",
                mem,
                "",
            ]
        )
    mem_kind = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS growth"
    device = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()}, {args.threads or torch.get_num_threads()} threads"
    )
    print(
        f"### SKESL pretraining step: batch {args.batch_size}, L = {args.blocks}, text {TEXT_LENGTH} tokens, "
        f"audio {AUDIO[1]}-d x {AUDIO[0]}, vision {VISION[1]}-d x {VISION[0]}, {args.warmup} warm-up + "
        f"{args.steps} timed steps, {args.device}{' bf16' if args.bf16 else ''}"
        f"{', BERT frozen' if args.freeze_text else ''}; torch {torch.__version__}, {device}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print(
        table(
            [
                "size",
                "params",
                "ms/step median (min)",
                "process CPU s/step",
                "samples/s",
                f"memory MiB ({mem_kind})",
                "error",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
