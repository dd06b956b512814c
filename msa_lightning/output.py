"""What every network of the suite returns: :class:`MSAOutput`, a typed structure instead of dicts of dicts.

``flat()`` names every tensor the way exports write them: ``M``, the unimodal predictions (``T``,
``A``, ``V``), ``features.<name>`` and ``extras.<name>``. Names inside ``features``/``extras`` may
themselves be dotted to group related maps (``extras.shift.text``, ``extras.p_att.audio``):
:meth:`MSAOutput.group` reads such a group back as a dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class MSAOutput:
    """Args:
    M: the multimodal sentiment prediction ``[B]``.
    unimodal: predictions of unimodal heads ``{"T"|"A"|"V": [B]}`` (Self-MM, SWRM).
    features: representations worth exporting or analysing (fusion vectors, ULGM features, streams).
    extras: anything else a paper's loss or analysis reads (attention maps, gates, masks).
    """

    M: Tensor
    unimodal: dict[str, Tensor] = field(default_factory=dict)
    features: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def flat(self) -> dict[str, Tensor]:
        """Every tensor by its export name: ``M``, ``T``, ``features.M``, ``extras.p_att.audio``, ..."""
        out = {"M": self.M, **self.unimodal}
        out.update({f"features.{k}": v for k, v in self.features.items()})
        out.update({f"extras.{k}": v for k, v in self.extras.items()})
        return out

    def group(self, name: str) -> dict[str, Tensor]:
        """The extras named ``<name>.<key>`` as ``{key: tensor}`` (e.g. ``group("shift")``)."""
        prefix = name + "."
        return {k[len(prefix) :]: v for k, v in self.extras.items() if k.startswith(prefix)}
