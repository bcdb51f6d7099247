"""The explored features in TensorBoard's embedding projector: ``tensorboard --logdir <out>/projector``.

One embedding per initialisation (its tag is the initialisation's name), with each image's label (class
or k-means cluster) and path as metadata and the images themselves as the sprite, so the projector's own
PCA, t-SNE and UMAP views show the same points as ``embedding.png``. Needs the ``tensorboard`` package
(``pip install "sslstudio[tensorboard]"``); without it nothing is written and the reason is returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sslstudio.engine.tblog import summary_writer

#: Side of each image in the projector's sprite (TensorBoard limits the sprite to 8192 px a side).
SPRITE_PX = 32
FOLDER = "projector"


def sprite_images(images: np.ndarray, side: int = SPRITE_PX) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, side, side]`` in [0, 1], small enough for the sprite."""
    limit = max(1, 8192 // max(1, int(np.ceil(np.sqrt(len(images))))))
    side = max(1, min(side, limit))
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def write_projector(out: Path, entries: Sequence[dict], paths: Sequence[str], labels: Sequence[str],
                    images: np.ndarray) -> tuple[Path | None, str | None]:
    """Write every entry's ``features`` ([N, D]) under ``out/projector``; ``(folder, None)`` or
    ``(None, why not)``."""
    writer_cls, why = summary_writer()
    if writer_cls is None:
        return None, why
    folder = Path(out) / FOLDER
    writer = writer_cls(log_dir=str(folder))
    try:
        sprite = sprite_images(images)
        metadata = [[str(label), Path(p).name] for label, p in zip(labels, paths)]
        for step, entry in enumerate(entries):
            writer.add_embedding(torch.as_tensor(np.asarray(entry["features"], dtype=np.float32)), metadata=metadata,
                                 metadata_header=["label", "file"], label_img=sprite, tag=str(entry["name"]),
                                 global_step=step)
    finally:
        writer.close()
    return folder, None


__all__ = ["FOLDER", "SPRITE_PX", "sprite_images", "write_projector"]
