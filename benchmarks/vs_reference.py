"""Self-MM side by side with the reference toolkit (MMSA 2.2.1), and Lightning's own overhead.

One run, one process, one after the other on the same MOSI-shaped feature file, the same BERT-architecture
encoder folder, the same seed and the same number of epochs:

1. MMSA's ``MMSA_run("self_mm", "mosi", config={featurePath, pretrained, ...}, gpu_ids=[])`` with its own
   ``config_regression.json`` values (batch 16, update_epochs 4, five parameter groups, ...);
2. the suite's ``msa fit`` (through ``make_cli``, the code the ``msa`` command runs) with
   ``configs/swrm/selfmm_mosi.yaml``'s model, optimiser and trainer values (equal to MMSA's, see that
   file) on a plain ``MOSIDataModule`` over the same file, then ``test`` on the best checkpoint;
3. the same ``SelfMMModule`` in a bare PyTorch loop (same data loaders, same optimiser groups, same
   accumulation, validation loss and metrics each epoch, the best weights saved): what Lightning itself costs;
4. the suite's ``SWRMModule`` through the same ``msa fit`` code with the same data, batches and optimiser
   (SWRM's own sizes from ``configs/swrm/mosi_gold.yaml``), its refinement inputs (position, gate, candidates)
   drawn once per sample (:func:`swrm_datamodule`). The authors' SWRM code (a fork of MMSA) is not run: the
   reference SWRM is taken as MMSA's Self-MM plus the refinement's cost as measured here (suite SWRM minus
   suite Self-MM).

It prints seconds per epoch (training + validation) and the test metrics of each, and the ratios. The machine
may be shared: ``--repeats`` runs the whole set several times interleaved (A, B, A, B), reports the median of
every epoch of every repeat and the load average around each run; ``--threads`` sets torch's intra-op threads
for every run (1 is the most stable on a busy machine).

This script installs nothing. MMSA goes into a separate environment that reuses the suite's packages
(never into the suite's own dependencies)::

    python3.11 -m venv /work/mmsa_venv            # the interpreter of the suite's .venv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /work/mmsa_venv/lib/python3.11/site-packages/suite.pth
    /work/mmsa_venv/bin/pip install --no-deps MMSA==2.2.1 easydict nvidia-ml-py3 pandas python-dateutil pytz tzdata six
    /work/mmsa_venv/bin/python benchmarks/vs_reference.py --epochs 2 --size-factor 0.25

(MMSA imports torch, transformers, numpy, scikit-learn, tqdm — from the suite's environment — and pandas,
easydict, pynvml.) Without MMSA importable the script runs parts 2 and 3 and says so.

The file: ``make_synthetic("mosi")`` (375 acoustic / 500 visual frames, transcripts of 4-19 words, about
12 on average like MOSI's), with the real MOSI sentences of ``../shared/data/mosi/labels.csv`` when that
file exists; ``text_bert`` is re-tokenised with the encoder's tokenizer (50 tokens), which both tools read.
The encoder: ``--encoder DIR`` (any local BERT folder), else the suite's ``tiny-bert`` saved with
``save_pretrained`` into the output folder.

On a machine without CUDA, MMSA's unconditional ``torch.cuda.set_device`` is replaced by a no-op in this
process only. MMSA trains until early stopping; here its ``early_stop`` is set so that it stops after
exactly ``--epochs`` epochs and, like the suite, tests the epoch with the lowest validation loss.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the MMSA environment sees the suite's packages, not its editable install

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

LABELS_CSV = REPO.parent / "shared" / "data" / "mosi" / "labels.csv"
SUITE_CONFIG = REPO / "configs" / "swrm" / "selfmm_mosi.yaml"


# ---------------------------------------------------------------------------------------------- inputs
def read_sentences() -> list[str]:
    """The real MOSI transcripts when ``../shared`` is there, else none (synthetic transcripts are used)."""
    if not LABELS_CSV.is_file():
        return []
    with open(LABELS_CSV, newline="") as f:
        return [row["text"] for row in csv.DictReader(f) if row.get("text")]


def save_bert_base_shaped(out: Path) -> Path:
    """BERT-base's architecture with random weights (no hub here) and a whole-word vocabulary of the
    transcripts' words, so that a transcript has about as many tokens as bert-base-uncased's WordPiece gives
    it (one per word and punctuation mark; WordPiece splits a few rare words more), not the tiny tokenizer's
    ~2.7 pieces per word that fill every batch to 50 tokens."""
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from msa_lightning.data.synthetic import make_synthetic

    folder = out / "bert-base-shaped"
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sentences = read_sentences()
    if not sentences:  # the synthetic transcripts' words
        data = pickle.loads(Path(make_synthetic("mosi", out / "vocab_source.pkl", size_factor=1.0)).read_bytes())
        sentences = [str(t) for split in data.values() for t in split["raw_text"]]
    split = BertPreTokenizer()  # BERT's word and punctuation split (the tokenizer lower-cases first)
    words = sorted({w for sentence in sentences for w, _ in split.pre_tokenize_str(sentence.lower())})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5)).save_pretrained(folder)
    return folder


def save_encoder(out: Path, encoder: str | None) -> Path:
    if encoder == "bert-base-shaped":
        return save_bert_base_shaped(out)
    if encoder:
        return Path(encoder)
    from msa_lightning.nn.pretrained import load_model, load_tokenizer

    folder = out / "tiny-bert"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        load_model("tiny-bert").save_pretrained(folder)
        load_tokenizer("tiny-bert").save_pretrained(folder)
    return folder


def make_file(out: Path, encoder: Path, size_factor: float, seed: int) -> tuple[Path, str]:
    """A MOSI-shaped unaligned file whose ``text_bert`` comes from ``encoder``'s tokenizer."""
    from transformers import AutoTokenizer

    from msa_lightning.data.synthetic import make_synthetic

    path = make_synthetic("mosi", out / "mosi_synthetic_raw.pkl", size_factor=size_factor, seed=seed)
    with open(path, "rb") as f:
        data = pickle.load(f)
    source = "synthetic transcripts"
    sentences = read_sentences()
    if sentences:
        rng = np.random.default_rng(seed)
        for split in data.values():
            split["raw_text"] = np.asarray(
                [sentences[i] for i in rng.integers(0, len(sentences), len(split["raw_text"]))], dtype=object
            )
        source = f"real MOSI sentences from {LABELS_CSV}"
    tok = AutoTokenizer.from_pretrained(str(encoder))
    for split in data.values():
        enc = tok(
            [str(t).lower() for t in split["raw_text"]],
            max_length=50,
            padding="max_length",
            truncation=True,
            return_token_type_ids=True,
            return_tensors="np",
        )
        split["text_bert"] = np.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], axis=1).astype(
            np.float32
        )
    final = out / "mosi_unaligned.pkl"
    with open(final, "wb") as f:
        pickle.dump(data, f, protocol=4)
    words = np.mean([len(str(t).split()) for t in data["train"]["raw_text"]])
    tokens = data["train"]["text_bert"][:, 1].sum(1).mean()
    return final, f"{source}; {words:.1f} words and {tokens:.1f} tokens per transcript on average"


