"""A settings form generated from a task's frozen config dataclass.

Field types, ranges, choices and help text come from :func:`sslstudio.tasks.config_fields`:
``bool`` -> check box, ``int`` -> spin box, ``float`` -> double spin box, a field with
``choices`` -> combo box, a tuple -> a line edit of comma-separated numbers, anything else ->
a line edit. Every widget's tooltip is the field's help text.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit,
                               QSpinBox, QWidget)

from sslstudio.tasks import config_fields

__all__ = ["ConfigForm"]


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _decimals(value: float, lo: float | None, hi: float | None) -> int:
    vals = [abs(v) for v in (value, lo, hi) if v not in (None, 0)]
    smallest = min(vals) if vals else 1.0
    return max(3, min(8, int(-math.floor(math.log10(smallest))) + 3)) if smallest < 1 else 3


class ConfigForm(QWidget):
    """Widgets for every field of ``config_cls``; :meth:`values` returns the changed options."""

    changed = Signal()

    def __init__(self, config_cls: type | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = QFormLayout(self)
        self._layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self._fields: list[dict] = []
        self._widgets: dict[str, QWidget] = {}
        if config_cls is not None:
            self.set_config_cls(config_cls)

    def set_config_cls(self, config_cls: type) -> None:
        while self._layout.rowCount():
            self._layout.removeRow(0)
        self._widgets.clear()
        try:
            self._fields = config_fields(config_cls)
        except TypeError:  # not a dataclass: nothing to set
            self._fields = []
        for f in self._fields:
            widget = self._make_widget(f)
            help_text = f.get("help") or ""
            widget.setToolTip(help_text)
            widget.setObjectName(f"option_{f['name']}")
            label = QLabel(_label(f["name"]))
            label.setToolTip(help_text)
            self._layout.addRow(label, widget)
            self._widgets[f["name"]] = widget
        if not self._fields:
            note = QLabel("This task has no settings.")
            note.setEnabled(False)
            self._layout.addRow(note)

    def _make_widget(self, f: dict) -> QWidget:
        default, lo, hi, choices = f["default"], f.get("min"), f.get("max"), f.get("choices")
        if choices:
            w = QComboBox()
            for c in choices:
                w.addItem(str(c), c)
            w.setCurrentIndex(max(0, list(choices).index(default)) if default in choices else 0)
            w.currentIndexChanged.connect(self.changed)
        elif isinstance(default, bool):
            w = QCheckBox()
            w.setChecked(default)
            w.toggled.connect(self.changed)
        elif isinstance(default, int):
            w = QSpinBox()
            w.setRange(int(lo) if lo is not None else -2**31 + 1, int(hi) if hi is not None else 2**31 - 1)
            w.setValue(default)
            w.setKeyboardTracking(False)
            w.valueChanged.connect(self.changed)
        elif isinstance(default, float):
            w = QDoubleSpinBox()
            w.setDecimals(_decimals(default, lo, hi))
            w.setRange(float(lo) if lo is not None else -1e9, float(hi) if hi is not None else 1e9)
            w.setSingleStep(10 ** -(w.decimals() - 1) if default < 1 else 0.1)
            w.setValue(default)
            w.setKeyboardTracking(False)
            w.valueChanged.connect(self.changed)
        else:
            w = QLineEdit(", ".join(map(str, default)) if isinstance(default, tuple) else str(default))
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
        return text

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

    def set_values(self, values: dict) -> None:
        self.blockSignals(True)
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
                        w.setText(", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
                except (TypeError, ValueError):
                    continue
        finally:
            self.blockSignals(False)
        self.changed.emit()

    def reset(self) -> None:
        """Back to the paper defaults."""
        self.set_values({f["name"]: f["default"] for f in self._fields})

    def widget(self, name: str) -> QWidget:
        return self._widgets[name]
