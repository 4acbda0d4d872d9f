"""The detector chain: effects applied in order to generated events (differentiable, fixed shape, weights) and
to pseudo-data (accept-reject)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from qcf_studio.engine.detector.acceptance import Acceptance

__all__ = ["DetectorChain"]


class _Effect(Protocol):
    """The pseudo-data half of an effect's interface (see :mod:`qcf_studio.engine.detector`)."""

    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


class DetectorChain(nn.Module):
    """Detector effects applied in order; an empty chain is the identity.

    ``chain(events, weights=None, generator=None) -> (events, weights)`` for generated events (fixed shape,
    gradients kept; see :attr:`gradient_note`), ``chain.apply_to_data(events, generator) -> events`` for
    pseudo-data (accept-reject; no gradients; with a leading batch shape each set is cut to the smallest count).
    """

    def __init__(self, effects: Iterable[nn.Module] = ()) -> None:
        super().__init__()
        self.effects = nn.ModuleList(effects)

    def forward(
        self, events: Tensor, weights: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        for effect in self.effects:
            events, weights = effect(events, weights, generator)
        return events, weights

    @torch.no_grad()
    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for effect in self.effects:
            events = cast(_Effect, effect).apply_to_data(events, generator)
        return events

    @property
    def differentiable(self) -> bool:
        """Whether events and weights of generated events pass gradients w.r.t. the truth positions."""
        return all(getattr(e, "differentiable", False) for e in self.effects)

    @property
    def gradient_note(self) -> str:
        """One line per effect on how gradients pass through it."""
        return "\n".join(getattr(e, "gradient_note", type(e).__name__) for e in self.effects) or "identity"

    @property
    def weighted(self) -> bool:
        """Whether generated events come with weights (an acceptance is in the chain)."""
        return any(isinstance(e, Acceptance) for e in self.effects)

    def __len__(self) -> int:
        return len(self.effects)