# ---------------------------------------------------------------------------------------------- the suite
def swrm_datamodule(config: dict, k: int = 50):
    """A ``MOSIDataModule`` whose batches carry SWRM's refinement inputs (``swrm_position`` on a real token,
    ``swrm_gate``, ``k`` candidate ids), drawn once per split from a fixed seed: the refinement costs the same
    whatever the positions, so no masked LM has to run (the sentiment-position precompute is a separate,
    cached step of SWRM's real data module, ``MOSIASRDataModule``)."""
    from msa_lightning.data.datamodule import MOSIDataModule

    class SWRMBenchData(MOSIDataModule):
        def split_extras(self, split, arrays):
            rng = np.random.default_rng(len(split))
            lengths = np.asarray(arrays.text_bert[:, 1].sum(1), dtype=np.int64)  # [CLS] words [SEP]
            position = 1 + (rng.random(len(lengths)) * np.maximum(lengths - 2, 1)).astype(np.int64)
            return {
                "swrm_position": position,
                "swrm_gate": (rng.random(len(lengths)) < 0.5).astype(np.float32),
                "swrm_candidates": rng.integers(1000, 2000, (len(lengths), k)).astype(np.int64),
            }

    return SWRMBenchData(**config["init_args"])


def clocks() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). On a shared machine the CPU time is the steadier figure:
    it counts the work done, not the time spent waiting for a core."""
    return time.perf_counter(), time.process_time()


class EpochTimer:
    """Lightning callback: wall and CPU seconds of each training epoch including its validation."""

    def __init__(self) -> None:
        import lightning as L

        class _Timer(L.Callback):
            def on_train_epoch_start(inner, trainer, module):  # noqa: N805
                inner.start = clocks()

            def on_train_epoch_end(inner, trainer, module):  # noqa: N805  (after the epoch's validation)
                now = clocks()
                self.seconds.append(now[0] - inner.start[0])
                self.cpu_seconds.append(now[1] - inner.start[1])

        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.callback = _Timer()


def suite_args(file: Path, encoder: Path, epochs: int, seed: int, out: Path) -> list[str]:
    """``msa fit`` arguments: the Self-MM config's model/optimiser/trainer values, a MOSIDataModule on ``file``."""
    spec = yaml.safe_load(SUITE_CONFIG.read_text())
    data = {
        "class_path": "msa_lightning.data.datamodule.MOSIDataModule",
        "init_args": {
            "path": str(file),
            "batch_size": spec["data"]["init_args"]["batch_size"],
            "eval_batch_size": spec["data"]["init_args"]["eval_batch_size"],
            "num_workers": 0,
            "cache_dir": str(out / "cache"),
        },
    }
    spec["data"] = data
    spec["model"]["init_args"]["text_model"] = str(encoder)
    spec["seed_everything"] = seed
    spec["trainer"].update(
        {
            "max_epochs": epochs,
            "accelerator": "cpu",
            "devices": 1,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "default_root_dir": str(out / "suite"),
        }
    )
    spec["checkpoint"]["dirpath"] = str(out / "suite" / "checkpoints")
    config = out / "suite_selfmm.yaml"
    config.write_text(yaml.safe_dump(spec))
    return ["--config", str(config)]  # make_cli(run=False) takes no subcommand


