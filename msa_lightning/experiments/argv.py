"""Reading an ``msa`` command line's words (a stage's, a CLI's ``argv``) without parsing it."""

from __future__ import annotations


def option_value(argv: list[str], option: str) -> str | None:
    """The last value of ``--option X`` / ``--option=X`` on ``argv``."""
    found = None
    for i, a in enumerate(argv):
        if a.startswith(option + "="):
            found = a.split("=", 1)[1]
        elif a == option and i + 1 < len(argv):
            found = argv[i + 1]
    return found
