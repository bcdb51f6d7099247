"""Running engine calls off the GUI thread.

A :class:`Job` wraps one blocking engine call (``pretrain``, ``compare``, a folder scan, a
preview render...) in a worker object moved to its own :class:`QThread`. The engine's events
come back as Qt signals, queued to the GUI thread, so only the GUI thread touches widgets.
A :class:`~sslstudio.engine.events.RunControl` gives pause / resume / cancel; :meth:`Job.stop`
cancels and waits for the thread, so no thread outlives its window.

Pages never wire a :class:`Job` by hand: each owns a :class:`JobRunner`, which starts jobs by slot
("scan", "preview", "thumbnails", ...), delivers their callbacks on the GUI thread under one
stale-result rule, and cancels and waits for all of them when the page shuts down.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from sslstudio.engine.events import Cancelled, RunControl
from sslstudio import errors
from sslstudio.errors import SSLStudioError

__all__ = ["Job", "JobRunner", "Worker"]


class Worker(QObject):
    """Runs ``fn(*args, on_event=..., control=..., progress=...)`` once, in whatever thread it lives in.

    Signals:
        event: each engine event (a dataclass with ``.kind``).
        progress: ``(done, total)`` for tasks that report counts (``total`` 0 when unknown); the
            progress callback also checks the control, so a cancelled call stops at its next report.
        finished: the call's return value.
        cancelled: the call stopped because its control was cancelled (raised ``Cancelled``).
        failed: ``(message, details)``: a sentence for the user and the traceback (empty for the
            program's own errors, whose sentence says everything).
        done: emitted last, whether the call finished, failed or was cancelled.
    """

    event = Signal(object)
    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable[..., Any], *args: Any, control: RunControl | None = None,
                 pass_events: bool = True, pass_control: bool = True, pass_progress: bool = False,
                 **kwargs: Any):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.control = control or RunControl()
        self._pass = (pass_events, pass_control, pass_progress)
        self._failed_sent = False

    def _on_event(self, ev: Any) -> None:
        if getattr(ev, "kind", None) == "failed":
            self._failed_sent = True
            # a sentence the program wrote for the user needs no traceback in the log; anything else keeps it
            expected = isinstance(getattr(errors, ev.error_type, None), type)
            self.failed.emit(ev.message, "" if expected else ev.details)
            return
        self.event.emit(ev)

    @Slot()
    def run(self) -> None:
        kwargs = dict(self.kwargs)
        pass_events, pass_control, pass_progress = self._pass
        if pass_events:
            kwargs["on_event"] = self._on_event
        if pass_control:
            kwargs["control"] = self.control
        if pass_progress:
            def progress(done, total=0):
                self.control.checkpoint()  # a cancelled scan stops at its next progress report
                self.progress.emit(int(done), int(total))

            kwargs["progress"] = progress
        try:
            self.control.checkpoint()  # cancelled before it started
            result = self.fn(*self.args, **kwargs)
        except Cancelled:
            self.cancelled.emit()
        except SSLStudioError as exc:  # a sentence for the user: no traceback needed
            if not self._failed_sent:
                self.failed.emit(str(exc), "")
        except Exception as exc:  # noqa: BLE001 - any error must reach the user, not kill the thread
            if not self._failed_sent:
                self.failed.emit(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        else:
            self.finished.emit(result)
        finally:
            self.done.emit()


class Job(QObject):
    """A :class:`Worker` in its own thread. Create, connect the worker's signals, then :meth:`start`.

    Example::

        job = Job(pretrain, config, parent=window)
        job.worker.event.connect(window.on_event)
        job.worker.failed.connect(window.on_failed)
        job.start()
        ...
        job.stop()  # cancel and wait
    """

    ended = Signal()

    def __init__(self, fn: Callable[..., Any], *args: Any, parent: QObject | None = None,
                 name: str = "sslstudio-job", **kwargs: Any):
        super().__init__(parent)
        self.worker = Worker(fn, *args, **kwargs)
        self.thread = QThread()
        self.thread.setObjectName(name)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        # direct: quit must reach the thread even while the GUI thread blocks in wait()
        self.worker.done.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        self.thread.finished.connect(self._on_thread_finished)
        self._running = False
        self.slot: str | None = None  # set by the JobRunner that started it

    @property
    def control(self) -> RunControl:
        return self.worker.control

    def start(self) -> "Job":
        self._running = True
        self.thread.start()
        return self

    def is_running(self) -> bool:
        return self._running and self.thread.isRunning()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def cancel(self) -> None:
        self.control.cancel()

    def wait(self, timeout_ms: int = -1) -> bool:
        """Wait for the thread to end (``-1``: forever). True if it has ended."""
        if not self.thread.isRunning():
            return True
        return self.thread.wait() if timeout_ms < 0 else self.thread.wait(timeout_ms)

    def stop(self, timeout_ms: int = -1) -> bool:
        """Cancel the call and wait for its thread."""
        self.cancel()
        return self.wait(timeout_ms)

    @Slot()
    def _on_thread_finished(self) -> None:
        self._running = False
        self.ended.emit()



class _Delivery(QObject):
    """Receives one job's signals in the GUI thread (queued there) and hands them to its runner."""

    def __init__(self, runner: "JobRunner", job: Job):
        super().__init__(job)
        self._runner, self._job = runner, job
        worker = job.worker
        worker.event.connect(self.on_event)
        worker.progress.connect(self.on_progress)
        worker.finished.connect(self.on_result)
        worker.failed.connect(self.on_error)
        worker.cancelled.connect(self.on_cancelled)
        job.ended.connect(self.on_ended)

    @Slot(object)
    def on_event(self, ev: Any) -> None:
        self._runner._deliver(self._job, "event", ev)

    @Slot(int, int)
    def on_progress(self, done: int, total: int) -> None:
        self._runner._deliver(self._job, "progress", done, total)

    @Slot(object)
    def on_result(self, value: Any) -> None:
        self._runner._deliver(self._job, "result", value)

    @Slot(str, str)
    def on_error(self, message: str, details: str) -> None:
        self._runner._deliver(self._job, "error", message, details)

    @Slot()
    def on_cancelled(self) -> None:
        self._runner._deliver(self._job, "cancelled")

    @Slot()
    def on_ended(self) -> None:
        self._runner._ended(self._job)


class JobRunner(QObject):
    """The one way a page runs background work: a :class:`Job` per call, one current job per slot.

    :meth:`start` runs ``fn(*args, **kwargs)`` in its own thread under a slot name ("scan",
    "preview", "pretrain", ...). By default it first cancels the slot's running job (the newest
    request wins); ``replace=False`` refuses instead while one runs (a training run, an export).

    **The stale-result rule** (enforced in :meth:`_deliver` and nowhere else): a job's events,
    progress, result, error, cancellation and end reach their callbacks, on the GUI thread, only
    while it is the current job of its slot. A job stops being current when a newer one starts in
    its slot, when :meth:`cancel` retires it, or when :meth:`stop_all` shuts the page down; from then
    on it delivers nothing. Asking the job itself to stop (``job.cancel()``, the token a Stop button
    uses) keeps it current, so its own last word (a cancelled run's summary, ``on_cancelled``) still
    arrives. Errors arrive as ``on_error(message, details)``: the engine's sentence, and a traceback
    only for the unexpected.

    Callbacks are plain callables (lambdas too): the runner calls them in the GUI thread.
    ``on_event`` and ``on_progress`` also decide whether ``fn`` gets ``on_event=`` / ``progress=``;
    ``pass_control`` gives it ``control=`` (the job's :class:`RunControl`: pause, resume, cancel).
    ``track`` (e.g. the window's) is told of each job started. :meth:`stop_all` cancels every job,
    superseded ones included, and waits for their threads: none outlives the page.
    """

    def __init__(self, parent: QObject | None = None, track: Callable[[Job], None] | None = None):
        super().__init__(parent)
        self._current: dict[str, Job] = {}
        self._live: set[Job] = set()  # started and not yet ended, current or not
        self._callbacks: dict[Job, dict[str, Callable]] = {}
        self._track = track

    def start(self, slot: str, fn: Callable[..., Any], *args: Any, kwargs: dict | None = None,
              on_result: Callable | None = None, on_error: Callable | None = None,
              on_event: Callable | None = None, on_progress: Callable | None = None,
              on_cancelled: Callable | None = None, on_ended: Callable | None = None,
              pass_control: bool = False, replace: bool = True) -> Job | None:
        """Start ``fn`` in slot ``slot``; returns its :class:`Job`, or None if ``replace=False`` and
        the slot's job still runs."""
        if self.is_running(slot) and not replace:
            return None
        self.cancel(slot)
        job = Job(fn, *args, parent=self, name=f"sslstudio-{slot}", pass_events=on_event is not None,
                  pass_control=pass_control, pass_progress=on_progress is not None, **(kwargs or {}))
        job.slot = slot
        _Delivery(self, job)
        self._callbacks[job] = {"event": on_event, "progress": on_progress, "result": on_result,
                                "error": on_error, "cancelled": on_cancelled, "ended": on_ended}
        self._current[slot] = job
        self._live.add(job)
        if self._track is not None:
            self._track(job)
        return job.start()

    def get(self, slot: str) -> Job | None:
        """The slot's current job (running or ended), or None."""
        return self._current.get(slot)

    def is_running(self, slot: str) -> bool:
        job = self._current.get(slot)
        return job is not None and job.is_running()

    def running(self) -> list[Job]:
        """Every job whose thread still runs, superseded ones included."""
        return [job for job in self._live if job.is_running()]

    def cancel(self, slot: str) -> None:
        """Retire the slot's job: ask it to stop and deliver nothing more of it (no waiting)."""
        job = self._current.pop(slot, None)
        if job is not None:
            job.cancel()
            if not job.is_running():
                self._free(job)

    def stop_all(self, timeout_ms: int = -1) -> bool:
        """Retire every job, cancel it and wait for its thread (page or window closing). True if
        every thread has ended."""
        self._current.clear()
        jobs = list(self._live)
        for job in jobs:
            job.cancel()
        ended = all([job.wait(timeout_ms) for job in jobs])
        for job in jobs:
            if not job.is_running():
                self._free(job)
        return ended

    def _deliver(self, job: Job, kind: str, *args: Any) -> None:
        """The stale-result rule: only the current job of its slot reaches its callbacks."""
        if self._current.get(job.slot) is not job:
            return
        callback = self._callbacks[job][kind]
        if callback is not None:
            callback(*args)

    def _ended(self, job: Job) -> None:
        self._deliver(job, "ended")
        if self._current.get(job.slot) is not job:
            self._free(job)
        else:
            self._live.discard(job)

    def _free(self, job: Job) -> None:
        """Let go of a retired job whose thread has ended."""
        self._callbacks.pop(job, None)
        self._live.discard(job)
        job.deleteLater()


def share_one_malloc_arena() -> bool:
    """Let worker threads allocate from the main thread's malloc arena (glibc only).

    glibc gives each new thread its own arena, whose heaps are capped at 64 MB; the large,
    short-lived tensors of a training step then come from fresh memory maps (page faults every
    step) more often than in the main thread. Training in the window's worker thread measured
    about 6% slower than the same run in a command's main thread on 2 CPU cores; with one arena
    the gap was 3-4% (``benchmarks/window_vs_cli.py``). Returns whether the setting took.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, 1))  # M_ARENA_MAX = -8
    except (OSError, AttributeError):
        return False


def wait_for_signal(signal, timeout_s: float = 120.0) -> list:
    """Run a local event loop until ``signal`` fires (or ``timeout_s`` passes); returns its arguments.

    For scripts that drive the window (screenshots, benchmarks), not for code inside the window.
    """
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    got: list = []

    def done(*args):
        got.extend(args)
        loop.quit()

    signal.connect(done)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(done)
    return got


class MainThreadGarbageCollector(QObject):
    """Collect Python garbage only in the GUI thread, on a timer, while the window lives.

    Automatic collection can run in whichever thread allocates, and a worker thread that happens
    to collect an unreachable Qt widget destroys it off the GUI thread, which can deadlock or crash
    Qt. So automatic collection is switched off while this is active and done here instead, every
    ``interval_ms`` (the idea of pyqtgraph's ``GarbageCollector``); :meth:`stop` collects once more
    and restores the previous setting.

    The objects alive when it starts (torch, Qt and the window: several hundred thousand) are
    moved to the permanent generation with :func:`gc.freeze`, so that a full collection later walks
    only what the session created and does not stall the window for a fifth of a second.
    """

    def __init__(self, parent: QObject | None = None, interval_ms: int = 1000):
        super().__init__(parent)
        import gc

        from PySide6.QtCore import QTimer

        self._gc = gc
        self._was_enabled = gc.isenabled()
        gc.disable()
        gc.collect()
        gc.freeze()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect)
        self._timer.start()
        self.active = True

    def collect(self) -> None:
        """Collect the generations whose thresholds are reached, as automatic collection would."""
        threshold = self._gc.get_threshold()
        count = self._gc.get_count()
        for generation in (2, 1, 0):
            if count[generation] > threshold[generation]:
                self._gc.collect(generation)
                break

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        self._timer.stop()
        self._gc.unfreeze()
        self._gc.collect()
        if self._was_enabled:
            self._gc.enable()
