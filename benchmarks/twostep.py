"""TwoStepMSA benchmark: raw-clip decoding, step 2 with and without the stored extractor outputs, and
the train step of each regime at base sizes.

Run ``python benchmarks/twostep.py --help``. Prints Markdown tables (and ``--json`` writes them);
nothing is asserted. Clips come from :func:`msa_lightning.media.synthetic.make_synthetic_raw` (mp4 files
written with PyAV: MPEG-4 video at ``--video-size``, AAC stereo audio, 0.5-1 s each).

1. ``decode``: the first pass of :class:`RawMediaDataModule` (PyAV decode, 16 kHz mono audio, frames at
   10 fps resized to ``--frame-size``, written into the store), in clips/s, with ``--decode-workers``
   processes; then a second DataModule on the same store (nothing decoded: memory-mapped reads), and
   one pass over the training loader from the store (padded batches assembled).
2. ``step2``: one step-2 epoch (MulT + the M head on the training clips) with the extractor outputs
   stored once (:class:`ExtractedFeaturesDataModule`; the one-time extraction reported apart) against
   the switch ``model.init_args.step2_inputs=raw``, which runs the frozen extractors inside the model at
   every step, as a run without the cache would.
3. ``regimes``: train-step time (forward, Eq. 2 loss, backward, Adam step; median of ``--steps`` after
   ``--warmup``) and peak memory of single, joint, step1 (T, A, V) and step2 on one batch of
   ``--batch-size`` clips.

Extractors: ``--extractors base`` builds BERT-base, HuBERT-base and Video Swin-T (``swin3d_t``) with
*random* weights in-process (BertConfig()/HubertConfig() defaults, saved once to folders so the suite
loads them like downloaded ones; no hub is reachable here): the sizes and costs of the paper's models,
not their outputs. ``--extractors tiny``: tiny-bert / tiny-hubert / tiny-swin3d (quick smoke run).
``--device cuda`` runs sections 2 and 3 on a GPU (peak memory from the CUDA allocator then).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from measure import measure_steps  # noqa: E402

from msa_lightning.data.base import DataFacts  # noqa: E402


def _load() -> str:
    """``uptime``'s 1/5/15-minute load averages (the machine may be shared)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def base_extractors(folder: Path) -> dict[str, str]:
    """Random-init BERT-base / HuBERT-base saved as local folders (with the in-process tiny tokenizer:
    its ids fit BERT-base's vocabulary), so models and DataModules load them by path."""
    import torch
    from transformers import BertConfig, BertModel, HubertConfig, HubertModel

    from msa_lightning.nn.pretrained import load_tokenizer

    bert, hubert = folder / "bert-base-random", folder / "hubert-base-random"
    if not (bert / "config.json").is_file():
        torch.manual_seed(0)
        BertModel(BertConfig()).save_pretrained(bert)
        load_tokenizer("tiny-bert").save_pretrained(bert)
    if not (hubert / "config.json").is_file():
        torch.manual_seed(0)
        HubertModel(HubertConfig()).save_pretrained(hubert)
    # costs, not quality: a random Swin-T on purpose (its cost equals the Kinetics model's)
    return {"text_model": str(bert), "audio_model": str(hubert), "video_arch": "swin3d_t", "video_random_init": True}


TINY = {"text_model": "tiny-bert", "audio_model": "tiny-hubert", "video_arch": "tiny-swin3d"}


# ---------------------------------------------------------------------------------------------- 1. decode
def bench_decode(release: Path, work: Path, args) -> dict:
    from msa_lightning.data.raw import RawMediaDataModule

    cache = work / "decode_cache"
    shutil.rmtree(cache, ignore_errors=True)
    make = lambda: RawMediaDataModule(
        str(release),
        tokenizer="tiny-bert",
        size=args.frame_size,  # noqa: E731
        batch_size=args.batch_size,
        cache_dir=str(cache),
        decode_workers=args.decode_workers,
    )
    load = _load()
    start = time.perf_counter()
    first = make()
    first.prepare_data()
    t_first = time.perf_counter() - start
    start = time.perf_counter()
    again = make()
    again.prepare_data()
    t_store = time.perf_counter() - start
    again.setup("fit")
    start = time.perf_counter()
    n_batch = sum(len(b) for b in again.train_dataloader())
    t_batches = time.perf_counter() - start
    return {
        "clips": args.clips,
        "first_pass_clips_per_s": args.clips / t_first,
        "from_store_clips_per_s": args.clips / t_store,
        "train_batches_clips_per_s": n_batch / t_batches,
        "decode_workers": args.decode_workers,
        "load_at_start": load,
    }