def swrm_args(args: list[str], out: Path) -> list[str]:
    """The Self-MM run's config with ``SWRMModule`` (SWRM's own sizes from ``configs/swrm/mosi_gold.yaml``):
    the same data, batches, optimiser groups and trainer, so the difference is the refinement."""
    spec = yaml.safe_load(Path(args[1]).read_text())
    gold = yaml.safe_load((REPO / "configs" / "swrm" / "mosi_gold.yaml").read_text())["model"]["init_args"]
    spec["model"]["class_path"] = "msa_lightning.papers.swrm.module.SWRMModule"
    for key in (
        "context_vision_hidden",
        "context_audio_hidden",
        "context_av_hidden",
        "use_position",
        "use_attention",
        "multimodal",
    ):
        spec["model"]["init_args"][key] = gold[key]
    spec["trainer"]["default_root_dir"] = str(out / "suite_swrm")
    spec["checkpoint"]["dirpath"] = str(out / "suite_swrm" / "checkpoints")
    config = out / "suite_swrm.yaml"
    config.write_text(yaml.safe_dump(spec))
    return ["--config", str(config)]


def bucketed_args(args: list[str], out: Path) -> list[str]:
    """The Self-MM run with ``data.init_args.bucket_by_length`` (opt-in: batches of similar length, which
    changes the batches and so the numbers)."""
    spec = yaml.safe_load(Path(args[1]).read_text())
    spec["data"]["init_args"]["bucket_by_length"] = True
    spec["trainer"]["default_root_dir"] = str(out / "suite_bucketed")
    spec["checkpoint"]["dirpath"] = str(out / "suite_bucketed" / "checkpoints")
    config = out / "suite_bucketed.yaml"
    config.write_text(yaml.safe_dump(spec))
    return ["--config", str(config)]


def run_suite(args: list[str], swrm: bool = False) -> dict:
    from msa_lightning.experiments.lightning_cli import make_cli

    cli = make_cli(args, run=False)
    if swrm:
        cli.datamodule = swrm_datamodule(yaml.safe_load(Path(args[1]).read_text())["data"])
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer.callback)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    test = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)[0]
    return {
        "epoch_seconds": timer.seconds,
        "cpu_seconds": timer.cpu_seconds,
        "test": {k: float(v) for k, v in test.items()},
    }


