"""The argument parser of the suite's own subcommands (``msa data ...``, ``seeds``, ``report``, ``export``,
``pipeline``, ``transcribe``, ``pretrain-data``, ``plot``, ``quickstart``).

A bad command line ends as the rest of ``msa`` does: one ``msa: error: <message>`` line, then where
the options are listed (``(`msa data inspect --help` lists the options)``), exit status 2. The usage
is printed by ``--help`` only. Subparsers made with ``add_subparsers`` are of the same class.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class MSAParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        line = " ".join(str(message).split())
        sys.stderr.write(f"msa: error: {line}\n(`{self.prog} --help` lists the options)\n")
        sys.exit(2)


def add_command(subparsers, name: str, **kwargs) -> MSAParser:
    """The parser of (sub)command ``name``; after parsing, ``args.parser`` is the innermost parser the command line
    reached, so a check made after parsing reports its error as that parser would (``msa data wer``, not ``msa``)."""
    parser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(parser=parser)
    return parser
