"""The run directory: ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``summary.json``.

Every write that replaces a file is atomic (a temporary file in the same folder, flushed and
fsynced, then :func:`os.replace`), so a crash mid-save never corrupts what was there.
Checkpoints are read with ``torch.load(..., weights_only=True)``: nothing in them is unpickled
as an arbitrary object.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from sslstudio.errors import RunError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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

    # config / summary
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict:
        if not self.config_path.is_file():
            raise RunError(f"{self.path} is not an sslstudio run directory: {CONFIG} is missing.")
        return read_json(self.config_path)

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def read_summary(self) -> dict | None:
        return read_json(self.summary_path) if self.summary_path.is_file() else None

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
        atomic_torch_save(state, self.last_checkpoint)
        if best:
            atomic_torch_save({"model": state["model"], "epoch": state["epoch"]}, self.best_checkpoint)
        return self.last_checkpoint

    def load_checkpoint(self, which: str = "last") -> dict:
        path = self.best_checkpoint if which == "best" else self.last_checkpoint
        if not path.is_file():
            raise RunError(f"no checkpoint at {path}: the run has not finished an epoch yet.")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report as a sentence
            raise RunError(f"the checkpoint {path} could not be read ({exc}).") from exc


def is_run_dir(path: os.PathLike | str) -> bool:
    return (Path(path) / CONFIG).is_file()


def load_run_backbone(run_dir: os.PathLike | str, which: str = "last"):
    """The pretrained backbone of a run, as a :class:`~sslstudio.models.Backbone` on the CPU."""
    from sslstudio.models import build_backbone

    run = RunDir(run_dir)
    config = run.read_config()
    state = run.load_checkpoint(which)["model"]
    prefix = "backbone."
    backbone_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    backbone = build_backbone(config["arch"])
    backbone.load_state_dict(backbone_state, strict=True)
    return backbone, config


def export_run(run_dir: os.PathLike | str, out_dir: os.PathLike | str, formats=None, which: str = "last"):
    """Export a run's backbone (see :func:`sslstudio.export.export_backbone`)."""
    from sslstudio.export import FORMATS, export_backbone

    backbone, config = load_run_backbone(run_dir, which)
    meta = {"task": config.get("task"), "source_run": str(Path(run_dir).resolve()),
            "checkpoint": which, "seed": config.get("seed")}
    return export_backbone(backbone, out_dir, formats=tuple(formats or FORMATS),
                           image_size=int(config.get("image_size", 64)), metadata=meta)
