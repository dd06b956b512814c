"""Errors a user can act on.

Anything raised as an :class:`MSAError` is an *expected* failure (a bad file, a bad setting, a
missing pretrained model, a missing transcript, an empty split): the ``msa`` command prints its
message as one or two lines and exits with status 2, without a traceback (``--debug`` or
``MSA_DEBUG=1`` shows it). Messages name what is wrong and where (file, split, key, config key),
what was expected and what was found.
"""

from __future__ import annotations


class MSAError(Exception):
    """Base class of the expected errors the ``msa`` command reports in one line."""


class DataError(MSAError, ValueError):
    """Input data that does not follow the expected schema or is inconsistent."""


class ConfigError(MSAError, ValueError):
    """A configuration value that is invalid or conflicts with another one or with the data."""


class ClipError(DataError):
    """One clip cannot be used; ``reason`` is a short code a corpus manifest records with its id."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
