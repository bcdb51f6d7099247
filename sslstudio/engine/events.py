"""Events the engine emits, and the token it checks to pause or cancel.

Nothing here imports Qt: the CLI turns events into a progress bar, the window's worker turns
them into signals. Events are plain dataclasses (``dataclasses.asdict`` gives their JSON form).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class StepEvent:
    """A training step finished."""

    epoch: int  # 0-based epoch index
    epochs: int
    step: int  # 1-based step within the epoch
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float
    metric: float | None
    metric_name: str
    lr: float
    images_per_s: float  # source images per second (rotation: 4 network inputs each)
    samples_per_s: float  # network inputs per second
    elapsed_s: float
    eta_s: float
    kind: str = "step"


@dataclass
class EpochEvent:
    """An epoch finished; ``val_*`` are on the held-out images (None if there are none)."""

    epoch: int
    epochs: int
    train_loss: float
    train_metric: float | None
    val_loss: float | None
    val_metric: float | None
    metric_name: str
    lr: float
    images_per_s: float
    samples_per_s: float
    elapsed_s: float
    eta_s: float
    extra: dict = field(default_factory=dict)
    chance: float | None = None  # the pretext metric's chance level (None: not a classification task)
    kind: str = "epoch"


@dataclass
class CheckpointEvent:
    epoch: int
    path: str
    best: bool = False
    kind: str = "checkpoint"


@dataclass
class LogEvent:
    message: str
    level: str = "info"  # info | warning
    kind: str = "log"


@dataclass
class RowEvent:
    """A row of a comparison finished (``row`` as written to ``results.json``)."""

    row: dict
    index: int  # 1-based
    total: int
    kind: str = "row"


@dataclass
class ProgressEvent:
    """Progress of a long job that is not a training loop (a comparison, say): ``done`` of ``total``
    units, what is being done now, and the estimated seconds left (``None`` until it can be told)."""

    done: int
    total: int
    message: str = ""
    elapsed_s: float = 0.0
    eta_s: float | None = None
    kind: str = "progress"


@dataclass
class FinishedEvent:
    summary: dict
    cancelled: bool = False
    kind: str = "finished"


@dataclass
class FailedEvent:
    message: str  # one sentence for the user
    error_type: str
    details: str = ""  # the traceback, for a log pane
    kind: str = "failed"


#: Where a loop sends its events (one of the dataclasses above).
EventSink = Callable[[Any], None]


class Cancelled(Exception):
    """Raised inside a loop when its :class:`RunControl` was cancelled."""


class RunControl:
    """Cooperative pause / cancel token, checked by the loops between steps. Thread-safe."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # wake a paused loop so it can stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def checkpoint(self) -> None:
        """Block while paused; raise :class:`Cancelled` if cancelled."""
        while not self._running.wait(0.1):
            pass
        if self._cancel.is_set():
            raise Cancelled()
