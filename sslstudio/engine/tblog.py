"""TensorBoard event files beside ``metrics.jsonl``: the same scalars, for ``tensorboard --logdir`` over runs.

A run writes its scalars to ``<run>/tensorboard/`` with ``torch.utils.tensorboard.SummaryWriter`` at
the moment it appends the same records to ``metrics.jsonl``, so the two records agree. Epoch scalars
are logged at the epoch counted from 1 (``pretext/``, ``opt/``, ``speed/``, ``monitor/``, ``task/``,
``finetune/``), step scalars at the global step (``step/``): runs line up epoch by epoch side by side.

The ``tensorboard`` package is optional (``pip install "sslstudio[tensorboard]"``): without it the
log does nothing and says so once per process. Writing never stops a run: an error while writing
turns the log off with one warning line (``metrics.jsonl`` keeps every record).

When a run starts, the folder is made to agree with ``metrics.jsonl``: a fresh run removes stale event
files; a resumed run rewrites its kept records (``metrics.jsonl`` is cut back to the resumed epoch)
into new event files. This rather than ``purge_step``: one purge step applies to every tag, and the
epoch and step scalars count on different axes; TensorBoard's fast loader does not purge either.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from sslstudio.engine.events import EventSink, LogEvent

#: The folder of a run that holds its event files.
FOLDER = "tensorboard"
MISSING = ('TensorBoard is not installed: metrics.jsonl is the only record '
           '(pip install "sslstudio[tensorboard]")')
_EVENT_FILES = "events.out.tfevents.*"
_said_missing = False  # the MISSING line is said once per process
_lock = threading.Lock()

#: An epoch record's fields that are not scalars of their own (or are logged under a fixed tag).
_NOT_TASK_INFO = {"type", "epoch", "train_loss", "val_loss", "lr", "images_per_s", "samples_per_s", "epoch_time_s",
                  "monitor_knn", "monitor_knn_random", "monitor_s", "monitor_chance"}

Scalars = Callable[[dict], Iterable[tuple[str, float, int]]]


def summary_writer() -> tuple[Any, str | None]:
    """``(SummaryWriter, None)``, or ``(None, why)`` when TensorBoard cannot be used here."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None, MISSING
    except Exception as exc:  # a broken install (a protobuf that does not match, say)
        return None, f"TensorBoard could not be loaded ({exc}): metrics.jsonl is the only record"
    return SummaryWriter, None


def _say_missing(emit: EventSink, why: str) -> None:
    global _said_missing
    with _lock:
        if _said_missing:
            return
        _said_missing = True
    emit(LogEvent(why))


class ScalarLog:
    """The scalars of one run as TensorBoard event files in ``folder`` (``None``: log nothing).

    ``scalars`` turns a ``metrics.jsonl`` record into ``(tag, value, step)`` triples. Call
    :meth:`start` once (with the records ``metrics.jsonl`` keeps when resuming), :meth:`add` where
    records are appended to ``metrics.jsonl``, and :meth:`close` when the run ends, however it ends.
    """

    def __init__(self, folder: str | Path | None, emit: EventSink, scalars: Scalars):
        self.folder = Path(folder) if folder is not None else None
        self.emit, self.scalars = emit, scalars
        self._writer_cls: Any = None
        self._writer: Any = None
        self.active = False

    def start(self, kept: Iterable[dict] = ()) -> "ScalarLog":
        """Make the folder agree with ``metrics.jsonl``: remove stale event files, write ``kept`` again."""
        if self.folder is None:
            return self
        kept = list(kept)
        self._writer_cls, why = summary_writer()
        if self._writer_cls is None:
            if not kept:  # a fresh run: event files of an earlier attempt would not match metrics.jsonl
                self._guard(self._clear)
            _say_missing(self.emit, why)
            return self
        self.active = True
        self._guard(self._clear)
        self.add(kept)
        return self

    def add(self, records: Iterable[dict]) -> None:
        """Log the scalars of ``records`` (and flush, so that a running TensorBoard sees them)."""
        if self.active:
            self._guard(self._write, list(records))

    def close(self) -> None:
        """Flush and close the event file (a no-op when nothing was written). Safe to call twice."""
        writer, self._writer, self.active = self._writer, None, False
        if writer is not None:
            try:
                writer.close()
            except Exception as exc:  # the run is over: say it, never raise
                self._warn(exc)

    # ------------------------------------------------------------------------------------------
    def _write(self, records: list[dict]) -> None:
        triples = [t for r in records for t in self.scalars(r)]
        if not triples:
            return
        if self._writer is None:
            self._writer = self._writer_cls(str(self.folder))
        for tag, value, step in triples:
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def _clear(self) -> None:
        if self.folder.is_dir():
            for path in self.folder.glob(_EVENT_FILES):
                path.unlink()
            if not any(self.folder.iterdir()):
                self.folder.rmdir()  # the writer makes it again when there is something to write

    def _guard(self, fn: Callable, *args) -> None:
        """Run ``fn``; an error turns the log off with one warning line instead of stopping the run."""
        try:
            fn(*args)
        except Exception as exc:
            self.active = False
            writer, self._writer = self._writer, None
            if writer is not None:
                try:
                    writer.close()
                except Exception:
                    pass
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            from sslstudio.fileutil import os_reason

            reason = os_reason(exc) + (f" ({exc.filename})" if exc.filename else "")
        else:
            reason = str(exc) or type(exc).__name__
        self.emit(LogEvent(f"TensorBoard logging to {self.folder} stopped: {reason}; metrics.jsonl still has every "
                           "record", "warning"))


