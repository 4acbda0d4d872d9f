"""Detector ("experiment") effects as torch modules, applied alike to generated events and to pseudo-data.

Every effect works for any problem. Events are laid out as

- ``(..., N)`` for 1D events (``coord_axis=False``, the default when ``dims == 1``), or
- ``(..., N, D)`` with the event coordinates on the last axis (``coord_axis=True``, always when ``dims > 1``;
  the engine's 1D events ``(..., N, 1)`` use ``coord_axis=True`` with ``dims == 1``).

Per-event weights have the shape of one coordinate: ``events.shape[:-1]`` with a coordinate axis, else
``events.shape``; ``None`` means unit weights.

Common interface of an effect::

    events, weights = effect(events, weights, generator)   # generated events: differentiable, fixed shape
    events = effect.apply_to_data(events, generator)        # pseudo-data: accept-reject, no weights

:class:`DetectorChain` applies effects in order and :func:`build_detector` builds one from the ``detector``
section of a spec. :class:`ResolutionSmearing` also keeps its original call ``smear(events, generator=gen)``,
which returns the smeared events alone.

Modules, one job each:

- ``smearing``: :class:`ResolutionSmearing`, the analytic relative resolution smearing;
- ``acceptance``: :class:`Acceptance`, the smooth acceptance × efficiency;
- ``background``: :class:`Background`, the admixture of a background of known shape;
- ``surrogate``: :class:`SurrogateSmearing`, the learned (mixture density network) smearing;
- ``chain``: :class:`DetectorChain`, effects applied in order;
- ``config``: :class:`DetectorConfigError` and :func:`build_detector`, the spec's ``detector`` section;
- ``_common``: private helpers shared by the effects (event layout, domains, thinning).
"""

from __future__ import annotations

from qcf_studio.engine.detector._common import Domain as Domain
from qcf_studio.engine.detector.acceptance import Acceptance
from qcf_studio.engine.detector.background import Background
from qcf_studio.engine.detector.chain import DetectorChain
from qcf_studio.engine.detector.config import DetectorConfigError, build_detector
from qcf_studio.engine.detector.smearing import ResolutionSmearing
from qcf_studio.engine.detector.surrogate import SurrogateSmearing

__all__ = [
    "Acceptance",
    "Background",
    "DetectorChain",
    "DetectorConfigError",
    "ResolutionSmearing",
    "SurrogateSmearing",
    "build_detector",
]
