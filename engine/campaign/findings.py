"""What closure campaigns measured, in one place: which errors of which method and settings were found calibrated.

A single closure run cannot show whether its errors are right (docs/campaigns.md); the closure report
(``qcf_studio.app.export.report``) says what campaigns of the same problem and method found, and whether they were
run with the settings of the run in hand. The numbers behind each entry, with their dates and commands, are in
docs/benchmarks.md ("Closure campaigns"). Torch-free and Dask-free: the report reads it.

A finding about a GAN holds only for the settings it was measured with (:data:`GAN_SETTINGS`): training longer
or with other batches changes whether a GAN has converged, and so whether its errors are right. The likelihood fit
has no such settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Finding", "FINDINGS", "GAN_SETTINGS", "findings_for", "settings_of"]

# (section, key): what a GAN finding was measured with, and what a run must share to be covered by it
GAN_SETTINGS = (
    ("problem", "events"),
    ("training", "steps"),
    ("training", "batch_params"),
    ("training", "events_per_param"),
    ("training", "noise_final"),
    ("training", "average_last"),
    ("ensemble", "members"),
    ("ensemble", "bootstrap"),
)


@dataclass(frozen=True)
class Finding:
    """One campaign's verdict on a method's errors. ``errors``: bootstrap | generator | hessian. ``settings``: for a
    GAN, the values of :data:`GAN_SETTINGS` the campaign used (empty for the likelihood fit). ``numbers``: its
    R_bv and coverage in words, with the number of replicas."""

    problem: str
    method: str
    errors: str
    calibrated: bool
    numbers: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def covers(self, settings: Mapping[str, Any]) -> bool:
        """Whether a run with ``settings`` (:func:`settings_of`) was made the way this finding was measured."""
        return all(settings.get(k) == v for k, v in self.settings.items())

    def describe(self) -> str:
        """The settings in the spec's words: ``4 bootstrap members × 6000 steps, 8 × 256 events a step``."""
        s = self.settings
        if not s:
            return "any settings"
        kind = "bootstrap members" if s.get("ensemble.bootstrap") else "members"
        return (
            f"{s.get('ensemble.members')} {kind} × {s.get('training.steps')} steps, "
            f"{s.get('training.batch_params')} × {s.get('training.events_per_param')} events a step, "
            f"{_count(s.get('problem.events'))} events an observable"
        )


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _gan(events: int, steps: int, batch: int, per: int, members: int, bootstrap: bool, **extra: Any) -> dict:
    values = {
        "problem.events": events,
        "training.steps": steps,
        "training.batch_params": batch,
        "training.events_per_param": per,
        "ensemble.members": members,
        "ensemble.bootstrap": bootstrap,
    }
    values.update({f"training.{k}": v for k, v in extra.items()})
    return values


FINDINGS: tuple[Finding, ...] = (
    Finding("proxy1d", "mle", "hessian", True, "R_bv 0.95–1.08, 1σ coverage 0.62–0.72 over 50 replicas"),
    Finding("proxy2d", "mle", "hessian", True, "R_bv 0.96–1.11, 1σ coverage 0.64–0.71 over 100 replicas"),
    Finding("gauss6", "mle", "hessian", True, "R_bv 0.87–0.99, 1σ coverage 0.67–0.75 over 100 replicas"),
    Finding(
        "multiset2d",
        "mle",
        "hessian",
        False,
        "13 of 15 parameters meet the criterion over 30 replicas; C_p4 and C_p0 under-confident (R_bv 0.54, 0.68), "
        "B_p2 biased",
    ),
    Finding(
        "proxy1d",
        "gan",
        "generator",
        False,
        "under-confident: errors 1.9–6.4× the likelihood's, R_bv 0.29–0.68 over 30 replicas",
        _gan(100_000, 1500, 64, 64, 2, False, noise_final=1.0, average_last=0.0),
    ),
    Finding(
        "proxy1d",
        "gan",
        "bootstrap",
        False,
        "biased by about one likelihood error on every parameter (not converged), R_bv 1.28–1.74 over 30 replicas "
        "(errors then the members' spread alone)",
        _gan(100_000, 1500, 64, 64, 4, True, noise_final=0.0, average_last=0.5),
    ),
    Finding(
        "proxy1d",
        "gan",
        "bootstrap",
        True,
        "every verdict calibrated over 30 replicas, R_bv 0.70–1.12, 1σ coverage 0.57–0.77 (0.61 expected of 4 "
        "members' errors); 5 of 6 parameters meet the criterion, bd's R_bv 0.70 [0.47, 1.00] (the likelihood fit "
        "of the same replicas: 0.86)",
        _gan(100_000, 6000, 8, 256, 4, True, noise_final=0.0, average_last=0.25),
    ),
    Finding(
        "proxy2d",
        "gan",
        "bootstrap",
        False,
        "p4 under-confident over 30 replicas (R_bv 0.73 [0.53, 0.97]), the other 4 calibrated; R_bv 0.73–1.02, "
        "1σ coverage 0.47–0.73 (0.61 expected of 4 members' errors); 3 of 5 parameters meet the criterion at 68.3%, "
        "4 of 5 at 0.61",
        _gan(100_000, 6000, 8, 256, 4, True, noise_final=0.0, average_last=0.25),
    ),
    Finding(
        "proxy2d",
        "gan",
        "bootstrap",
        True,
        "5 of 5 parameters meet the criterion over 30 replicas, R_bv 0.86–0.99, 1σ coverage 0.57–0.67 (0.61 "
        "expected of 4 members' errors); p2's pulls lean high (mean 0.43 [0.03, 0.82], verdict biased; the "
        "likelihood fit of the same replicas: 0.26)",
        _gan(100_000, 12000, 8, 256, 4, True, noise_final=0.0, average_last=0.25),
    ),
    Finding(
        "multiset2d",
        "gan",
        "bootstrap",
        False,
        "8 of 15 parameters meet the criterion over 17 replicas (the likelihood fit of the same replicas: 10 of 15); "
        "where a replica's members reach a bound their spread collapses: B_p4 (truth 0.3, bound 0) 1σ coverage 0.41 "
        "[0.18, 0.67], errors 0.01–0.09 on such replicas against the likelihood's 0.26, pulls down to −26",
        _gan(50_000, 12000, 8, 256, 4, True, noise_final=0.0, average_last=0.25),
    ),
    Finding(
        "gauss6",
        "gan",
        "bootstrap",
        True,
        "both parameters meet the criterion over 30 replicas: R_bv 0.82 [0.68, 0.96] and 0.92 [0.67, 1.18], 1σ "
        "coverage 0.73 and 0.73 (0.67 expected of 16 members' errors); p0's errors on the large side (its verdict "
        "under-confident; the likelihood fit of the same replicas: R_bv 0.92)",
        _gan(10_000, 1500, 64, 16, 16, True, noise_final=0.0, average_last=0.5),
    ),
)


def settings_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The values of :data:`GAN_SETTINGS` in a spec given as a mapping (a results file's ``spec`` attribute, read
    with ``safe_yaml``); missing ones are ``None``."""
    out: dict[str, Any] = {}
    for section, key in GAN_SETTINGS:
        part = spec.get(section) if isinstance(spec, Mapping) else None
        out[f"{section}.{key}"] = part.get(key) if isinstance(part, Mapping) else None
    return out


def findings_for(problem: str, method: str, errors: str) -> list[Finding]:
    """The campaigns' findings on ``method``'s ``errors`` for ``problem`` (any settings)."""
    return [f for f in FINDINGS if (f.problem, f.method, f.errors) == (problem, method, errors)]
