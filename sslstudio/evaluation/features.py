"""Frozen features of a backbone, computed once per (initialisation, stage) and cached on disk.

Every probe of a comparison (logistic, kNN, MLP), every repeat and every label budget reads the
same feature matrices. A stage's feature map is average-pooled to a small grid (at most
:data:`MAX_PROBE_DIM` values, e.g. 512 x 2 x 2 for a ResNet's last stage) and flattened channel-major,
so the global average of each channel is the mean over that channel's grid cells
(:func:`global_pool`), which is what the kNN classifier reads.

The cache (``<cache_dir>/features/<key>.npy`` plus a JSON sidecar) is keyed by the SHA-256 of the
backbone's weights, the stage, the image list (resolved paths, sizes, modification times), the
image size and the pooling grid: the same backbone on the same images gives the same file, and any
change gives a new key. A cached matrix is bit-identical to a fresh one, so the cache never changes
a result; ``enabled=False`` (``--no-feature-cache``) turns it off.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslstudio.engine.device import autocast
from sslstudio.engine.events import RunControl
from sslstudio.tasks.base import normalise_batch

MAX_PROBE_DIM = 4096
FORMAT_VERSION = 1


def probe_grid(channels: int, spatial: int, max_dim: int = MAX_PROBE_DIM) -> int:
    """Side of the pooled grid for a stage: the largest ``g <= spatial`` with ``channels*g*g <= max_dim``."""
    g = max(1, int(math.floor(math.sqrt(max_dim / max(channels, 1)))))
    return max(1, min(g, spatial))


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over a module's state_dict (names, shapes, dtypes and bytes), buffers included."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def images_digest(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 of an ordered image list: resolved path, size and modification time of each file."""
    h = hashlib.sha256()
    for p in paths:
        path = Path(p)
        try:
            st = path.stat()
            h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}|missing\n".encode())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$SSLSTUDIO_CACHE_DIR/features``, else ``~/.cache/sslstudio/features``."""
    root = os.environ.get("SSLSTUDIO_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "sslstudio") / "features"


@torch.no_grad()
def extract_stages(backbone: nn.Module, images: np.ndarray, stages: Sequence[str], device: torch.device,
                   precision: str = "fp32", batch_size: int = 128, control: RunControl | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Pooled features of several stages in one pass over uint8 images ``[N, H, W, 3]``.

    Returns ``{stage: float32 array [N, C*g*g]}`` (channel-major, see :func:`global_pool`).
    The network runs once per batch up to the deepest stage asked for.
    """
    backbone.eval().to(device)
    order = [s for s in backbone.stage_names() if s in stages]
    out: dict[str, list[np.ndarray]] = {s: [] for s in order}
    grids: dict[str, int] = {}
    n = len(images)
    for start in range(0, n, batch_size):
        if control:
            control.checkpoint()
        x = normalise_batch(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))).to(device)
        with autocast(device, precision):
            maps = forward_stages(backbone, x, order)
        for stage, fmap in maps.items():
            if stage not in grids:
                grids[stage] = probe_grid(fmap.shape[1], min(fmap.shape[2], fmap.shape[3]))
            out[stage].append(F.adaptive_avg_pool2d(fmap.float(), grids[stage]).flatten(1).cpu().numpy())
        if progress:
            progress(min(start + batch_size, n), n)
    return {s: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)).astype(np.float32, copy=False)
            for s, v in out.items()}


def forward_stages(backbone: nn.Module, x: torch.Tensor, stages: Sequence[str]) -> dict[str, torch.Tensor]:
    """Feature maps of ``stages`` from one forward pass (gradients flow when enabled), shallow to deep."""
    names = backbone.stage_names()
    maps: dict[str, torch.Tensor] = {}
    if backbone.torchvision_arch.startswith("resnet"):
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        for name in names:
            x = getattr(backbone, name)(x)
            if name in stages:
                maps[name] = x
            if len(maps) == len(stages):
                break
        return maps
    ends = {backbone._stage_end[s]: s for s in stages}  # noqa: SLF001 - the backbone's own table
    for i in range(max(ends) + 1):
        x = backbone.features[i](x)
        if i in ends:
            maps[ends[i]] = x
    return maps


def global_pool(features: np.ndarray, channels: int) -> np.ndarray:
    """Per-channel mean over the pooled grid: ``[N, C*g*g] -> [N, C]``."""
    n, d = features.shape
    if d == channels:
        return features
    return features.reshape(n, channels, d // channels).mean(axis=2)


@dataclass
class FeatureCache:
    """Feature matrices on disk, keyed by weights, stage, images, size and grid (see module doc)."""

    root: Path | None = None
    enabled: bool = True
    hits: int = 0
    misses: int = 0
    memory: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root) if self.root else default_cache_dir()

    @staticmethod
    def key(weights: str, arch: str, stage: str, images: str, image_size: int, precision: str = "fp32") -> str:
        text = f"v{FORMAT_VERSION}|{weights}|{arch}|{stage}|{images}|{image_size}|{precision}|{MAX_PROBE_DIM}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load(self, key: str) -> np.ndarray | None:
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        if not self.enabled:
            return None
        path = self.root / f"{key}.npy"
        meta = self.root / f"{key}.json"
        try:
            info = json.loads(meta.read_text())
            arr = np.load(path, allow_pickle=False)
            if list(arr.shape) != info["shape"] or arr.dtype != np.float32:
                return None
        except (OSError, ValueError, KeyError):
            return None
        self.hits += 1
        self.memory[key] = arr
        return arr

    def store(self, key: str, arr: np.ndarray, info: dict) -> None:
        self.misses += 1
        self.memory[key] = arr
        if not self.enabled:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{key}.{os.getpid()}.tmp.npy"
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.root / f"{key}.npy")
            meta_tmp = self.root / f".{key}.{os.getpid()}.tmp.json"
            meta_tmp.write_text(json.dumps({**info, "shape": list(arr.shape), "created": time.time()}))
            os.replace(meta_tmp, self.root / f"{key}.json")
        except OSError:
            self.enabled = False  # an unwritable cache never stops a comparison


def cached_features(cache: FeatureCache, backbone: nn.Module, digest: str, images: np.ndarray,
                    images_key: str, stages: Sequence[str], image_size: int, device: torch.device,
                    precision: str, control: RunControl | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Features of ``stages`` from the cache where present; the missing stages in one pass."""
    arch = getattr(backbone, "arch", type(backbone).__name__)
    keys = {s: FeatureCache.key(digest, arch, s, images_key, image_size, precision) for s in stages}
    found = {s: cache.load(k) for s, k in keys.items()}
    missing = [s for s, v in found.items() if v is None]
    if missing:
        fresh = extract_stages(backbone, images, missing, device, precision, control=control, progress=progress)
        for s in missing:
            cache.store(keys[s], fresh[s], {"arch": arch, "stage": s, "image_size": image_size,
                                            "weights": digest, "images": images_key})
            found[s] = fresh[s]
    return {s: found[s] for s in stages}


__all__ = ["MAX_PROBE_DIM", "FeatureCache", "cached_features", "default_cache_dir", "extract_stages", "forward_stages",
           "global_pool", "images_digest", "probe_grid", "weights_digest"]