# ---------------------------------------------------------------------------------------------- 2. step 2
class EpochTimer:
    """Lightning callback: wall time of each training epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def as_callback(self):
        import lightning as L

        timer = self

        class _Callback(L.Callback):
            def on_train_epoch_start(self, trainer, module):
                timer.start = time.perf_counter()

            def on_train_epoch_end(self, trainer, module):
                if module.device.type == "cuda":
                    import torch

                    torch.cuda.synchronize()
                timer.times.append(time.perf_counter() - timer.start)

        return _Callback()


def _fit_epochs(model, dm, epochs: int, device: str) -> list[float]:
    import lightning as L

    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        callbacks=[timer.as_callback()],
    )
    trainer.fit(model, datamodule=dm)
    return timer.times


def _common(work: Path, args) -> dict:
    return dict(dataset="simsv2", size=args.frame_size, batch_size=args.batch_size, cache_dir=str(work / "cache"))


def feature_datamodule(release: Path, work: Path, names: dict, args):
    from msa_lightning.papers.twostep.data import ExtractedFeaturesDataModule

    return ExtractedFeaturesDataModule(
        str(release),
        text_model=names["text_model"],
        audio_model=names["audio_model"],
        video_arch=names["video_arch"],
        video_random_init=names.get("video_random_init", False),
        step1_checkpoints=dict.fromkeys(("text", "audio", "vision"), "pretrained"),  # costs: step-1 weights or not
        extract_batch_size=args.batch_size,
        extract_device=args.device,
        **_common(work, args),
    )


def bench_step2(release: Path, work: Path, names: dict, args) -> tuple[dict, object]:
    import torch

    from msa_lightning.data.raw import RawMediaDataModule
    from msa_lightning.papers.twostep.module import TwoStepMSA

    common = _common(work, args)
    model_args = dict(regime="step2", fusion="mult", metric_family="simsv2", **names)
    load = _load()
    features = feature_datamodule(release, work, names, args)
    features._load()  # decoded clips (section 1's cost) out of the extraction time
    start = time.perf_counter()
    features.setup("fit")  # the frozen extractors once over every clip, into the store
    t_extract = time.perf_counter() - start
    facts = features.data_facts()
    torch.manual_seed(0)
    cached = TwoStepMSA(text_dim=facts.text_dim, audio_dim=facts.audio_dim, vision_dim=facts.vision_dim, **model_args)
    t_cached = _fit_epochs(cached, features, args.epochs, args.device)
    raw = RawMediaDataModule(str(release), tokenizer=names["text_model"], **common)
    torch.manual_seed(0)
    in_loop = TwoStepMSA(
        step2_inputs="raw", step1_checkpoints=dict.fromkeys(("text", "audio", "vision"), "pretrained"), **model_args
    )
    t_raw = _fit_epochs(in_loop, raw, args.epochs, args.device)
    train = len(features.splits["train"]["ids"])
    return {
        "train_clips": train,
        "extract_once_s": t_extract,
        "epoch_cached_s": statistics.median(t_cached),
        "epoch_extractors_in_loop_s": statistics.median(t_raw),
        "epochs": args.epochs,
        "load_at_start": load,
    }, features


# ---------------------------------------------------------------------------------------------- 3. regimes
def _step_fn(model, batch, device: str):

    model.to(device).train()
    batch = batch.to(device)
    optim = model.configure_optimizers()
    optimizer = optim["optimizer"] if isinstance(optim, dict) else optim

    def step(_: int) -> None:
        outputs = model(batch)
        loss, _ = model.compute_loss(outputs, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _cases(facts: DataFacts) -> list[tuple[str, dict]]:
    return [
        ("single", {"regime": "single"}),
        ("joint", {"regime": "joint"}),
        ("step1 T", {"regime": "step1", "step1_modality": "T"}),
        ("step1 A", {"regime": "step1", "step1_modality": "A"}),
        ("step1 V", {"regime": "step1", "step1_modality": "V"}),
        (
            "step2 (stored outputs)",
            {
                "regime": "step2",
                "text_dim": facts.text_dim,
                "audio_dim": facts.audio_dim,
                "vision_dim": facts.vision_dim,
            },
        ),
        ("step2 (extractors in the loop)", {"regime": "step2", "step2_inputs": "raw"}),
    ]


def isolated_regimes(args) -> list[dict]:
    """Each regime case in its own process: on a CPU, peak RSS is per process, and memory the allocator
    kept from an earlier case would hide part of a later one's."""
    import subprocess

    rows = []
    argv = [a for a in sys.argv[1:]]
    for i in range(len(_cases({}))):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [
                sys.executable,
                __file__,
                *argv,
                "--sections",
                "regimes",
                "--case",
                str(i),
                "--workdir",
                str(args.workdir_path),
                "--json",
                out.name,
                "--no-isolate",
            ]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows += json.loads(Path(out.name).read_text())["regimes"]
    return rows


