"""Specs from anyone: alias bombs, megabytes of YAML, deep nesting, huge values and sizes are refused at once,
with a short message naming the field; nothing is dispatched."""

from __future__ import annotations

import time

import pytest

from qcf_studio.app.cli.commands import main as cli_main
from qcf_studio.engine.spec import LimitsSpec, SpecError, load_spec, parse_spec, parse_spec_text

LEVELS = 9  # 9 ** 9 = 387 million strings once expanded


def _alias_bomb(levels: int = LEVELS) -> str:
    """A 'billion laughs' spec: each anchor lists the previous one nine times; the name field gets the result."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


def test_an_alias_bomb_is_refused_in_well_under_a_second_with_a_short_message():
    text = _alias_bomb()
    assert len(text) < 600
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        parse_spec_text(text)
    assert time.perf_counter() - start < 0.5
    assert err.value.field == "spec" and "expands to more than" in err.value.message
    assert len(str(err.value)) < 300


def test_a_few_aliases_that_expand_to_little_are_fine():
    text = "problem: &p {kind: gauss6, events: 500}\ntraining: {steps: 10}\nname: ok\n"
    assert parse_spec_text(text).problem.kind == "gauss6"


def test_the_dashboard_validator_refuses_an_alias_bomb_at_once(tmp_path):
    from qcf_studio.app.dashboard.page import Dashboard
    from qcf_studio.app.dashboard.runs import RunManager
    from qcf_studio.engine.spec import default_spec

    dash = Dashboard(RunManager(None, tmp_path / "runs", tmp_path), default_spec().to_yaml())
    start = time.perf_counter()
    assert dash._validate(_alias_bomb()) is None
    assert time.perf_counter() - start < 0.5
    assert dash.message.visible and "expands to more than" in dash.message.object
    assert len(dash.message.object) < 400
    dash.dispose()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: x\n" + "# padding\n" * 120_000, "bytes of YAML; at most 1,000,000"),
        ("name: " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 levels"),
        ("name: x\nproblem: {events: " + "9" * 5000 + "}\n", "cannot read the YAML"),
    ],
)
def test_oversized_deep_or_unreadable_yaml_is_refused_quickly(text, words):
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        parse_spec_text(text)
    assert time.perf_counter() - start < 0.5
    assert words in err.value.message and len(str(err.value)) < 300


def test_a_spec_file_over_a_megabyte_is_refused_by_validate_without_reading_it_all(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "#" * 3_000_000 + "\n")
    with pytest.raises(SpecError, match="more than 1,000,000 bytes"):
        load_spec(path)
    assert cli_main(["validate", str(path)]) == 2
    assert "more than 1,000,000 bytes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"name": "x" * 200_000}, "name"),
        ({"problem": {"kind": "k" * 200_000}}, "problem.kind"),
        ({"problem": {"truth": {"Nu": "v" * 200_000}}}, "problem.truth.Nu"),
        ({"training": {"steps": [list(range(1000))] * 1000}}, "training.steps"),
        ({"problem": {"data": 5}}, "problem.data"),
    ],
)
def test_messages_show_at_most_a_hundred_characters_of_a_value(raw, field):
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert err.value.field == field
    assert len(err.value.message) < 250, err.value.message


def test_unknown_keys_that_are_huge_are_named_briefly():
    with pytest.raises(SpecError) as err:
        parse_spec({"training": {"k" * 100_000: 1}})
    assert err.value.field.startswith("training.kkk") and len(err.value.field) <= 100


@pytest.mark.parametrize(
    ("raw", "field", "limit"),
    [
        ({"problem": {"events": 10**12}}, "problem.events", "5,000,000"),
        ({"ensemble": {"members": 10**6}}, "ensemble.members", "64"),
        ({"training": {"steps": 10**9}}, "training.steps", "1,000,000"),
        ({"training": {"method": "gan"}, "cluster": {"mode": "data_parallel", "ranks": 500}}, "cluster.ranks", "64"),
        ({"cluster": {"workers": 1000}}, "cluster.workers", "64"),
        ({"training": {"grid_points": 4096}, "problem": {"kind": "proxy2d"}}, "training.grid_points", "1,048,576"),
        ({"training": {"batch_params": 10_000, "events_per_param": 10_000}}, "training.events_per_param", "1,000,000"),
        ({"training": {"disc_width": 100_000}}, "training.disc_width", "4,096"),
        ({"training": {"steps": 1_000_000, "metrics_every": 1}}, "training.metrics_every", "100,000"),
        ({"detector": {"resolution": 0.1, "surrogate": {"events": 10**10}}}, "detector.surrogate.events", "10,000,000"),
    ],
)
def test_sizes_beyond_the_limits_are_refused_by_validate_naming_the_field(raw, field, limit):
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert err.value.field == field and limit in err.value.message, err.value


def test_a_spec_may_raise_a_limit_but_not_in_the_dashboard():
    raw = {"ensemble": {"members": 100}, "limits": {"members": 128}}
    spec = parse_spec(raw)
    assert spec.ensemble.members == 100 and "limits" in spec.to_dict()
    assert parse_spec_text(spec.to_yaml()).limits.members == 128  # frozen into results with the spec
    with pytest.raises(SpecError) as err:
        parse_spec(raw, max_limits=LimitsSpec())
    assert err.value.field == "limits.members" and "command line" in err.value.message
    assert "limits" not in parse_spec({}).to_dict()  # the defaults go without saying


def test_a_five_thousand_character_data_path_is_a_message_not_a_traceback(tmp_path, capsys):
    with pytest.raises(SpecError) as err:
        parse_spec({"problem": {"data": "d/" * 2500}})
    assert err.value.field == "problem.data" and "not a usable file path" in err.value.message
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nproblem: {data: " + "a" * 5000 + "}\n")
    assert cli_main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "problem.data" in err and len(err) < 400


def test_a_long_path_in_a_message_keeps_its_file_name_and_stays_short(tmp_path):
    from qcf_studio.engine.textlimits import clip_path

    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 12, "missing\x1bspec.yaml")
    with pytest.raises(SpecError) as err:
        load_spec(deep)
    message = err.value.message
    assert "missing\\x1bspec.yaml" in message and "\x1b" not in message  # the name kept, its escape shown
    assert message.startswith("cannot read ...") and len(message) < 160, message
    assert clip_path("/short/spec.yaml") == "/short/spec.yaml"
    assert clip_path("x" * 500 + "/spec.yaml", 20) == "..." + ("x" * 500 + "/spec.yaml")[-17:]
