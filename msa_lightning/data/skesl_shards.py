"""`msa pretrain-data`: being built in this session (issue 8). Replaced by the real module."""
from msa_lightning.errors import MSAError


def add_parser(sub) -> None:
    sub.add_parser("pretrain-data", help="(being built) SKESL pretraining shards")


def main(args) -> int:
    raise MSAError("msa pretrain-data is not built yet")
