"""How to load an export in Python: the lines the window shows beside the exported files."""

from __future__ import annotations

from pathlib import Path


def load_snippet(folder: str) -> str:
    """Python that loads the backbone exported to ``folder`` and runs it on a batch."""
    return ("from sslstudio.export import load_backbone\n\n"
            f"backbone = load_backbone({folder!r})  # eval mode, on the CPU\n"
            "features = backbone(images)  # images: [N, 3, H, W], ImageNet-normalised\n")


def default_export_dir(workspace, run) -> Path:
    """Where the window exports a run unless told otherwise: ``<workspace>/exports/<run folder name>``."""
    return Path(workspace) / "exports" / Path(run).name


__all__ = ["default_export_dir", "load_snippet"]
