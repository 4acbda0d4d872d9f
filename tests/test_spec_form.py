"""The spec form is generated from the spec's dataclasses and routes validation messages to its fields."""

from __future__ import annotations

from dataclasses import fields

import panel as pn

from qcf_studio.app.dashboard.spec_form import SpecForm
from qcf_studio.engine.spec import Spec, SpecError, default_spec, parse_spec


def _form():
    edits = []
    form = SpecForm(on_edit=lambda *a: edits.append(a))
    form.show(default_spec("proxy2d").to_dict())
    return form, edits


def test_every_field_of_every_section_has_a_widget():
    form, _ = _form()
    spec = Spec()
    expected = {"name"} | {
        f"{section.name}.{f.name}"
        for section in fields(Spec)
        # limits: raised from the command line only (the page refuses a spec that raises them);
        # campaign: set in the Campaign tab's own form
        if section.name not in ("version", "name", "limits", "campaign")
        for f in fields(getattr(spec, section.name))
    }
    assert set(form._widgets) == expected
    assert [w.label for w in form._widgets["problem.truth"]] == ["p0", "p1", "p2", "p3", "p4"]
    assert len(form._widgets["problem.bounds"]) == 10  # low and high per parameter
    assert isinstance(form._widgets["cluster.mode"][0], pn.widgets.Select)
    assert form._widgets["cluster.mode"][0].options == ["ensemble", "data_parallel"]
    assert isinstance(form._widgets["cluster.device"][0], pn.widgets.Select)
    assert form._widgets["cluster.device"][0].options == ["auto", "cpu", "cuda"]
    assert isinstance(form._widgets["ensemble.members"][0], pn.widgets.IntInput)
    assert isinstance(form._widgets["detector.background"][0], pn.widgets.TextInput)  # optional: inline YAML


def test_edits_are_reported_as_spec_values_and_pushed_values_are_not():
    form, edits = _form()
    form._widgets["cluster.ranks"][0].value = 2
    form._widgets["problem.truth"][4].value = 0.5
    form._widgets["problem.bounds"][1].value = 1.2  # p0 high
    form._widgets["detector.background"][0].value = "{fraction: 0.1, slope: 0.0}"
    assert edits[0] == ("cluster", "ranks", 2)
    assert edits[1][:2] == ("problem", "truth") and edits[1][2]["p4"] == 0.5 and edits[1][2]["p0"] == 0.5
    assert edits[2][2]["p0"] == [-0.5, 1.2]
    assert edits[3] == ("detector", "background", {"fraction": 0.1, "slope": 0.0})
    n = len(edits)
    raw = default_spec("proxy2d").to_dict()
    raw["ensemble"]["members"] = 5
    form.show(parse_spec(raw).to_dict())  # the page pushes a validated spec: not an edit
    assert form._widgets["ensemble.members"][0].value == 5 and len(edits) == n


def test_a_validation_message_appears_under_the_field_it_names():
    form, _ = _form()
    try:
        parse_spec({"problem": {"kind": "proxy2d", "truth": {"p4": 9.0}}})
    except SpecError as e:
        assert form.show_error(e.field, e.message)
    shown = {p: pane.object for p, pane in form._errors.items() if pane.visible}
    assert list(shown) == ["problem.truth"] and "problem.truth.p4" in shown["problem.truth"]
    assert form.show_error("detector.background.fraction", "must be in [0, 1), got 1.5")  # nearest field
    assert [p for p, pane in form._errors.items() if pane.visible] == ["detector.background"]
    assert form._card_of("detector.background").collapsed is False  # its section opens
    assert not form.show_error("spec", "not valid YAML")  # no such field: the page shows it elsewhere
    assert not any(pane.visible for pane in form._errors.values())


def test_bad_inline_yaml_is_reported_at_the_field_and_not_sent():
    form, edits = _form()
    form._widgets["detector.acceptance"][0].value = "{kind: [unclosed"
    assert edits == [] and form._errors["detector.acceptance"].visible


def test_true_false_or_default_fields_offer_the_problems_default():
    form, edits = _form()
    select = form._widgets["training.disc_per_observable"][0]
    assert isinstance(select, pn.widgets.Select)
    # labels as values: a None value shows as no choice at all in the browser
    assert select.options == ["problem's default", "on", "off"] and select.value == "problem's default"
    select.value = "off"
    assert edits[-1] == ("training", "disc_per_observable", False)
    raw = default_spec("multiset2d").to_dict()
    raw["training"]["disc_edge_features"] = True
    form.show(parse_spec(raw).to_dict())  # a pushed spec sets the select, without an edit
    assert form._widgets["training.disc_edge_features"][0].value == "on" and len(edits) == 1
    assert form._widgets["training.disc_per_observable"][0].value == "problem's default"
