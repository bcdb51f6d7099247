"""The parts the comparison (step 4) and exploration (step 6) pages share: the page split into a settings
column and its results, the settings column itself (page title, a group box of the settings form, Run and
Stop buttons, a progress bar and a status line, in a :class:`SettingsScroll`), the checkable list of
initialisations (finished runs of the workspace, ImageNet, random) and the hold under which several
settings change at once while the results on screen are judged once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import NamedTuple

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QFormLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget)

from sslstudio.gui.config_form import SettingsScroll

__all__ = ["HoldsSelection", "RunControls", "add_init_item", "check_only", "checked_states", "init_list",
           "run_arch", "run_choices", "run_controls", "settings_column", "settings_form", "split_page"]


# -- the page's layout -----------------------------------------------------------------------------
def split_page(page: QWidget, settings: QWidget, results: QWidget, results_width: int) -> QSplitter:
    """Fill ``page`` with its settings column (at the width it needs; it keeps it when the window grows)
    beside its results (``results_width`` pixels at first, then all the room left)."""
    split = QSplitter(Qt.Orientation.Horizontal)
    split.addWidget(settings)
    split.addWidget(results)
    split.setStretchFactor(0, 0)
    split.setStretchFactor(1, 1)
    split.setSizes([settings.minimumSizeHint().width(), results_width])
    split.setChildrenCollapsible(False)
    layout = QVBoxLayout(page)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(split)
    return split


class RunControls(NamedTuple):
    """What starts, stops and follows a page's job, under its settings form."""

    run_button: QPushButton
    stop_button: QPushButton
    progress: QProgressBar
    status: QLabel


def run_controls(run_text: str, stop_text: str, status_text: str, on_run: Callable[[], object],
                 on_stop: Callable[[], object]) -> RunControls:
    """The Run button (the page's primary one; ``on_run()`` when clicked), the Stop button (disabled until a
    job runs; ``on_stop()``), an empty progress bar and a selectable, wrapping status line."""
    run_button = QPushButton(run_text)
    run_button.setObjectName("primary")
    run_button.clicked.connect(lambda: on_run())
    stop_button = QPushButton(stop_text)
    stop_button.setEnabled(False)
    stop_button.clicked.connect(lambda: on_stop())
    progress = QProgressBar()
    progress.setRange(0, 1)
    progress.setValue(0)
    status = QLabel(status_text)
    status.setWordWrap(True)
    status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return RunControls(run_button, stop_button, progress, status)


def settings_form() -> QFormLayout:
    """A settings form whose long rows wrap under their label (the column stays narrow)."""
    form = QFormLayout()
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


def settings_column(title: str, box_title: str, form: QFormLayout, controls: RunControls) -> SettingsScroll:
    """The page's left column: its ``title`` over a group box ``box_title`` holding ``form``, the Run / Stop
    row, the progress bar and the status line; in a :class:`SettingsScroll` (as wide as the settings need:
    it never clips and never scrolls sideways)."""
    buttons = QHBoxLayout()
    buttons.addWidget(controls.run_button)
    buttons.addWidget(controls.stop_button)
    buttons.addStretch(1)
    box = QGroupBox(box_title)
    bl = QVBoxLayout(box)
    bl.addLayout(form)
    bl.addLayout(buttons)
    bl.addWidget(controls.progress)
    bl.addWidget(controls.status)
    left = QWidget()
    ll = QVBoxLayout(left)
    ll.setContentsMargins(0, 0, 4, 0)
    heading = QLabel(title)
    heading.setObjectName("pageTitle")
    ll.addWidget(heading)
    ll.addWidget(box)
    ll.addStretch(1)
    return SettingsScroll(left)


# -- the list of initialisations -------------------------------------------------------------------------
def init_list(tip: str, max_height: int, on_changed: Callable[..., object]) -> QListWidget:
    """A short list of checkable initialisations (long names end in "…"); ``on_changed(item)`` when a row's
    check or text changes."""
    inits = QListWidget()
    inits.setToolTip(tip)
    inits.setMinimumHeight(56)
    inits.setMaximumHeight(max_height)
    inits.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    inits.setTextElideMode(Qt.TextElideMode.ElideRight)
    inits.itemChanged.connect(on_changed)
    return inits


def add_init_item(inits: QListWidget, label: str, key: str, tip: str, checked: bool,
                  row: int | None = None) -> QListWidgetItem:
    """Add a checkable row ``label`` that stands for ``key`` (its user data) at ``row`` (default: the end),
    without a change signal."""
    item = QListWidgetItem(label)
    item.setData(Qt.ItemDataRole.UserRole, key)
    item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
    item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
    item.setToolTip(tip)
    blocked = inits.blockSignals(True)
    if row is None:
        inits.addItem(item)
    else:
        inits.insertItem(row, item)
    inits.blockSignals(blocked)
    return item


def checked_states(inits: QListWidget) -> dict:
    """Each row's key -> its check state."""
    return {inits.item(i).data(Qt.ItemDataRole.UserRole): inits.item(i).checkState() for i in range(inits.count())}


def check_only(inits: QListWidget, keys: Iterable) -> None:
    """Check the rows whose key is one of ``keys`` and uncheck the others, without change signals."""
    keys = [str(k) for k in keys]
    blocked = inits.blockSignals(True)
    for i in range(inits.count()):
        item = inits.item(i)
        on = item.data(Qt.ItemDataRole.UserRole) in keys
        item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
    inits.blockSignals(blocked)


def run_choices(runs: list[dict], previous: dict) -> list[tuple[str, str, str, bool]]:
    """The finished runs of ``runs`` (the workspace's, newest first; a diverged run has a checkpoint too) as
    rows ``(label, key, tooltip, checked)``: a run offered before keeps its check in ``previous`` (see
    :func:`checked_states`); otherwise the newest is checked when no run was."""
    finished = [r for r in runs if r["has_checkpoint"] and (r["status"].startswith("finished")
                                                             or r["status"] == "diverged")]
    was_checked = any(previous.get(r["path"]) == Qt.CheckState.Checked for r in finished)
    rows = []
    for k, r in enumerate(finished):
        if r["path"] in previous:
            checked = previous[r["path"]] == Qt.CheckState.Checked
        else:
            checked = k == 0 and not was_checked
        rows.append((f"{r['name']}  ({r['task']}, {r['arch']})", r["path"], r["path"], checked))
    return rows


def run_arch(runs: list[dict], keys: Iterable[str]) -> str | None:
    """The architecture of the first of ``keys`` that is a run of ``runs`` with a known one; None if none."""
    by_path = {r["path"]: r for r in runs}
    for key in keys:
        if key in by_path and by_path[key].get("arch") not in (None, "?"):
            return by_path[key]["arch"]
    return None


# -- settings that change together ----------------------------------------------------------------------
class HoldsSelection:
    """For a page whose results must belong to the settings on screen: its ``_check_selection()`` judges
    them, and does nothing while ``self._hold`` is above 0."""

    _hold = 0

    def _check_selection(self, *_args) -> None:
        raise NotImplementedError

    @contextmanager
    def _holding(self):
        """Change several settings at once: the results are judged once, at the end."""
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
            if not self._hold:
                self._check_selection()
