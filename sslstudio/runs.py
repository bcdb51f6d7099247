"""The run directory: ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``summary.json``.

Every write that replaces a file is atomic (a temporary file in the same folder, flushed and
fsynced, then :func:`os.replace`), so a crash mid-save never corrupts what was there; temporary
files left by a killed process are removed when the folder is next held by a job.
Checkpoints are written best first, then last, so that at every instant the folder holds a
complete ``best.pt`` whenever it holds a ``last.pt``.
A folder is held by one job at a time (:meth:`RunDir.hold`, a lock file through :mod:`filelock`;
the operating system releases it when the process dies, so a dead job's lock is taken over).
Checkpoints are read with ``torch.load(..., weights_only=True)``: nothing in them is unpickled
as an arbitrary object. A damaged file is reported in one sentence naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from sslstudio.errors import RunBusyError, RunError
from sslstudio.fileutil import os_reason
from sslstudio.fileutil import mkstemp

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
#: The lock file of a folder held by a job, and the note beside it naming the holder.
LOCK = ".sslstudio.lock"
HOLDER = ".sslstudio.holder.json"


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp(path.parent, prefix=f".{path.name}.", suffix=".tmp")  # umask applies, not 0o600
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    payload = json.dumps(data, indent=2, default=_json_default).encode()
    _atomic_write(path, lambda fh: fh.write(payload))


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, then rename)."""
    _atomic_write(Path(path), lambda fh: fh.write(payload))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_json_file(path: Path, what: str, fix: str) -> Any:
    """Read a JSON file the program wrote; a damaged or unreadable one is a :class:`RunError` sentence.

    Args:
        path: The file.
        what: How to name it (``"the run's settings"``).
        fix: What the user can do about a damaged file (ends the sentence).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except PermissionError as exc:
        raise RunError(f"{path} ({what}) cannot be read: permission denied; {fix}") from exc
    except UnicodeDecodeError as exc:
        raise RunError(f"{path} ({what}) is damaged: it is not text; {fix}") from exc
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} ({what}) is damaged: it is not valid JSON (line {exc.lineno}); {fix}") from exc
    except IsADirectoryError as exc:
        raise RunError(f"{path} ({what}) is a folder, not a file; {fix}") from exc
    except OSError as exc:
        raise RunError(f"{path} ({what}) cannot be read ({exc.strerror or exc}); {fix}") from exc


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class FolderLock:
    """One job's hold on a folder: a :class:`filelock.FileLock` and a note naming the holder.

    The lock is an operating-system file lock, released when the process ends however it ends,
    so a lock left by a dead process is simply taken over. The note (``HOLDER``) says which
    process holds the folder, for the sentence a second job prints.
    """

    def __init__(self, folder: os.PathLike | str, job: str):
        from filelock import FileLock

        self.folder = Path(folder)
        self.job = job
        self._lock = FileLock(str(self.folder / LOCK), timeout=0)

    def acquire(self) -> "FolderLock":
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunBusyError(self._busy_sentence()) from None
        except OSError as exc:
            raise RunError(f"cannot take the lock of {self.folder} ({exc.strerror or exc}); "
                           "check that the folder is writable.") from exc
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "job": self.job,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv[:3])}
        try:
            atomic_write_json(self.folder / HOLDER, holder)
        except OSError:
            pass  # the note is a courtesy; the lock itself is held
        return self

    def release(self) -> None:
        with contextlib.suppress(OSError):
            (self.folder / HOLDER).unlink()
        self._lock.release()

    def _busy_sentence(self) -> str:
        try:
            holder = json.loads((self.folder / HOLDER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            holder = {}
        if isinstance(holder, dict) and holder.get("pid"):
            who = (f"process {holder['pid']} on {holder.get('host', 'this machine')} "
                   f"({holder.get('job', 'a job')}, since {holder.get('since', '?')})")
        else:
            who = "another process"
        return (f"{self.folder} is in use by {who}: a folder is written by one job at a time; "
                "wait for that job to finish or stop it, or choose another output folder.")

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_temporaries(folder: os.PathLike | str) -> list[Path]:
    """Delete temporary files that a killed writer left in ``folder`` and its ``checkpoints/``.

    Call it only while holding the folder (:class:`FolderLock`): then no live writer owns them.
    Returns the files removed.
    """
    removed = []
    for sub in (Path(folder), Path(folder) / CHECKPOINTS):
        if not sub.is_dir():
            continue
        for p in sub.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def library_versions() -> dict[str, str]:
    """Versions recorded with every run."""
    import numpy
    import PIL
    import torchvision

    from sslstudio import __version__

    return {"sslstudio": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__,
            "platform": platform.platform()}


class RunDir:
    """A run directory on disk."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / BEST

    def create(self) -> "RunDir":
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return self

    @contextlib.contextmanager
    def hold(self, job: str):
        """Hold the folder for one job (creating it if needed): a second job is refused with a
        sentence naming the process that holds it. Temporary files a killed writer left behind are
        removed once the folder is held. A folder this call created and the job left empty is
        removed again on the way out, so a job that fails at once leaves nothing behind."""
        created = ensure_folder(self.path, f"the {job} output")
        lock = FolderLock(self.path, job).acquire()
        try:
            remove_stale_temporaries(self.path)
            yield self
        finally:
            lock.release()
            if created:
                _remove_if_empty(self.path)

    # config / summary
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict:
        if not self.config_path.is_file():
            if self.path.is_file():
                raise RunError(f"{self.path} is a file, not a run folder; give the folder of a run.")
            if not self.path.exists():
                raise RunError(f"the run folder {self.path} does not exist; check the path.")
            raise RunError(f"{self.path} is not an sslstudio run directory: {CONFIG} is missing.")
        config = read_json_file(self.config_path, "the run's settings",
                                "the run cannot be resumed or read; start a new run in another folder.")
        if not isinstance(config, dict) or not config.get("task") or not config.get("arch"):
            raise RunError(f"{self.config_path} (the run's settings) is damaged: it does not name the run's "
                           "task and architecture; the run cannot be resumed or read; start a new run in "
                           "another folder.")
        return config

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def read_summary(self) -> dict | None:
        if not self.summary_path.is_file():
            return None
        summary = read_json_file(self.summary_path, "the run's summary",
                                 "its checkpoints are still usable; delete the file to read the run without it.")
        return summary if isinstance(summary, dict) else None

    # metrics
    def append_metrics(self, records: list[dict]) -> None:
        if not records:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, default=_json_default) + "\n")
            fh.flush()

    def read_metrics(self) -> list[dict]:
        return list(self.iter_metrics())

    def iter_metrics(self) -> Iterator[dict]:
        if not self.metrics_path.is_file():
            return
        with open(self.metrics_path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a crash
                        continue

    def truncate_metrics(self, keep_before_epoch: int) -> None:
        """Drop records of epochs >= ``keep_before_epoch`` (used when resuming)."""
        kept = [r for r in self.iter_metrics() if int(r.get("epoch", 0)) < keep_before_epoch]
        payload = "".join(json.dumps(r) + "\n" for r in kept).encode()
        _atomic_write(self.metrics_path, lambda fh: fh.write(payload))

    # checkpoints
    def save_checkpoint(self, state: dict, best: bool = False) -> Path:
        """Write the epoch's checkpoint: ``best.pt`` first (when this epoch is the best so far, or
        when there is none yet), then ``last.pt``, each atomically. A kill between the two leaves
        the previous ``last.pt`` and a ``best.pt`` at least as new: never a ``last.pt`` whose best
        epoch is missing from ``best.pt``."""
        if best or not self.best_checkpoint.is_file():
            atomic_torch_save({"model": state["model"], "epoch": state["epoch"]}, self.best_checkpoint)
        atomic_torch_save(state, self.last_checkpoint)
        return self.last_checkpoint

    def load_checkpoint(self, which: str = "last") -> dict:
        path = self.best_checkpoint if which == "best" else self.last_checkpoint
        if not path.is_file():
            if which == "best" and self.last_checkpoint.is_file():
                raise RunError(f"{path} is missing although {LAST} is there (a run from an older version, "
                               "or the file was deleted); use the last checkpoint instead (--checkpoint last).")
            raise RunError(f"{path} does not exist: the run has not finished an epoch yet, so there is "
                           "no checkpoint to read.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report as a sentence
            raise RunError(f"the checkpoint {path} is damaged and could not be read "
                           f"({type(exc).__name__}); {_checkpoint_fix(which)}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise RunError(f"the checkpoint {path} has no 'model' entry (it is not an sslstudio checkpoint, "
                           f"or it is damaged); {_checkpoint_fix(which)}")
        return state


def _checkpoint_fix(which: str) -> str:
    other = "best" if which == "last" else "last"
    return (f"the {other} checkpoint may still be intact (export --checkpoint {other}); otherwise start the "
            "run again in a new folder.")


def ensure_folder(path: os.PathLike | str, what: str = "the output folder") -> bool:
    """Create ``path`` (and its parents) if missing; returns whether it was created.

    Raises:
        RunError: One sentence when the path is a file or the folder cannot be made.
    """
    path = Path(path)
    if path.is_dir():
        return False
    if path.exists():
        raise RunError(f"{path} is a file, not a folder; choose a new or existing folder for {what}.")
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as exc:
        raise RunError(f"cannot create the folder {path} for {what}: {os_reason(exc)}; choose another folder.") from exc
    return True


def _remove_if_empty(path: Path) -> None:
    """Remove ``path`` if nothing but the lock file is in it."""
    try:
        names = {p.name for p in path.iterdir()}
        if names <= {LOCK, HOLDER, CHECKPOINTS} and not any((path / CHECKPOINTS).glob("*")):
            for name in (LOCK, HOLDER):
                with contextlib.suppress(FileNotFoundError):
                    (path / name).unlink()
            with contextlib.suppress(FileNotFoundError):
                (path / CHECKPOINTS).rmdir()
            path.rmdir()
    except OSError:
        pass


def is_run_dir(path: os.PathLike | str) -> bool:
    return (Path(path) / CONFIG).is_file()


# -- the runs of a workspace -------------------------------------------------------------------
def final_metric(summary: dict, config: dict | None = None) -> tuple[str, float | None]:
    """A run's headline figure: ``(metric, value)``, the held-out value, else the training one."""
    metric = summary.get("metric") or (config or {}).get("metric") or "accuracy"
    value = summary.get(f"final_val_{metric}")
    return metric, summary.get(f"final_train_{metric}") if value is None else value


def list_runs(root: os.PathLike | str) -> list[dict]:
    """The run folders under ``root`` (a workspace's ``runs``), newest first: ``path``, ``name``, ``task``,
    ``arch``, ``date``, ``status``, ``metric``, ``value`` (:func:`final_metric`), ``has_checkpoint`` and
    ``resumable`` (a checkpoint, and stopped or interrupted: not finished, with or
    without learning, and not diverged, which would diverge again with the same settings). An unreadable run is listed as ``unreadable``."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        run = RunDir(path)
        if not run.config_path.is_file():
            continue
        try:
            config, summary = run.read_config(), run.read_summary() or {}
        except Exception:  # noqa: BLE001 - an unreadable run is listed as broken
            config, summary = {}, {"status": "unreadable"}
        metric, value = final_metric(summary, config)
        has_checkpoint = run.last_checkpoint.is_file()
        status = summary.get("status") or ("has checkpoint" if has_checkpoint else "incomplete")
        out.append({"path": str(path), "name": path.name, "task": config.get("task", "?"),
                    "arch": config.get("arch", "?"),
                    "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.config_path.stat().st_mtime)),
                    "status": status, "metric": metric, "value": value, "has_checkpoint": has_checkpoint,
                    "resumable": has_checkpoint and not status.startswith("finished") and status != "diverged"})
    return out


def new_run_path(root: os.PathLike | str, name: str) -> Path:
    """A fresh folder name under ``root``: ``<name>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``… if taken."""
    root, stamp = Path(root), time.strftime("%Y%m%d-%H%M%S")
    path, k = root / f"{name}-{stamp}", 2
    while path.exists():
        path, k = root / f"{name}-{stamp}-{k}", k + 1
    return path
