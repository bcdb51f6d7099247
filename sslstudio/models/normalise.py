"""The ImageNet normalisation every backbone input goes through, defined once.

Inputs are normalised with the ImageNet statistics so that ImageNet-initialised backbones see what
they were trained on; every backbone and every task uses the same normalisation. This module only
needs torch, numpy and PIL, so tasks, models, evaluation and export all import it without cycles.

* :func:`normalise`: channels-last images (uint8 0..255, or float with ``scale``) -> normalised
  channels-first float tensors, any leading batch dimensions.
* :func:`denormalise`: the inverse, back to 0..1 floats.
* :func:`to_tensor` / :func:`normalise_batch` / :func:`to_image`: the per-image, batched and
  back-to-picture forms (re-exported by :mod:`sslstudio.tasks.base`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MEAN",
    "STD",
    "denormalise",
    "mean_std",
    "normalise",
    "normalise_batch",
    "to_image",
    "to_tensor",
]

#: Per-channel mean of ImageNet images (RGB, values in [0, 1]).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Per-channel standard deviation of ImageNet images (RGB, values in [0, 1]).
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Short names of :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` (the same objects).
MEAN = IMAGENET_MEAN
STD = IMAGENET_STD


def mean_std(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:data:`MEAN` and :data:`STD` as float32 ``[3, 1, 1]`` tensors (they broadcast over
    ``[..., 3, H, W]``) on ``device``."""
    return (torch.tensor(MEAN, device=device).view(3, 1, 1),
            torch.tensor(STD, device=device).view(3, 1, 1))


def normalise(images: torch.Tensor | np.ndarray, scale: float = 255.0) -> torch.Tensor:
    """Channels-last ``[..., H, W, 3]`` images with values in ``0..scale`` (uint8 pixels by
    default; ``scale=1.0`` for 0..1 floats) -> float32 ``[..., 3, H, W]`` normalised with
    :data:`MEAN` / :data:`STD`, on the images' device. The input is never modified."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    x = images.movedim(-1, -3)
    x = x.div(scale) if x.dtype == torch.float32 else x.float().div_(scale)
    mean, std = mean_std(x.device)
    return (x - mean) / std


def denormalise(tensor: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise` up to the scale: normalised ``[..., 3, H, W]`` -> 0..1 floats
    (not clamped), on the tensor's device."""
    mean, std = mean_std(tensor.device)
    return tensor * std + mean


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 array -> float CxHxW tensor normalised with :data:`MEAN` / :data:`STD`."""
    return normalise(image)


def normalise_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float ``[..., 3, H, W]`` normalised with :data:`MEAN` / :data:`STD`
    (the batched :func:`to_tensor`, on the images' device)."""
    return normalise(images)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """Inverse of :func:`to_tensor`: a normalised CxHxW tensor -> 8-bit RGB PIL image."""
    t = denormalise(tensor.detach().float().cpu()).clamp(0, 1)
    arr = (t.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(arr, "RGB")
