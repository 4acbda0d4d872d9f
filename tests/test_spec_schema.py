"""The spec validator imports no torch, its problem data agree with the torch registry, and its JSON Schema
(``qcf-studio schema``) accepts every sample spec and refuses unknown keys."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from qcf_studio.app.cli import main
from qcf_studio.engine.problem_catalog import ProblemInfo, problem_info
from qcf_studio.engine.safe_yaml import load_yaml
from qcf_studio.engine.spec import SpecError, parse_spec
from qcf_studio.engine.spec_schema import spec_json_schema

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "sample_data").glob("*.yaml"))


def test_validating_every_sample_spec_imports_no_torch():
    code = (
        "import sys, qcf_studio.engine.spec, qcf_studio.engine.data.datafiles\n"
        "from qcf_studio.app.cli import main\n"
        f"for path in {[str(p) for p in SAMPLES]!r}:\n"
        "    assert main(['validate', path]) == 0, path\n"
        "qcf_studio.engine.spec.parse_spec({'problem': {'kind': 'proxy2d'}, 'detector': {'resolution': 0.1,"
        " 'acceptance': {'width': [0.1, 0.2]}, 'background': {}, 'surrogate': {}}})\n"
        "heavy = sorted(m for m in ('torch', 'panel') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_torch_problems_read_their_data_from_the_catalog():
    from qcf_studio.engine.problems import get_problem, problem_kinds

    for kind in problem_kinds():
        problem, info = get_problem(kind), problem_info(kind)
        for f in fields(ProblemInfo):
            assert getattr(problem, f.name) == getattr(info, f.name), (kind, f.name)
        assert problem.event_dims == info.event_dims and problem.domain == info.domain


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"training": {"steps": "3"}}, "training.steps", "expected a whole number, got '3'"),
        ({"training": {"steps": 3.0}}, "training.steps", "expected a whole number, got 3.0"),
        ({"training": {"steps": True}}, "training.steps", "expected a whole number, got True"),
        ({"training": {"lr_g": "0.1"}}, "training.lr_g", "expected a number"),
        ({"training": {"xsec_weight": float("nan")}}, "training.xsec_weight", "expected a finite number"),
        ({"training": {"xsec_weight": 10**400}}, "training.xsec_weight", "expected a finite number"),
        ({"ensemble": {"bootstrap": 1}}, "ensemble.bootstrap", "expected true or false, got 1"),
        ({"cluster": {"schedule": "async"}}, "cluster.schedule", "choose one of sync, grouped"),
        ({"cluster": {"timeout": 0.5}}, "cluster.timeout", "must be at least 1, got 0.5"),
        ({"detector": {"acceptance": {"max": 0.5, "shape": 1}}}, "detector.acceptance.shape", "turn_on, width, max"),
        ({"detector": {"background": {"shape": "gauss"}}}, "detector.background.shape", "uniform, exponential"),
        ({"detector": {"background": "x" * 10_000}}, "detector.background", "expected a mapping"),
        ({"training": {"method": ["x" * 10_000]}}, "training.method", "expected text (one of gan, mle)"),
    ],
)
def test_strict_types_and_messages_that_name_the_field(raw, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert err.value.field == field and words in err.value.message, err.value
    assert len(err.value.message) < 250


def test_a_validated_detector_section_is_written_as_given():
    spec = parse_spec({"detector": {"resolution": 0.05, "background": {"fraction": 0.2}}})
    assert spec.to_dict()["detector"] == {
        "resolution": 0.05,
        "acceptance": None,
        "background": {"fraction": 0.2, "shape": "uniform"},
        "surrogate": None,
    }
    assert parse_spec(load_yaml(spec.to_yaml())).to_dict() == spec.to_dict()


def test_the_schema_names_the_choices_and_describes_the_fields():
    schema = spec_json_schema()
    json.dumps(schema)
    defs = schema["$defs"]
    assert defs["TrainingSpec"]["properties"]["method"]["enum"] == ["gan", "mle"]
    assert defs["ClusterSpec"]["properties"]["mode"]["enum"] == ["ensemble", "data_parallel"]
    assert {"proxy1d", "proxy2d", "multiset2d", "gauss6"} <= set(defs["ProblemSpec"]["properties"]["kind"]["enum"])
    assert defs["TrainingSpec"]["properties"]["lr_g"]["exclusiveMaximum"] == 1
    assert "description" in defs["TrainingSpec"]["properties"]["steps"]
    assert all(d.get("additionalProperties") is False for d in defs.values())


def test_qcf_studio_schema_prints_json(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$schema"].startswith("https://json-schema.org/")


def test_every_sample_spec_validates_against_the_schema_and_an_unknown_key_does_not():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(spec_json_schema())
    assert SAMPLES
    for path in SAMPLES:
        errors = [e.message for e in validator.iter_errors(load_yaml(path.read_text()))]
        assert not errors, (path.name, errors)
    assert not list(validator.iter_errors(parse_spec({"campaign": {"replicas": 3}}).to_dict()))
    for bad in (
        {"training": {"stpes": 10}},
        {"trainin": {}},
        {"detector": {"acceptance": {"widht": 0.1}}},
        {"training": {"method": "vae"}},
        {"training": {"steps": "3"}},
    ):
        assert list(validator.iter_errors(bad)), bad
