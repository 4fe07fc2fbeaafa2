"""A form built from a pydantic model's fields: one widget per field, chosen by its type, with its default,
its choices, its description as help, and a place beside it for the field's validation message.

The model itself validates (`Form.validate`), so the form says exactly what the service would say.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import Literal, Union, get_args, get_origin

import ipywidgets as widgets
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from workbench.ui.common import ERROR_STYLE, escape, muted

_LABEL = {"description_width": "13em"}
_INPUT = widgets.Layout(width="26em")
NONE_LABEL = "(none)"


@dataclass
class Field:
    name: str
    widget: widgets.ValueWidget
    error: widgets.HTML  # shown under the field, empty (hidden) while the value is fine
    row: widgets.Box
    optional_text: bool = False  # a Text standing for `X | None`: empty means None
    listed: bool = False  # a Text standing for a list: items separated by commas
    mapping: bool = False  # a Text standing for a mapping: a JSON object
    message: str | None = None  # the validation message shown now

    def get(self):
        value = self.widget.value
        if self.optional_text or isinstance(self.widget, widgets.Text):
            value = value.strip()
            if not value and self.optional_text:
                return None
        if self.listed:
            return [item.strip() for item in value.split(",") if item.strip()]
        if self.mapping and value:
            try:
                return json.loads(value)
            except ValueError:
                return value  # the model then says it is not a mapping
        return value

    def set(self, value) -> None:
        if self.listed and isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        if self.mapping and isinstance(value, dict):
            value = json.dumps(value)
        self.widget.value = ("" if value is None else str(value)) if self.optional_text else value

    def show_error(self, message: str | None) -> None:
        self.message = message
        self.error.value = f'<span style="{ERROR_STYLE}">⚠ {escape(message)}</span>' if message else ""
        self.error.layout.display = "" if message else "none"


class Form:
    """`Form(TrainingConfig, sections={"batch_size": "Optimisation", ...}, initial={...})`.

    `sections` maps a field to the title of the section it opens; later fields join it until the next.
    `suggestions` gives a str field a Combobox of usual values (still free text).
    """

    def __init__(self, model: type[BaseModel], sections: dict[str, str] | None = None,
                 initial: dict | None = None, suggestions: dict[str, list[str]] | None = None):
        self.model = model
        self.fields: dict[str, Field] = {}
        self.loose: list[str] = []  # the last messages about no one field (the model's own checks)
        self._section_of: dict[str, int] = {}
        suggestions, sections = suggestions or {}, sections or {}
        groups: list[tuple[str, list[widgets.Widget]]] = []
        for name, info in model.model_fields.items():
            if name in sections or not groups:
                groups.append((sections.get(name, model.__name__), []))
            self.fields[name] = _field(name, info, suggestions.get(name))
            self._section_of[name] = len(groups) - 1
            groups[-1][1].append(self.fields[name].row)
        self.widget = widgets.Accordion(children=[widgets.VBox(rows) for _, rows in groups],
                                        titles=[title for title, _ in groups], selected_index=0)
        self.set_values(**(initial or {}))

    def values(self) -> dict:
        return {name: field.get() for name, field in self.fields.items()}

    def set_values(self, **values) -> None:
        unknown = sorted(set(values) - set(self.fields))
        if unknown:  # a misspelt field would otherwise be dropped without a word
            raise ValueError(f"not fields of {self.model.__name__}: {', '.join(unknown)}")
        for name, value in values.items():
            self.fields[name].set(value)

    def validate(self) -> BaseModel | None:
        """The model, or None with each error shown beside its field (and the first such section open)."""
        self.clear_errors()
        try:
            return self.model(**self.values())
        except ValidationError as exc:
            self.loose = self.show_errors([(str(e["loc"][0]) if e["loc"] else None, e["msg"])
                                           for e in exc.errors()])
            return None

    def show_errors(self, errors: list[tuple[str | None, str]]) -> list[str]:
        """Shows each (field, message) beside its field; answers the messages no field could take."""
        loose, opened = [], False
        for name, message in errors:
            field = self.fields.get(name or "")
            if field is None:
                loose.append(f"{name}: {message}" if name else message)
                continue
            field.show_error(message)
            if not opened:  # bring the first faulty field into view
                self.widget.selected_index = self._section_of[field.name]
                opened = True
        return loose

    def clear_errors(self) -> None:
        self.loose = []
        for field in self.fields.values():
            field.show_error(None)

    def errors(self) -> dict[str, str]:
        """The messages shown now, by field."""
        return {name: f.message for name, f in self.fields.items() if f.message}


def _field(name: str, info: FieldInfo, suggestions: list[str] | None) -> Field:
    annotation, optional = _unwrap(info.annotation)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    common = {"description": name, "style": _LABEL, "tooltip": info.description or name}
    optional_text = listed = mapping = False
    if get_origin(annotation) is Literal:
        choices = [(str(c), c) for c in get_args(annotation)]
        if optional:
            choices.insert(0, (NONE_LABEL, None))
        value = default if default is not None or optional else choices[0][1]
        widget = widgets.Dropdown(options=choices, value=value, **common)
    elif annotation is bool:
        widget = widgets.Checkbox(value=bool(default), indent=False, **common)
    elif annotation in (int, float) and not optional and default is not None:
        kind = widgets.IntText if annotation is int else widgets.FloatText
        widget = kind(value=default, layout=_INPUT, **common)
    elif get_origin(annotation) is list:
        widget = widgets.Text(value=", ".join(map(str, default or [])), layout=_INPUT,
                              placeholder=f"{NONE_LABEL}, or items separated by commas" if optional
                              else "items separated by commas", **common)
        optional_text, listed = optional, True
    elif get_origin(annotation) is dict:
        widget = widgets.Text(value=json.dumps(default) if default else "", layout=_INPUT,
                              placeholder=f"{NONE_LABEL}, or JSON such as {{\"momentum\": 0.9}}", **common)
        optional_text, mapping = optional, True
    elif suggestions:
        widget = widgets.Combobox(value=default or "", options=suggestions, ensure_option=False,
                                  layout=_INPUT, **common)
    else:  # text, and numbers that may be left empty (None): pydantic parses "3" as it parses 3
        optional_text = optional
        widget = widgets.Text(value="" if default is None else str(default), layout=_INPUT,
                              placeholder=NONE_LABEL if optional else "required", **common)
    error = widgets.HTML(layout=widgets.Layout(display="none", margin="0 0 0 13em"))
    help_text = widgets.HTML(muted(info.description or ""), layout=widgets.Layout(margin="0 0 0 1em"))
    row = widgets.VBox([widgets.HBox([widget, help_text]), error])
    return Field(name, widget, error, row, optional_text, listed, mapping)


def _unwrap(annotation) -> tuple[object, bool]:
    """(the type, whether None is allowed) for `X`, `X | None` and `Optional[X]`."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(annotation))
    return annotation, False
