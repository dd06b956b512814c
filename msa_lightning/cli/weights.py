"""`msa weights convert-swin3d FILE.pth --out DIR`: published pretrained weights into the suite's format."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command
from msa_lightning.nn.video_swin import CONFIGS, RANDOM_ARCHS, convert_swin3d


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "weights", help="pretrained weights: msa weights convert-swin3d FILE.pth --out DIR")
    actions = p.add_subparsers(dest="action", required=True)
    c = add_command(
        actions,
        "convert-swin3d",
        help="check torchvision's swin3d_t/s/b Kinetics-400 .pth (or an official Video Swin checkpoint) key by "
        "key and write DIR/model.safetensors + DIR/config.json, the folder video_checkpoint names",
    )
    c.add_argument("file", help="the downloaded state dict, e.g. swin3d_t-7615ae03.pth")
    c.add_argument("--out", required=True, help="output folder (set model.init_args.video_checkpoint to it)")
    c.add_argument(
        "--arch",
        choices=sorted(set(CONFIGS) - set(RANDOM_ARCHS)),
        help="expected architecture (default: the one the tensor shapes describe)",
    )


def run(args: argparse.Namespace) -> int:
    config = convert_swin3d(args.file, args.out, args.arch)
    print(
        f"wrote {args.out}: {config['arch']} ({config['tensors']} tensors, every key and shape checked; "
        f"{config['num_classes']} classes) from {config['source']} (sha256 {config['source_sha256'][:12]}...)"
    )
    return 0