def run_bare(args: list[str], epochs: int, accumulate: int) -> dict:
    """The suite's module and data in a plain PyTorch loop: Adam on the same groups, the same accumulation
    (loss / accumulate, a step every ``accumulate`` batches and at the epoch's end), ULGM updates, validation
    (loss and the module's metrics), the best epoch's weights saved. What it leaves out of ``msa fit``: logging,
    ``last.ckpt`` with the optimiser state every epoch (exact resume), and Lightning's loops and hooks."""
    import lightning as L

    from msa_lightning.experiments.lightning_cli import make_cli

    cli = make_cli(args, run=False)
    model, dm = cli.model, cli.datamodule
    L.seed_everything(int(os.environ.get("PL_GLOBAL_SEED", 0)))
    dm.inputs = set(model.required_inputs)
    dm.prepare_data()
    dm.setup("fit")
    model.apply_data_facts(dm)
    if model.net is None:
        model.net = model.build_net()
    model.ulgm.bound = float(model.hparams.label_bound)
    model.ulgm.init_labels(torch.tensor(dm.train_labels("M")))
    optimizer = torch.optim.Adam(model.parameter_groups())
    seconds, cpu_seconds, best = [], [], float("inf")
    best_path = Path(args[1]).parent / "bare_best.pth"
    for epoch in range(epochs):
        start = clocks()
        model.train()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        n = len(loader)
        for i, batch in enumerate(loader):
            outputs = model(batch)
            loss, _ = model.compute_loss(outputs, batch)
            (loss / accumulate).backward()
            model.ulgm.update(batch.index, outputs.features, epoch=epoch + 1)
            if (i + 1) % accumulate == 0 or i + 1 == n:
                optimizer.step()
                optimizer.zero_grad()
        model.eval()
        with torch.inference_mode():  # the validation loss and the metrics the module reports (as MMSA's do_test)
            errors = []
            for b in dm.val_dataloader():
                m = model(b).M
                errors.append((m - b.labels["M"]).abs())
                model.val_metrics.update(m, b.labels["M"])
            model.val_metrics.compute()
            model.val_metrics.reset()
        val_loss = float(torch.cat(errors).mean())
        if val_loss < best:  # as MMSA does: the best epoch's weights on disk
            best = val_loss
            torch.save(model.state_dict(), best_path)
        now = clocks()
        seconds.append(now[0] - start[0])
        cpu_seconds.append(now[1] - start[1])
        print(f"  bare loop epoch {epoch + 1}: {seconds[-1]:.1f}s, val L1 {val_loss:.4f}", flush=True)
    return {"epoch_seconds": seconds, "cpu_seconds": cpu_seconds}


# ---------------------------------------------------------------------------------------------- MMSA
def run_mmsa(file: Path, encoder: Path, epochs: int, seed: int, out: Path) -> dict:
    import importlib

    import MMSA

    trainer_class = importlib.import_module("MMSA.trains.multiTask.SELF_MM").SELF_MM  # MMSA's Self-MM trainer

    if not torch.cuda.is_available():
        torch.cuda.set_device = lambda *args, **kwargs: None  # MMSA calls it even for a CPU device
    stamps, tests, state = [], [], {"val": 0}
    do_train, do_test = trainer_class.do_train, trainer_class.do_test

    def timed_train(self, model, dataloader, return_epoch_results=False):
        stamps.append(clocks())
        return do_train(self, model, dataloader, return_epoch_results)

    def capped_test(self, model, dataloader, mode="VAL", return_sample_results=False):
        results = do_test(self, model, dataloader, mode, return_sample_results)
        if mode == "VAL":
            stamps.append(clocks())
            state["val"] += 1
            if state["val"] >= epochs:
                self.args.early_stop = 0  # stop after this epoch; the best of the epochs so far is tested
        elif mode == "TEST":
            tests.append({k: float(v) for k, v in results.items() if isinstance(v, (int, float))})
        return results

    trainer_class.do_train, trainer_class.do_test = timed_train, capped_test
    hidden = json.loads((encoder / "config.json").read_text())["hidden_size"]
    config = {"featurePath": str(file), "pretrained": str(encoder), "text_out": hidden, "early_stop": 10**6}
    try:
        MMSA.MMSA_run(
            "self_mm",
            "mosi",
            config=config,
            seeds=[seed],
            gpu_ids=[],
            num_workers=0,
            verbose_level=0,
            model_save_dir=out / "mmsa" / "models",
            res_save_dir=out / "mmsa" / "results",
            log_dir=out / "mmsa" / "logs",
        )
    finally:
        trainer_class.do_train, trainer_class.do_test = do_train, do_test
    wall, cpu = np.diff(np.asarray(stamps), axis=0).T
    return {"epoch_seconds": wall.tolist(), "cpu_seconds": cpu.tolist(), "test": tests[-1] if tests else {}}


