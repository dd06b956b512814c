"""HybridShift benchmark: training-step throughput and peak memory with BERT and XLNet backbones.

Run ``python benchmarks/hybrid_shift.py --help``. Batches come from a synthetic word-aligned MOSI file
(written to ``--workdir``, a temporary folder by default) through the real datamodule, at the paper's
training batch size (48) and text length 50. A train step is forward, the loss of Eq. 20 (MSE + the
three Shifting HuberLosses), backward and an AdamW step. Prints a Markdown table; asserts nothing.

Backbones (``--size``):

* ``tiny``: the in-process ``tiny-bert``/``tiny-xlnet`` (hidden 32, 2 layers), seconds on a CPU;
* ``base``: BERT-base / XLNet-base *shapes* (768 hidden, 12 layers, 12 heads, 3072 inner) with random
  weights, built in-process (no download; throughput and memory do not depend on the weights).

Variants (``--variants``): ``full`` (MSG-T/A/V + MBA + Shifting HuberLoss, MSG-T after layer 2) and
``none`` (Table III's "no proposed modules": the same backbone, RNNs and head), so the cost of the
hybrid-modal attention shows as the difference. Each run is a fresh process, so peak memory is its
own: CPU = peak RSS during the steps minus RSS before them (``VmHWM`` reset through
``/proc/self/clear_refs``); CUDA = ``torch.cuda.max_memory_allocated`` over the steps.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import tempfile
from pathlib import Path

from measure import measure_steps


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def build_backbone(kind: str, size: str):
    """A Hugging Face base model: ``tiny`` (in-process tiny models) or ``base`` (random weights, the
    published base configuration)."""
    from msa_lightning.nn.pretrained import load_model

    if size == "tiny":
        return load_model(f"tiny-{kind}")
    if kind == "bert":
        from transformers import BertConfig, BertModel

        return BertModel(BertConfig(), add_pooling_layer=False)  # bert-base-uncased's configuration
    from transformers import XLNetConfig, XLNetModel

    return XLNetModel(XLNetConfig(d_model=768, n_layer=12, n_head=12, d_inner=3072))  # xlnet-base-cased's


VARIANTS = {
    "full": {},
    "none": {"use_msg_t": False, "use_msg_a": False, "use_msg_v": False, "use_mba": False},
}


def _worker(kind: str, variant: str, args: argparse.Namespace, queue) -> None:
    import torch
    import torch.nn.functional as F

    from msa_lightning.data.datamodule import MOSIDataModule
    from msa_lightning.papers.hybrid_shift.config import HybridShiftConfig
    from msa_lightning.papers.hybrid_shift.net import HybridShiftNet, shifting_huber_loss

    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        device = torch.device(args.device)
        dm = MOSIDataModule(
            str(args.data), aligned=True, batch_size=args.batch_size, cache_dir=str(args.workdir / "cache")
        )
        dm.setup()
        batches = [b for b in dm.train_dataloader() if len(b) == args.batch_size][:2]
        net = (
            HybridShiftNet(
                HybridShiftConfig(
                    audio_dim=5,
                    vision_dim=20,
                    text_model=build_backbone(kind, args.size),
                    insert_layer=2,
                    pool="first",
                    **VARIANTS[variant],
                )
            )
            .to(device)
            .train()
        )
        batches = [b.to(device) for b in batches]
        optimizer = torch.optim.AdamW(net.parameters(), lr=2e-5, weight_decay=0.01)
        use_huber = variant == "full"
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

        def step(i: int) -> None:
            batch = batches[i % len(batches)]
            with autocast:
                out = net(batch)
                loss = F.mse_loss(out.M.float(), batch.labels["M"])
                if use_huber:
                    for h_s in out.group("shift").values():
                        loss = loss + 0.1 * shifting_huber_loss(h_s.float(), out.extras["mask"], 1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        r = measure_steps(step, args.warmup, args.steps, device)
        median = r["median_s"]
        queue.put(
            {
                "params": sum(p.numel() for p in net.parameters()),
                "ms": 1000 * median,
                "min_ms": 1000 * r["min_s"],
                "samples_s": args.batch_size / median,
                "mem": r["mem"],
                "exact": r["exact"],
            }
        )
    except Exception as err:  # report, do not hang the parent
        queue.put({"error": f"{type(err).__name__}: {err}"})


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["bert", "xlnet"], choices=["bert", "xlnet"])
    p.add_argument("--variants", nargs="+", default=["full", "none"], choices=sorted(VARIANTS))
    p.add_argument("--size", default="tiny", choices=["tiny", "base"])
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = torch's default)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    from msa_lightning.data.synthetic import make_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = args.workdir or Path(tmp)
        # enough training samples for two full batches
        factor = max(0.05, 2.2 * args.batch_size / 1284)
        args.data = make_synthetic("mosi", args.workdir / "mosi_aligned.pkl", size_factor=factor, aligned=True, seed=0)
        ctx = mp.get_context("spawn")
        rows = []
        for kind in args.backbones:
            for variant in args.variants:
                queue = ctx.Queue()
                proc = ctx.Process(target=_worker, args=(kind, variant, args, queue))
                proc.start()
                res = queue.get()
                proc.join()
                label = f"{kind.upper() if kind == 'bert' else 'XLNet'}-{args.size}"
                if "error" in res:
                    rows.append([label, variant, "-", "-", "-", "-", res["error"]])
                    continue
                rows.append(
                    [
                        label,
                        variant,
                        f"{res['params'] / 1e6:.2f} M",
                        f"{res['ms']:.1f} ({res['min_ms']:.1f})",
                        f"{res['samples_s']:,.1f}",
                        f"{res['mem'] / 2**20:,.1f}" + ("" if res["exact"] else " (ru_maxrss)"),
                        "",
                    ]
                )
    mem_kind = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS growth"
    print(
        f"### HybridShift train step: batch {args.batch_size}, text length 50 (MOSI aligned), "
        f"{args.warmup} warm-up + {args.steps} timed steps, device {args.device}"
        f"{' bf16' if args.bf16 else ''}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(
        table(
            ["backbone", "variant", "params", "ms/step median (min)", "samples/s", f"memory MiB ({mem_kind})", "error"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
