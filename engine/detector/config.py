""":func:`build_detector`, which builds the :class:`~qcf_studio.engine.detector.chain.DetectorChain` that the spec's
``detector`` section describes (its keys and values are checked torch-free by
:mod:`qcf_studio.engine.spec_detector`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from qcf_studio.engine.detector._common import Domain, _coord_axis, _domain_tensors
from qcf_studio.engine.detector.acceptance import Acceptance
from qcf_studio.engine.detector.background import Background
from qcf_studio.engine.detector.chain import DetectorChain
from qcf_studio.engine.detector.smearing import ResolutionSmearing
from qcf_studio.engine.detector.surrogate import SurrogateSmearing
from qcf_studio.engine.spec_detector import DetectorConfigError, DetectorSpec, detector_settings

__all__ = ["DetectorConfigError", "build_detector"]


def build_detector(
    cfg: Mapping[str, Any] | DetectorSpec | None,
    domain: Domain,
    *,
    coord_axis: bool | None = None,
    path: str = "detector",
    validate_only: bool = False,
) -> DetectorChain:
    """Build the detector chain from the ``detector`` section of a spec (validated here, torch-free, by
    :func:`qcf_studio.engine.spec_detector.detector_settings`, unless it is a validated :class:`DetectorSpec` already).

    Keys, their defaults and ranges: the dataclasses of :mod:`qcf_studio.engine.spec_detector` (and the spec's JSON
    Schema).

    Arguments:
        cfg: the section (``None`` or ``{}``: no detector effects).
        domain: the problem's domain, ``[(lo, hi), ...]`` per coordinate.
        coord_axis: whether events carry a coordinate axis (default: more than one coordinate; the engine's
            ``(..., N, 1)`` events of 1D problems need ``True``).
        path: the section's name in error messages.
        validate_only: check the section but do not train a surrogate (the chain then smears analytically).

    Raises:
        DetectorConfigError (a ValueError): ``"<path>.<key>: <what is wrong>"``.
    """
    settings = detector_settings(cfg, domain, path)
    try:
        lo, hi = _domain_tensors(domain)
        dims = lo.shape[0]
        coord_axis = _coord_axis(dims, coord_axis)
    except ValueError as e:
        raise DetectorConfigError(path, str(e)) from None
    domain_pairs = list(zip(lo.tolist(), hi.tolist()))
    effects: list[nn.Module] = []
    smearing = ResolutionSmearing(settings.resolution)
    if (s := settings.surrogate) is not None:
        effects.append(
            smearing
            if validate_only
            else SurrogateSmearing.train_from(
                smearing,
                domain_pairs,
                events=s.events,
                epochs=s.epochs,
                components=s.components,
                hidden=s.hidden,
                coord_axis=coord_axis,
                generator=torch.Generator().manual_seed(s.seed),
            )
        )
    elif settings.resolution > 0:
        effects.append(smearing)
    if settings.turn_on is not None and settings.width is not None:
        effects.append(
            Acceptance(settings.turn_on, settings.width, settings.max_efficiency, dims=dims, coord_axis=coord_axis)
        )
    if settings.background_fraction:  # a fraction of 0 admixes nothing
        effects.append(
            Background(
                domain_pairs, settings.background_fraction, settings.background_shape, settings.slope, coord_axis
            )
        )
    return DetectorChain(effects)
