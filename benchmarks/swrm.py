"""SWRM benchmarks: training-step throughput of SWRMModule vs the Self-MM baseline, and the
sentiment-position precompute batched vs one masked position per forward pass.

Run ``python benchmarks/swrm.py --help``. Prints Markdown tables; nothing is asserted.

(a) ``train``: forward + loss + backward + Adam step on MOSI-shaped batches (``L = 50`` tokens,
    375 acoustic frames x 5, 500 visual frames x 20, random valid lengths). ``--size tiny`` uses the
    in-process tiny BERT (hidden 32); ``--size base`` a randomly initialised BERT-base-sized encoder
    (12 layers, hidden 768; no download). SWRM runs BERT twice per step (context ``h_l`` and the
    fusion pass on refined embeddings) plus three context LSTMs, so it costs roughly twice Self-MM
    when BERT dominates.
(b) ``positions``: utterances/s of the position detection on MOSI transcripts (the SpeechBrain
    file of ``../shared`` when present, else synthetic sentences): all masked copies in large
    batches (:func:`topk_batched`) vs one forward pass per masked word
    (:func:`topk_one_position_per_pass`), same masked LM, same copies, results compared.
    The word-piece vocabulary is the tiny tokenizer's in both sizes (no network for BERT's).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from msa_lightning.batch import MSABatch  # noqa: E402
from msa_lightning.data.lexicon import load_lexicon  # noqa: E402
from msa_lightning.nn import text_encoder as text_encoder_module  # noqa: E402
from msa_lightning.nn.pretrained import load_model, load_tokenizer  # noqa: E402
from msa_lightning.papers.swrm.positions import (  # noqa: E402
    candidate_tables,
    masked_copies,
    topk_batched,
    topk_one_position_per_pass,
    word_spans,
)


def _bert_base(masked_lm: bool = False):
    from transformers import BertConfig, BertForMaskedLM, BertModel

    config = BertConfig()  # bert-base sizes, random weights
    return BertForMaskedLM(config) if masked_lm else BertModel(config, add_pooling_layer=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- (a) train steps
def make_batch(batch_size: int, k: int, device: torch.device, seed: int = 0) -> MSABatch:
    g = torch.Generator().manual_seed(seed)
    length, vocab = 50, 200
    n_tok = torch.randint(8, length + 1, (batch_size,), generator=g)
    mask = (torch.arange(length)[None] < n_tok[:, None]).long()
    ids = torch.randint(30, vocab, (batch_size, length), generator=g) * mask
    ids[:, 0] = 2
    ids[torch.arange(batch_size), n_tok - 1] = 3
    a_len = torch.randint(100, 376, (batch_size,), generator=g)
    v_len = torch.randint(100, 501, (batch_size,), generator=g)
    batch = MSABatch(
        text_ids=ids,
        text_mask=mask,
        text_segment=torch.zeros_like(ids),
        audio=torch.randn(batch_size, 375, 5, generator=g),
        audio_lengths=a_len,
        vision=torch.randn(batch_size, 500, 20, generator=g),
        vision_lengths=v_len,
        labels={"M": torch.empty(batch_size).uniform_(-3, 3, generator=g)},
        index=torch.arange(batch_size),
        extras={
            "swrm_position": torch.randint(1, 6, (batch_size,), generator=g),
            "swrm_gate": (torch.rand(batch_size, generator=g) < 0.6).float(),
            "swrm_candidates": torch.randint(30, vocab, (batch_size, k), generator=g),
        },
    )
    return MSABatch(**{f: _to(getattr(batch, f), device) for f in batch.__dataclass_fields__})


def _to(x, device):
    if torch.is_tensor(x):
        return x.to(device)
    if isinstance(x, dict):
        return {k: v.to(device) for k, v in x.items()}
    return x


def bench_train(size: str, batch_size: int, steps: int, warmup: int, device: torch.device, k: int) -> list[dict]:
    from msa_lightning.papers.swrm.module import SelfMMModule, SWRMModule

    original = text_encoder_module.load_model
    if size == "base":
        text_encoder_module.load_model = lambda name, **kw: _bert_base()
    rows = []
    try:
        batch = make_batch(batch_size, k, device)
        for cls in (SelfMMModule, SWRMModule):
            torch.manual_seed(0)
            extra = {"mask_token_id": 4} if cls is SWRMModule else {}
            model = cls(text_model="tiny-bert", audio_dim=5, vision_dim=20, label_bound=3.0, **extra).to(device).train()
            model.ulgm.init_labels(torch.zeros(batch_size))
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step(epoch: int = 2) -> None:
                out = model(batch)
                w = model.ulgm.weights(batch.index)
                y = model.ulgm.labels(batch.index)
                loss = (out.M - y["M"]).abs().mean() + sum(
                    (w[s] * (out.unimodal[s] - y[s]).abs()).mean() for s in "TAV"
                )
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                model.ulgm.update(batch.index, out.features, epoch=epoch)

            for _ in range(warmup):
                step()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            elapsed = time.perf_counter() - t0
            params = sum(p.numel() for p in model.parameters())
            rows.append(
                {
                    "model": cls.__name__,
                    "size": size,
                    "batch": batch_size,
                    "s/step": elapsed / steps,
                    "samples/s": batch_size * steps / elapsed,
                    "params": params,
                }
            )
    finally:
        text_encoder_module.load_model = original
    return rows


# ----------------------------------------------------------------------------- (b) positions
def transcripts(limit: int) -> tuple[list[str], str]:
    shared = REPO.parent / "shared" / "data" / "mosi" / "asr" / "speechbrain.tsv"
    if shared.is_file():
        texts = [
            line.split("\t", 1)[1].strip() for line in shared.read_text(encoding="utf-8").splitlines() if "\t" in line
        ]
        return texts[:limit], f"MOSI SpeechBrain transcripts ({shared.name})"
    rng = np.random.default_rng(0)
    words = "i was really upset about it the movie so good bad great plot actor think just like".split()
    return [" ".join(rng.choice(words, size=rng.integers(4, 20))) for _ in range(limit)], "synthetic sentences"


def bench_positions(
    size: str, n_batched: int, n_naive: int, batch_size: int, k: int, device: torch.device
) -> list[dict]:
    tok = load_tokenizer("tiny-bert")
    mlm = (_bert_base(masked_lm=True) if size == "base" else load_model("tiny-bert", masked_lm=True)).to(device).eval()
    allowed, _ = candidate_tables(tok, load_lexicon())
    texts, source = transcripts(max(n_batched, n_naive))
    ids, spans = word_spans(texts, tok, 50)
    copies_per_text = [masked_copies(seq, sp, tok.mask_token_id) for seq, sp in zip(ids, spans)]
    rows = []
    results = {}
    for mode, n in (("batched", n_batched), ("one position per pass", n_naive)):
        copies = [c for per in copies_per_text[:n] for c in per]
        fn = (
            (lambda c: topk_batched(mlm, c, k, allowed, tok.pad_token_id, batch_size, device, progress=False))
            if mode == "batched"
            else (lambda c: topk_one_position_per_pass(mlm, c, k, allowed, device))
        )
        fn(copies[: min(len(copies), 64)])  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        results[mode] = fn(copies)
        _sync(device)
        elapsed = time.perf_counter() - t0
        rows.append(
            {
                "mlm": size,
                "mode": mode,
                "utterances": n,
                "masked copies": len(copies),
                "seconds": elapsed,
                "utterances/s": n / elapsed,
                "copies/s": len(copies) / elapsed,
            }
        )
    n = min(n_batched, n_naive)
    m = sum(len(per) for per in copies_per_text[:n])
    same = np.mean(results["batched"][:m] == results["one position per pass"][:m])
    for r in rows:
        r["same top-k"] = f"{100 * same:.1f}%"
    print(f"\n(positions source: {source}, k = {k}, batch {batch_size} copies)")
    return rows


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="*", help="train and/or positions (default: both)")
    p.add_argument("--size", nargs="+", default=["tiny"], choices=["tiny", "base"])
    p.add_argument("--batch-size", type=int, default=64, help="training batch (SWRM Table 4: 64 or 128)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--utterances", type=int, default=2199, help="utterances for the batched precompute")
    p.add_argument("--naive-utterances", type=int, default=100, help="utterances for one-position-per-pass")
    p.add_argument("--mlm-batch", type=int, default=512, help="masked copies per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    args.what = args.what or ["train", "positions"]
    if set(args.what) - {"train", "positions"}:
        p.error(f"unknown benchmark(s) {sorted(set(args.what) - {'train', 'positions'})}; expected train, positions")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# SWRM benchmarks on {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if "train" in args.what:
        rows = [
            r for size in args.size for r in bench_train(size, args.batch_size, args.steps, args.warmup, device, args.k)
        ]
        for size in args.size:
            sub = [r for r in rows if r["size"] == size]
            sub[0]["step time vs Self-MM"] = "1.00x"
            sub[1]["step time vs Self-MM"] = f"{sub[1]['s/step'] / sub[0]['s/step']:.2f}x"
        print("\n## training steps (forward + loss + backward + Adam + ULGM update)\n")
        print(table(rows))
    if "positions" in args.what:
        rows = [
            r
            for size in args.size
            for r in bench_positions(size, args.utterances, args.naive_utterances, args.mlm_batch, args.k, device)
        ]
        print("\n## sentiment position precompute\n")
        print(table(rows))


if __name__ == "__main__":
    main()
