"""The spec's ``campaign`` section: how many pseudo-data replicas, where their truths come from, which methods fit them.

```yaml
campaign:
  replicas: 50            # pseudo-data sets fluctuated from the truth (at least 2)
  truths: fixed           # fixed: every replica from problem.truth | prior: each its own truth, drawn uniformly
  prior_bounds: {Nu: [1.5, 2.5]}   # truths: prior only; within problem.bounds (default: the bounds)
  methods: [gan, mle]     # every replica fitted by each (default: [training.method])
```

Validated like the rest of a spec (:mod:`qcf_studio.engine.specfields`): unknown keys and bad values raise a
:class:`~qcf_studio.engine.specfields.SpecError` naming the field, before anything is dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import WithJsonSchema, with_config

from qcf_studio.engine.choices import METHODS, TRUTHS, Truths
from qcf_studio.engine.specfields import SECTION_CONFIG, Range, SpecError, Whole, fill_section, number
from qcf_studio.engine.textlimits import clip, shown

__all__ = ["CampaignSpec", "TRUTHS", "parse_campaign"]

MIN_REPLICAS = 2
_METHOD_SCHEMA = {"type": "string", "enum": list(METHODS)}


@with_config(SECTION_CONFIG)
@dataclass
class CampaignSpec:
    """Many pseudo-data replicas, each fitted by every method (see the module's docstring)."""

    replicas: Annotated[Whole, Range(MIN_REPLICAS)] = 50
    """Pseudo-data sets fluctuated from the truth."""
    truths: Truths = "fixed"
    """fixed: every replica from problem.truth | prior: each its own truth, drawn uniformly."""
    prior_bounds: Annotated[
        dict[str, list[float]],
        WithJsonSchema(
            {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            }
        ),
    ] = field(default_factory=dict)
    """truths: prior only: parameter: [low, high] within problem.bounds (default: the bounds)."""
    methods: Annotated[
        list[str],
        WithJsonSchema({"anyOf": [{"type": "array", "items": _METHOD_SCHEMA, "minItems": 1}, _METHOD_SCHEMA]}),
    ] = field(default_factory=list)
    """Every replica is fitted by each (default: [training.method])."""


def parse_campaign(
    raw: Any,
    param_bounds: dict[str, list[float]],
    methods_available: tuple[str, ...],
    default_method: str,
    max_replicas: int,
) -> CampaignSpec:
    """The validated ``campaign`` section ``raw``; ``param_bounds`` are the problem's (validated) bounds."""
    if not isinstance(raw, dict):
        raise SpecError("campaign", f"expected a mapping (replicas, truths, prior_bounds, methods), got {shown(raw)}")
    campaign: CampaignSpec = fill_section(
        "campaign", CampaignSpec, {k: v for k, v in raw.items() if k not in ("prior_bounds", "methods")}
    )
    if campaign.replicas > max_replicas:
        raise SpecError(
            "campaign.replicas",
            f"{campaign.replicas:,} is more than the limit of {max_replicas:,}; a "
            f"spec may raise it with limits.replicas",
        )

    prior = raw.get("prior_bounds")
    if prior is not None and prior != {}:  # {}: none (how a validated spec writes it)
        if campaign.truths != "prior":
            raise SpecError("campaign.prior_bounds", "bounds the truths drawn with truths: prior; here truths is fixed")
        if not isinstance(prior, dict):
            raise SpecError(
                "campaign.prior_bounds", f"expected a mapping of parameter: [low, high], got {shown(prior)}"
            )
        for name, pair in prior.items():
            path = f"campaign.prior_bounds.{clip(str(name))}"
            if name not in param_bounds:
                raise SpecError(path, f"unknown parameter; the problem has {', '.join(param_bounds)}")
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise SpecError(path, f"expected [low, high], got {shown(pair)}")
            a, b = number(path, pair[0]), number(path, pair[1])
            lo, hi = param_bounds[name]
            if not a < b:
                raise SpecError(path, f"low bound {a} must be below high bound {b}")
            if a < lo or b > hi:
                raise SpecError(
                    path, f"[{a}, {b}] reaches outside problem.bounds [{lo}, {hi}], where no fit can follow"
                )
            campaign.prior_bounds[name] = [a, b]

    methods = raw.get("methods", [default_method])
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list) or not methods:
        raise SpecError(
            "campaign.methods", f"expected a list of methods ({', '.join(methods_available)}), got {shown(methods)}"
        )
    for m in methods:
        if m not in methods_available:
            raise SpecError(
                "campaign.methods", f"{shown(m)} is not available; choose from {', '.join(methods_available)}"
            )
    if len(set(methods)) != len(methods):
        raise SpecError("campaign.methods", f"each method once, got {shown(methods)}")
    campaign.methods = list(methods)
    return campaign
