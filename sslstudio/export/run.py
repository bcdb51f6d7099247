"""Exporting a pretraining run's backbone (the run directory -> the deployable files)."""

from __future__ import annotations

import os
from pathlib import Path

from sslstudio.export.formats import FORMATS, export_backbone
from sslstudio.models.pretrained import load_run_backbone

__all__ = ["export_run"]


def export_run(run_dir: os.PathLike | str, out_dir: os.PathLike | str, formats=None, which: str = "last"):
    """Export a run's backbone (see :func:`sslstudio.export.export_backbone`)."""
    backbone, config = load_run_backbone(run_dir, which)
    meta = {"task": config.get("task"), "source_run": str(Path(run_dir).resolve()),
            "checkpoint": which, "seed": config.get("seed")}
    return export_backbone(backbone, out_dir, formats=tuple(formats or FORMATS),
                           image_size=int(config.get("image_size", 64)), metadata=meta)
