"""A form for every field of the spec, generated from the spec's dataclasses (no hand-written field list).

Each field's widget follows its value's type in the validated spec: whole numbers, numbers, true/false,
a choice (``qcf_studio.engine.spec.FIELD_CHOICES``; true/off/the problem's default for
``qcf_studio.engine.spec.OPTIONAL_BOOL_FIELDS``), per-parameter numbers (truth) and ``[low, high]`` pairs
(bounds); anything else (optional detector effects, lists) is edited as inline YAML. The form does not
validate by itself: it reports each edit as the whole spec mapping, and the page shows the validator's
message next to the field it names (:meth:`SpecForm.show_error`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn
import yaml

from qcf_studio.app.dashboard.markup import md_code, md_text
from qcf_studio.engine.problems import problem_kinds
from qcf_studio.engine.safe_yaml import YAMLRefused, load_yaml
from qcf_studio.engine.spec import FIELD_CHOICES, OPTIONAL_BOOL_FIELDS, Spec

__all__ = ["SpecForm"]

# true/false/null fields: null takes the problem's default (e.g. training.disc_edge_features). The select holds
# the labels: a None value would show as no choice at all in the browser.
_OPTIONAL_BOOL_LABELS = {None: "problem's default", True: "on", False: "off"}
_OPTIONAL_BOOL_VALUES = {label: value for value, label in _OPTIONAL_BOOL_LABELS.items()}
_OPEN_SECTIONS = ("problem", "ensemble", "cluster")  # shown expanded; detector and training start collapsed
# Mappings by default (problem.truth, problem.bounds) hold a value per parameter; optional effects default to null.
_PER_PARAMETER = {
    (s, k) for s, v in Spec().to_dict().items() if isinstance(v, dict) for k, d in v.items() if isinstance(d, dict)
}


def _inline_yaml(value: Any) -> str:
    return "" if value is None else yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()


def _is_pairs(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) for v in value.values()
        )
    )


def _is_numbers(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())
    )


class SpecForm(pn.viewable.Viewer):
    """Widgets for a spec mapping (``Spec.to_dict()``), one per field, grouped in a card per section.

    Arguments:
        on_edit: called with the section, key and new value of every edit the user makes
            (``("problem", "events", 5000)``; truth and bounds edits carry the whole mapping).
    """

    def __init__(self, on_edit: Callable[[str, str, Any], None], **params: Any) -> None:
        super().__init__(**params)
        self.on_edit = on_edit
        self.layout = pn.Column(sizing_mode="stretch_width", css_classes=["spec-form"])
        self._widgets: dict[str, list[pn.widgets.Widget]] = {}  # dotted path -> its widgets
        self._kinds: dict[str, str] = {}  # dotted path -> plain | pairs | numbers | yaml | optional_bool
        self._errors: dict[str, pn.pane.Markdown] = {}  # dotted path -> the message under its widgets
        self._shape: tuple | None = None  # sections, keys and parameter names the widgets were built for
        self._values: dict[str, Any] = {}
        self._quiet = False  # set while the page pushes values in, so that they are not reported back

    # --- building --------------------------------------------------------------------------------

    def show(self, values: dict[str, Any]) -> None:
        """Show a validated spec mapping: rebuild the widgets if its fields changed, else update their values."""
        shape = tuple(
            (
                s,
                tuple(v) if isinstance(v, dict) else None,
                tuple(
                    tuple(v[k]) if isinstance(v[k], dict) and (_is_pairs(v[k]) or _is_numbers(v[k])) else () for k in v
                )
                if isinstance(v, dict)
                else None,
            )
            for s, v in values.items()
        )
        self._values = values
        self._quiet = True
        try:
            if shape != self._shape:
                self._shape = shape
                self._build(values)
            else:
                for path, widgets in self._widgets.items():
                    self._set(widgets, self._kinds[path], self._lookup(path))
        finally:
            self._quiet = False

    def _lookup(self, path: str) -> Any:
        value: Any = self._values
        for part in path.split("."):
            value = value[part]
        return value

    def _build(self, values: dict[str, Any]) -> None:
        self._widgets.clear()
        self._kinds.clear()
        self._errors.clear()
        cards = []
        for section, content in values.items():
            if not isinstance(content, dict):
                continue  # version, name: the name gets its own field below
            rows = [self._field(section, key, value) for key, value in content.items()]
            cards.append(
                pn.Card(
                    *rows,
                    title=section,
                    collapsed=section not in _OPEN_SECTIONS,
                    sizing_mode="stretch_width",
                    css_classes=[f"form-{section}"],
                )
            )
        self.layout[:] = [self._field("", "name", values.get("name", "")), *cards]

    def _field(self, section: str, key: str, value: Any) -> pn.Column:
        path = f"{section}.{key}" if section else key
        label = key.replace("_", " ")
        choices = list(problem_kinds()) if path == "problem.kind" else FIELD_CHOICES.get(path)
        kind = "plain"
        if choices is not None:
            widgets = [pn.widgets.Select(label=label, options=list(choices), value=value)]
        elif path in OPTIONAL_BOOL_FIELDS:
            kind = "optional_bool"
            widgets = [
                pn.widgets.Select(label=label, options=list(_OPTIONAL_BOOL_VALUES), value=_OPTIONAL_BOOL_LABELS[value])
            ]
        elif isinstance(value, bool):
            widgets = [pn.widgets.Checkbox(label=label, value=value)]
        elif isinstance(value, int):
            widgets = [pn.widgets.IntInput(label=label, value=value)]
        elif isinstance(value, float):
            widgets = [pn.widgets.FloatInput(label=label, value=value)]
        elif (section, key) in _PER_PARAMETER and _is_pairs(value):  # bounds: a low and a high per parameter
            kind = "pairs"
            widgets = [
                pn.Row(
                    pn.widgets.FloatInput(label=f"{p} low", value=float(lo), width=120),
                    pn.widgets.FloatInput(label=f"{p} high", value=float(hi), width=120),
                )
                for p, (lo, hi) in value.items()
            ]
        elif (section, key) in _PER_PARAMETER and _is_numbers(value):  # truth: a number per parameter
            kind = "numbers"
            widgets = [pn.widgets.FloatInput(label=p, value=float(v), width=120) for p, v in value.items()]
        elif isinstance(value, str):
            widgets = [pn.widgets.TextInput(label=label, value=value)]
        else:  # optional effects (null = off), lists: inline YAML
            kind = "yaml"
            widgets = [
                pn.widgets.TextInput(
                    label=f"{label} (YAML, empty = off)", value=_inline_yaml(value), placeholder="null"
                )
            ]
        leaves = [w for item in widgets for w in (item.objects if isinstance(item, pn.Row) else [item])]
        for w in leaves:
            w.param.watch(lambda _e, p=path: self._edited(p), "value")
        self._widgets[path] = leaves
        self._kinds[path] = kind
        error = self._errors[path] = pn.pane.Markdown(
            "", visible=False, css_classes=["field-error"], styles={"color": "#b00020", "font-size": "12px"}
        )
        title = [pn.pane.Markdown(f"**{label}**", margin=(0, 5))] if len(widgets) > 1 else []
        body = pn.FlexBox(*widgets) if len(widgets) > 1 else widgets[0]
        return pn.Column(
            *title,
            body,
            error,
            sizing_mode="stretch_width",
            margin=(0, 0, 4, 0),
            css_classes=["field-" + path.replace(".", "-")],
        )  # e.g. .field-problem-events

    @staticmethod
    def _set(widgets: list[pn.widgets.Widget], kind: str, value: Any) -> None:
        if kind == "pairs":
            flat = [float(x) for pair in value.values() for x in pair]
        elif kind == "numbers":
            flat = [float(x) for x in value.values()]
        elif kind == "yaml":
            flat = [_inline_yaml(value)]
        elif kind == "optional_bool":
            flat = [_OPTIONAL_BOOL_LABELS[value]]
        else:
            flat = [value]
        for w, v in zip(widgets, flat):
            if w.value != v:
                w.value = v

    # --- edits and errors -----------------------------------------------------------------------

    def _edited(self, path: str) -> None:
        if self._quiet:
            return
        widgets, kind = self._widgets[path], self._kinds[path]
        current = self._lookup(path)
        if kind == "pairs":
            values = [w.value for w in widgets]
            value: Any = {p: [values[2 * i], values[2 * i + 1]] for i, p in enumerate(current)}
        elif kind == "numbers":
            value = {p: w.value for p, w in zip(current, widgets)}
        elif kind == "yaml":
            text = widgets[0].value.strip()
            try:
                value = load_yaml(text) if text else None
            except YAMLRefused as e:
                self.show_error(path, str(e))
                return
        elif kind == "optional_bool":
            value = _OPTIONAL_BOOL_VALUES[widgets[0].value]
        else:
            value = widgets[0].value
        section, _, key = path.rpartition(".")
        self.on_edit(section, key, value)

    def show_error(self, field: str | None, message: str = "") -> bool:
        """Show ``message`` under the widgets of ``field`` (or of the nearest enclosing field); clear every
        other message. Returns whether the field has widgets here (otherwise the page shows it elsewhere)."""
        target = None
        if field:
            parts = field.split(".")
            for n in range(len(parts), 0, -1):
                if ".".join(parts[:n]) in self._errors:
                    target = ".".join(parts[:n])
                    break
        for path, pane in self._errors.items():
            if path == target:
                pane.object = f"⚠ {md_code(field)}: {md_text(message)}"
                pane.visible = True
                card = self._card_of(path)
                if card is not None:
                    card.collapsed = False
            elif pane.visible:
                pane.visible = False
        return target is not None

    def _card_of(self, path: str) -> pn.Card | None:
        section = path.partition(".")[0]
        for item in self.layout:
            if isinstance(item, pn.Card) and item.title == section:
                return item
        return None

    def __panel__(self) -> pn.viewable.Viewable:
        return self.layout
