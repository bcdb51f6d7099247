"""A settings form generated from a declaration: a task's frozen config or a run's config dataclass.

Each field made with :func:`sslstudio.settings.param` carries its type, range, choices, help and how
the form shows it (``label``, ``form``, ``unit``, ``step``, ``decimals``). A field with ``choices`` ->
combo box, ``bool`` -> check box, ``int`` -> spin box, ``float`` -> double spin box (the type is the
default's, or the annotation's when the default is ``None``), a tuple -> a line edit of
comma-separated numbers, anything else -> a line edit. Ranges come from
:func:`~sslstudio.settings.spin_range`, tooltips from the help text, labels from
:func:`~sslstudio.settings.label_of`. Fields without a default or declared ``form=False`` are left to
the page. :meth:`ConfigForm.check` refuses a value the declaration refuses, with its sentence.

The form remembers which fields the user changed (:meth:`ConfigForm.edited`): a change that does not
come from :meth:`ConfigForm.set_values` marks its field, and :meth:`ConfigForm.set_values` unmarks the
fields it sets (unless asked to mark them), so a page can fill the fields the user left alone and
keep the ones they typed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QHBoxLayout, QLabel,
                               QLineEdit, QScrollArea, QSpinBox, QWidget)

from sslstudio.settings import base_type, check_settings, flag_of, label_of, spin_range

__all__ = ["ConfigForm", "SettingsScroll"]


class SettingsScroll(QScrollArea):
    """A vertical scroll area for a settings panel: it never scrolls sideways, and asks for the width its
    content needs (plus the vertical scroll bar), so nothing is clipped; it follows the content when
    that changes (another task's form)."""

    def __init__(self, content: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidget(content)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        content = self.widget()
        if content is None:
            return hint
        width = (content.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
                 + 2 * self.frameWidth())
        return QSize(max(hint.width(), width), hint.height())


def _decimals(value: float | None, lo: float | None, hi: float | None) -> int:
    vals = [abs(v) for v in (value, lo, hi) if v not in (None, 0)]
    smallest = min(vals) if vals else 1.0
    return max(3, min(8, int(-math.floor(math.log10(smallest))) + 3)) if smallest < 1 else 3


def _describe(config_cls: type) -> list[dict]:
    """The form's fields of ``config_cls``: name, default, kind (int, float...), label and metadata."""
    out = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        if f.default is dataclasses.MISSING or meta.get("form", True) is False:
            continue
        kind = type(f.default) if f.default is not None else base_type(f)
        out.append({**meta, "name": f.name, "default": f.default, "kind": kind, "label": label_of(f)})
    return out


class ConfigForm(QWidget):
    """Widgets for the form's fields of ``config_cls``; :meth:`values` returns the changed options,
    :meth:`all_values` every shown setting.

    ``choices`` gives a field choices its declaration cannot hold (the backbones, the GPUs found):
    values, or ``(text, value)`` pairs. ``beside`` puts a widget to the right of a field's (a Browse…
    button).
    """

    changed = Signal()

    def __init__(self, config_cls: type | None = None, parent: QWidget | None = None, *,
                 choices: Mapping[str, Sequence] | None = None, beside: Mapping[str, QWidget] | None = None):
        super().__init__(parent)
        self._layout = QFormLayout(self)
        self._layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self._choices = dict(choices or {})
        self._beside = dict(beside or {})
        self._config_cls: type | None = None
        self._fields: list[dict] = []
        self._widgets: dict[str, QWidget] = {}
        self._edited: set[str] = set()  # fields the user changed
        self._setting = False  # True while set_values changes widgets: not the user's edits
        if config_cls is not None:
            self.set_config_cls(config_cls)

    def set_config_cls(self, config_cls: type) -> None:
        while self._layout.rowCount():
            self._layout.removeRow(0)
        self._widgets.clear()
        self._edited.clear()
        self._config_cls = config_cls if dataclasses.is_dataclass(config_cls) else None
        self._fields = _describe(config_cls) if self._config_cls else []  # not a dataclass: nothing to set
        for f in self._fields:
            widget = self._make_widget(f)
            help_text = f.get("help") or ""
            widget.setToolTip(help_text)
            widget.setObjectName(f"option_{f['name']}")
            label = QLabel(f["label"])
            label.setToolTip(help_text)
            self._widgets[f["name"]] = widget
            self._watch_edits(f["name"], widget)
            extra = self._beside.get(f["name"])
            if extra is None:
                self._layout.addRow(label, widget)
                continue
            row = QHBoxLayout()
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(widget, 1)
            row.addWidget(extra)
            self._layout.addRow(label, row)
        if not self._fields:
            note = QLabel("This task has no settings.")
            note.setEnabled(False)
            self._layout.addRow(note)

    def _watch_edits(self, name: str, widget: QWidget) -> None:
        signal = (widget.currentIndexChanged if isinstance(widget, QComboBox) else
                  widget.toggled if isinstance(widget, QCheckBox) else
                  widget.valueChanged if isinstance(widget, (QSpinBox, QDoubleSpinBox)) else widget.textChanged)
        signal.connect(lambda *_args, n=name: self._user_changed(n))

    def _user_changed(self, name: str) -> None:
        if not self._setting:
            self._edited.add(name)

    def edited(self) -> list[str]:
        """The fields the user changed (not through :meth:`set_values`), in the declaration's order."""
        return [n for n in self.names() if n in self._edited]

    def is_edited(self, name: str) -> bool:
        return name in self._edited

    def set_edited(self, names) -> None:
        """Mark exactly ``names`` as changed by the user (a restored session's marks)."""
        self._edited = {n for n in names if n in self._widgets}

    def _make_widget(self, f: dict) -> QWidget:
        default, kind, name = f["default"], f["kind"], f["name"]
        choices = self._choices.get(name) or f.get("choices")
        if choices:
            w = QComboBox()
            for c in choices:
                text, value = c if isinstance(c, tuple) and name in self._choices else (str(c), c)
                w.addItem(text, value)
            w.setCurrentIndex(max(0, w.findData(default)))
            w.currentIndexChanged.connect(self.changed)
        elif kind is bool:
            w = QCheckBox()
            w.setChecked(bool(default))
            w.toggled.connect(self.changed)
        elif kind in (int, float):
            w = QSpinBox() if kind is int else QDoubleSpinBox()
            if kind is float:
                w.setDecimals(f.get("decimals") or _decimals(default, f.get("min"), f.get("max")))
                w.setSingleStep(f.get("step") or (10 ** -(w.decimals() - 1) if (default or 0) < 1 else 0.1))
            elif f.get("step"):
                w.setSingleStep(int(f["step"]))
            w.setRange(*spin_range(self._config_cls, name, w.decimals() if kind is float else 0))
            if f.get("unit"):
                w.setSuffix(f" {f['unit']}")
            if f.get("special"):  # the minimum means something else (0 clusters: auto)
                w.setSpecialValueText(f["special"])
            if default is not None:
                w.setValue(default)
            w.setKeyboardTracking(False)
            w.valueChanged.connect(self.changed)
        else:
            w = QLineEdit("" if default is None else ", ".join(map(str, default)) if isinstance(default, tuple)
                          else str(default))
            w.editingFinished.connect(self.changed)
        return w

    def _value(self, f: dict) -> Any:
        w = self._widgets[f["name"]]
        default = f["default"]
        if isinstance(w, QComboBox):
            return w.currentData()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            return w.value()
        text = w.text().strip()
        if isinstance(default, tuple):
            kind = type(default[0]) if default else float
            try:
                return tuple(kind(x) for x in text.replace(";", ",").split(",") if x.strip())
            except ValueError:
                return default
        return None if default is None and not text else text

    def values(self) -> dict:
        """Options that differ from the paper defaults (what ``create_task`` takes)."""
        out = {}
        for f in self._fields:
            value, default = self._value(f), f["default"]
            w = self._widgets[f["name"]]
            if isinstance(w, QDoubleSpinBox) and isinstance(default, float) and value == round(default, w.decimals()):
                continue  # the box shows the default rounded to its decimals
            if value != default:
                out[f["name"]] = list(value) if isinstance(value, tuple) else value
        return out

    def all_values(self) -> dict:
        """Every setting the form shows, as the declaration's types (an empty optional text: ``None``)."""
        return {f["name"]: self._value(f) for f in self._fields}

    def check(self) -> None:
        """Raise :class:`~sslstudio.errors.ConfigError` with the declaration's sentence for the first value it
        refuses, naming the setting by its label."""
        if self._config_cls is not None:
            shown = {f["name"] for f in self._fields}
            check_settings(self.all_values(), self._config_cls,
                           name=lambda f: label_of(f) if f.name in shown else flag_of(f))

    def set_values(self, values: dict, *, edited: bool = False) -> None:
        """Show ``values`` (names the form lacks are ignored). The fields set count as not changed by
        the user, or as changed with ``edited=True``."""
        self.blockSignals(True)
        self._setting = True
        try:
            for f in self._fields:
                if f["name"] not in values:
                    continue
                w, v = self._widgets[f["name"]], values[f["name"]]
                try:
                    if isinstance(w, QComboBox):
                        i = w.findData(v)
                        if i >= 0:
                            w.setCurrentIndex(i)
                    elif isinstance(w, QCheckBox):
                        w.setChecked(bool(v))
                    elif isinstance(w, QSpinBox):
                        w.setValue(int(v))
                    elif isinstance(w, QDoubleSpinBox):
                        w.setValue(float(v))
                    else:
                        w.setText("" if v is None else ", ".join(map(str, v)) if isinstance(v, (list, tuple))
                                  else str(v))
                except (TypeError, ValueError):
                    continue
                if edited:
                    self._edited.add(f["name"])
                else:
                    self._edited.discard(f["name"])
        finally:
            self._setting = False
            self.blockSignals(False)
        self.changed.emit()

    def reset(self) -> None:
        """Back to the declared defaults (a ``None`` default leaves its widget as it is)."""
        self.set_values({f["name"]: f["default"] for f in self._fields if f["default"] is not None})

    def names(self) -> list[str]:
        """The settings the form shows, in the declaration's order."""
        return [f["name"] for f in self._fields]

    def widget(self, name: str) -> QWidget:
        return self._widgets[name]
