"""`msa transcribe`: being built in this session (issue 8). Replaced by the real module."""
from msa_lightning.errors import MSAError


def add_parser(sub) -> None:
    sub.add_parser("transcribe", help="(being built) ASR transcripts of audio clips")


def main(args) -> int:
    raise MSAError("msa transcribe is not built yet")