def bench_regimes(release: Path, work: Path, names: dict, features, args) -> list[dict]:
    import torch

    from msa_lightning.data.raw import RawMediaDataModule
    from msa_lightning.papers.twostep.module import TwoStepMSA

    raw = RawMediaDataModule(
        str(release),
        dataset="simsv2",
        tokenizer=names["text_model"],
        size=args.frame_size,
        batch_size=args.batch_size,
        cache_dir=str(work / "cache"),
    )
    raw.setup("fit")
    raw_batch = next(iter(raw.val_dataloader()))
    feature_batch = next(iter(features.val_dataloader()))
    facts = features.data_facts()
    rows = []
    cases = _cases(facts)
    if args.case is not None:
        cases = [cases[args.case]]
    for name, extra in cases:
        for fusion in args.fusions if not name.startswith("step1") else ["-"]:
            torch.manual_seed(0)
            model = TwoStepMSA(fusion="sf" if fusion == "-" else fusion, metric_family="simsv2", **names, **extra)
            batch = feature_batch if name == "step2 (stored outputs)" else raw_batch
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            load = _load()
            result = measure_steps(_step_fn(model, batch, args.device), args.warmup, args.steps, args.device)
            rows.append(
                {
                    "regime": name,
                    "fusion": fusion,
                    "trainable_params": trainable,
                    "step_s": result["median_s"],
                    "clips_per_s": len(batch) / result["median_s"],
                    "peak_mem_mib": result["mem"] / 2**20,
                    "mem_exact": result["exact"],
                    "load_at_start": load,
                }
            )
            del model
            if args.device == "cuda":
                torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="where clips, models and the store go (default: a temporary folder)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--video-size", type=int, nargs=2, default=[320, 240], metavar=("W", "H"))
    parser.add_argument("--frame-size", type=int, default=128, help="decoded frame size (the paper's 128)")
    parser.add_argument("--decode-workers", type=int, default=0)
    parser.add_argument("--extractors", choices=["base", "tiny"], default="base")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="step-2 epochs per variant (median reported)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--fusions", nargs="+", default=["mult"], choices=["sf", "tfn", "mult"])
    parser.add_argument(
        "--sections", nargs="+", default=["decode", "step2", "regimes"], choices=["decode", "step2", "regimes"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="run the regime cases in this process (default on a CPU: one process each)",
    )
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # one regime case (the isolated runs)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from msa_lightning.media.synthetic import make_synthetic_raw

    work = Path(args.workdir or tempfile.mkdtemp(prefix="twostep_bench_"))
    args.workdir_path = work
    release = work / f"raw_{args.clips}_{args.video_size[0]}x{args.video_size[1]}"
    if not (release / "label.csv").is_file():
        make_synthetic_raw(release, clips=args.clips, seed=0, width=args.video_size[0], height=args.video_size[1])
    names = base_extractors(work / "models") if args.extractors == "base" else TINY
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, {args.device} ({device}), {torch.get_num_threads()} threads, "
        f"extractors {args.extractors}, {args.clips} clips of {args.video_size[0]}x{args.video_size[1]} video, "
        f"frames {args.frame_size}x{args.frame_size}, batch {args.batch_size}\n"
    )
    results: dict = {"settings": vars(args)}
    if "decode" in args.sections:
        d = bench_decode(release, work, args)
        results["decode"] = d
        print("| decode | clips/s | load (1/5/15 min) at start |\n|---|---:|---|")
        print(
            f"| first pass (PyAV, {d['decode_workers']} workers) | {d['first_pass_clips_per_s']:.1f} | "
            f"{d['load_at_start']} |"
        )
        print(f"| from the store (second DataModule) | {d['from_store_clips_per_s']:.1f} | |")
        print(f"| training batches from the store | {d['train_batches_clips_per_s']:.1f} | |\n")
    features = None
    if "step2" in args.sections:
        s, features = bench_step2(release, work, names, args)
        results["step2"] = s
        print(f"| step 2 (MulT, {s['train_clips']} training clips) | seconds | load at start |\n|---|---:|---|")
        print(
            f"| extract once into the store (3 frozen extractors, all splits) | {s['extract_once_s']:.2f} | "
            f"{s['load_at_start']} |"
        )
        print(f"| epoch on stored outputs (median of {s['epochs']}) | {s['epoch_cached_s']:.3f} | |")
        print(f"| epoch with the extractors in the loop (step2_inputs=raw) | {s['epoch_extractors_in_loop_s']:.3f} | |")
        print(f"| ratio | {s['epoch_extractors_in_loop_s'] / s['epoch_cached_s']:.0f}x | |\n")
    if "regimes" in args.sections:
        if args.isolate and args.device == "cpu" and args.case is None:
            rows = isolated_regimes(args)
        else:
            if features is None:  # the stored outputs (extracted now if section 2 did not run before)
                features = feature_datamodule(release, work, names, args)
                features.setup("fit")
            rows = bench_regimes(release, work, names, features, args)
        results["regimes"] = rows
        print(
            f"| regime | fusion | trainable params | s / step (median of {args.steps}) | clips/s | "
            f"peak memory MiB | load at start |\n|---|---|---:|---:|---:|---:|---|"
        )
        for r in rows:
            mem = f"{r['peak_mem_mib']:.0f}" + ("" if r["mem_exact"] else " (growth of the process peak)")
            print(
                f"| {r['regime']} | {r['fusion']} | {r['trainable_params'] / 1e6:.1f} M | {r['step_s']:.3f} | "
                f"{r['clips_per_s']:.2f} | {mem} | {r['load_at_start']} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
