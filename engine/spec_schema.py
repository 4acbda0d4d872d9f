"""The spec's JSON Schema (``qcf-studio schema``), generated from the dataclasses that validate it, for
editors that complete and check YAML against a schema (VS Code's YAML extension, PyCharm, ...).

The schema checks structure, types, choices and ranges; what depends on more than one field (an mle fit
has one member) or on the problem (parameter names) only ``qcf-studio validate`` checks.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from qcf_studio.engine.problem_catalog import problem_info, problem_kinds

__all__ = ["spec_json_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a run spec, with every registered problem kind as a choice."""
    from qcf_studio.engine.gan.config import TrainingConfig
    from qcf_studio.engine.spec import SPEC_VERSION, Spec  # here: engine.spec imports nothing of this module

    schema = TypeAdapter(Spec).json_schema()
    # pydantic reads the docstrings under the fields of the class it validates, not of its bases
    inherited = TypeAdapter(TrainingConfig).json_schema()["properties"]
    for key, prop in schema["$defs"]["TrainingSpec"]["properties"].items():
        if key in inherited and "description" in inherited[key]:
            prop.setdefault("description", inherited[key]["description"])
    schema = {"$schema": SCHEMA_DIALECT, **schema, "title": "qcf-studio run spec"}
    schema["description"] = (
        f"A qcf-studio run spec, version {SPEC_VERSION} (`qcf-studio schema`). Unknown keys are errors; "
        "`qcf-studio validate SPEC.yaml` also checks what depends on several fields or on the problem."
    )
    props = schema["properties"]
    props["version"].update({"const": SPEC_VERSION})
    props["name"].update({"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"})
    kinds = problem_kinds()
    problem = schema["$defs"]["ProblemSpec"]["properties"]
    problem["kind"]["enum"] = kinds
    problem["kind"]["description"] += " " + "; ".join(f"{k}: {problem_info(k).description}" for k in kinds)
    # null means "the defaults" for every section, as in a spec's YAML (`ensemble:` with nothing after it)
    for key, prop in props.items():
        if "$ref" in prop:
            props[key] = {"anyOf": [{"$ref": prop.pop("$ref")}, {"type": "null"}], **prop}
    return schema