# ---------------------------------------------------------------------------------------------- main
def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").is_file() else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench_vs_reference")
    parser.add_argument(
        "--encoder",
        default=None,
        help="a local BERT folder, or bert-base-shaped (BERT-base architecture, random weights, a "
        "whole-word vocabulary of the transcripts); default: tiny-bert saved to --out",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size-factor", type=float, default=0.25, help="fraction of MOSI's split sizes")
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads for every run (default: torch's own choice)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the set this many times, interleaved (A, B, A, B): medians are reported",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["mmsa", "suite", "bare", "swrm"])
    parser.add_argument(
        "--bucketed",
        action="store_true",
        help="also run the suite with bucket_by_length (off by default: it changes the batches)",
    )
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    encoder = save_encoder(out, opts.encoder)
    file, text = make_file(out, encoder, opts.size_factor, opts.seed)
    accumulate = int(yaml.safe_load(SUITE_CONFIG.read_text())["trainer"].get("accumulate_grad_batches", 1))
    print(
        f"file {file} ({text}); encoder {encoder}; {opts.epochs} epochs, seed {opts.seed}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    args = suite_args(file, encoder, opts.epochs, opts.seed, out)
    runs = {}
    if "mmsa" not in opts.skip:
        try:
            import MMSA  # noqa: F401
        except ImportError as err:
            print(f"MMSA is not importable ({err}): see this script's docstring for its environment; skipped")
        else:
            runs["mmsa"] = lambda: run_mmsa(file, encoder, opts.epochs, opts.seed, out)
    if "suite" not in opts.skip:
        runs["suite"] = lambda: run_suite(args)
    if "bare" not in opts.skip:
        runs["bare"] = lambda: run_bare(args, opts.epochs, accumulate)
    if "swrm" not in opts.skip:
        runs["swrm"] = lambda: run_suite(swrm_args(args, out), swrm=True)
    if opts.bucketed:
        runs["bucketed"] = lambda: run_suite(bucketed_args(args, out))
    results: dict[str, dict] = {name: {"epoch_seconds": [], "cpu_seconds": [], "load": []} for name in runs}
    for repeat in range(opts.repeats):
        for name, run in runs.items():
            before = load_average()
            r = run()
            results[name]["epoch_seconds"].append(r["epoch_seconds"])
            results[name]["cpu_seconds"].append(r["cpu_seconds"])
            results[name]["load"].append(f"{before} -> {load_average()}")
            results[name].setdefault("test", r.get("test"))
            print(
                f"[{repeat + 1}/{opts.repeats}] {name}: {', '.join(f'{x:.2f}' for x in r['epoch_seconds'])} s/epoch, "
                f"CPU {', '.join(f'{x:.2f}' for x in r['cpu_seconds'])} s (load {results[name]['load'][-1]})",
                flush=True,
            )
    median, cpu = {}, {}
    for clock, table, key in (("wall", median, "epoch_seconds"), ("CPU", cpu, "cpu_seconds")):
        print(f"\n{clock} seconds per epoch (training + validation), median over every epoch of every repeat:")
        for name, r in results.items():
            table[name] = float(np.median([s for rep in r[key] for s in rep]))
            print(
                f"  {name:8s} {table[name]:7.2f}  (per repeat: "
                f"{'; '.join(', '.join(f'{s:.2f}' for s in rep) for rep in r[key])})"
            )
        if "mmsa" in table and "suite" in table:
            print(f"  MMSA / suite (Self-MM): {table['mmsa'] / table['suite']:.2f}x (above 1: the suite is faster)")
        if "bare" in table and "suite" in table:
            print(f"  Lightning overhead (msa fit / bare loop): {table['suite'] / table['bare']:.2f}x")
        if "swrm" in table and "suite" in table:
            refine = table["swrm"] - table["suite"]
            print(f"  SWRM refinement cost (suite SWRM - suite Self-MM): {refine:.2f} s/epoch")
            if "mmsa" in table:
                print(
                    "  SWRM: (MMSA Self-MM + refinement) / suite SWRM: "
                    f"{(table['mmsa'] + refine) / table['swrm']:.2f}x "
                    "(the authors' fork not run: their refinement is taken to cost what the suite's does)"
                )
        if "bucketed" in table and "mmsa" in table:
            print(f"  MMSA / suite with bucket_by_length: {table['mmsa'] / table['bucketed']:.2f}x (other batches)")
    for name in ("mmsa", "suite", "swrm", "bucketed"):
        if results.get(name, {}).get("test"):
            print(f"test metrics ({name}): {json.dumps(results[name]['test'], sort_keys=True)}")
    summary = {"threads": torch.get_num_threads(), "medians": median, "cpu_medians": cpu, "runs": results}
    (out / "results.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