# ----------------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _triples(step: int, pairs: Iterable[tuple[str, Any]]) -> list[tuple[str, float, int]]:
    return [(tag, v, step) for tag, value in pairs if (v := _number(value)) is not None]


def pretext_scalars(metric: str, chance: float | None = None) -> Scalars:
    """A pretraining run's records as scalars: ``step/`` at the global step, the rest at the epoch from 1."""
    def scalars(record: dict) -> list[tuple[str, float, int]]:
        if record.get("type") == "step":
            return _triples(int(record["global_step"]), [("step/loss", record.get("loss")),
                                                          ("step/lr", record.get("lr"))])
        if record.get("type") != "epoch":
            return []
        pairs = [("pretext/train_loss", record.get("train_loss")), ("pretext/val_loss", record.get("val_loss")),
                 (f"pretext/train_{metric}", record.get(f"train_{metric}")),
                 (f"pretext/val_{metric}", record.get(f"val_{metric}")), ("pretext/chance", chance),
                 ("opt/lr", record.get("lr")), ("speed/samples_per_s", record.get("samples_per_s")),
                 ("speed/images_per_s", record.get("images_per_s"))]
        for key, prefix in (("monitor_knn", "monitor/knn_"), ("monitor_knn_random", "monitor/knn_random_")):
            pairs += [(prefix + stage, acc) for stage, acc in (record.get(key) or {}).items()]
        if "monitor_knn" in record:
            pairs.append(("monitor/chance", record.get("monitor_chance")))
        skip = _NOT_TASK_INFO | {f"train_{metric}", f"val_{metric}"}
        pairs += [(f"task/{key}", value) for key, value in record.items() if key not in skip]  # the task's own
        return _triples(int(record["epoch"]) + 1, pairs)
    return scalars


def finetune_scalars(lr: float | None = None) -> Scalars:
    """A fine-tuning job's epoch records as scalars at the epoch (evaluation point) counted from 1."""
    def scalars(record: dict) -> list[tuple[str, float, int]]:
        if record.get("type") != "epoch":
            return []
        return _triples(int(record["epoch"]) + 1, [("finetune/train_loss", record.get("train_loss")),
                                                    ("finetune/train_accuracy", record.get("train_accuracy")),
                                                    ("finetune/test_accuracy", record.get("test_accuracy")),
                                                    ("opt/lr", lr)])
    return scalars


def pretrain_log(run_path: str | Path | None, emit: EventSink, metric: str, chance: float | None = None,
                 kept: Iterable[dict] = ()) -> ScalarLog:
    """The started log of a pretraining run in ``run_path`` (``None``: log nothing, e.g. on other processes)."""
    folder = Path(run_path) / FOLDER if run_path is not None else None
    return ScalarLog(folder, emit, pretext_scalars(metric, chance)).start(kept)


def finetune_log(run_path: str | Path | None, emit: EventSink, lr: float | None = None) -> ScalarLog:
    """The started log of a fine-tuning job in ``run_path`` (``None``: the job has no output folder)."""
    folder = Path(run_path) / FOLDER if run_path is not None else None
    return ScalarLog(folder, emit, finetune_scalars(lr)).start()

