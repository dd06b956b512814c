"""The base of every paper network's config: one frozen dataclass per network, handed to it whole.

A paper declares its network's hyper-parameters once, as the fields of a dataclass in
``papers/<name>/config.py`` (documented there, with their equation numbers). The network takes that
object (``HybridShiftNet(config)``); the LightningModule's ``__init__`` ends its own arguments with
``**net`` and builds the config with ``HybridShiftConfig(**net)``. jsonargparse reads the dataclass's
fields through that call, so LightningCLI, ``--print_config``, sweeps and checkpoints keep seeing flat,
typed keys (``model.init_args.insert_layer``), each declared in one place.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from msa_lightning.errors import ConfigError


def config_key(name: str) -> str:
    """How a message names a model argument: its config key."""
    return f"model.init_args.{name}"


def field_names(config_class: type) -> tuple[str, ...]:
    """The fields of a config dataclass, in declaration order."""
    return tuple(f.name for f in fields(config_class))


class NetConfig:
    """Base class of the network configs (subclasses are ``@dataclass(frozen=True)``).

    A key that is not a field is a :class:`~msa_lightning.errors.ConfigError` naming the key and the
    class (the dataclass ``__init__`` would raise a bare ``TypeError``). Checked in ``__new__``, which
    receives the same keyword arguments before the generated ``__init__`` runs.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        names = field_names(cls)
        for name in kwargs:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{config_key(name)}: {cls.__name__} has no field {name!r}{hint}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        """Checks every network shares: a dropout (a field named ``dropout`` or ``*_dropout``) is a probability.
        A subclass's ``__post_init__`` calls this first."""
        for name in field_names(type(self)):
            value = getattr(self, name)
            if name.endswith("dropout") and isinstance(value, (int, float)) and not 0 <= value < 1:
                self.fail(name, "a dropout probability in [0, 1)")

    def fail(self, name: str, expected: str) -> None:
        """Raise the ConfigError of a field with a bad value: ``model.init_args.<name>: expected ..., found ...``."""
        raise ConfigError(f"{config_key(name)}: expected {expected}, found {getattr(self, name)!r}")
