"""Patch operations shared by the patch-based pretext tasks (jigsaw, context prediction), on batches.

Images come in the layout the data pipeline stores (``[B, H, W, 3]`` uint8, channels last, on the
training device); patches leave in the layout a backbone takes (``[..., C, H, W]`` float).

* Cropping: :func:`crop_batch` (many windows per image in one gather; optionally each colour
  channel from its own, slightly shifted window: the spatial channel jitter that hides chromatic
  aberration).
* Per-patch normalisation: :func:`standardise_batch` (zero mean and unit standard deviation per
  patch, per channel or with one deviation for the whole patch), so that a patch's overall
  brightness, contrast and colour cast cannot tell the network where it came from (Noroozi and
  Favaro, ECCV 2016, section 3.3; Doersch, Gupta and Efros, ICCV 2015, section 3.1). A
  standardised patch has the same range as an ImageNet-normalised image, so the backbone sees
  inputs of the usual scale.
* Colour defences against chromatic aberration (Doersch et al., section 3.1):
  :func:`project_colour_batch` (remove the green-magenta component of every pixel; colour
  dropping is done by the context task itself), :func:`greyscale_batch` (luminance in all three
  channels).
* :func:`pixelate_batch` (down-sample and up-sample again with PIL's BOX and BILINEAR filters as
  matrices, a different size per patch, so that the network cannot rely on fine detail only:
  Doersch et al. down-sample some patches "to as little as 100 total pixels").
* Drawing: :func:`display`, :func:`dominant_channel`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: ITU-R BT.601 luma weights (what PIL's ``convert("L")`` uses).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Unit vector of the green-magenta axis in RGB (orthogonal to grey ``(1, 1, 1)``).
GREEN_MAGENTA = np.array([-1.0, 2.0, -1.0], dtype=np.float32) / np.sqrt(6.0, dtype=np.float32)
#: Smallest standard deviation :func:`standardise_batch` divides by (pixel values in [0, 1]): a flat
#: patch becomes zeros instead of amplified quantisation noise.
STD_FLOOR = 1e-2


def display(patch: torch.Tensor, spread: float = 0.25) -> Image.Image:
    """Draw a standardised ``C x H x W`` patch: ``0.5 + spread * value`` in every channel, clipped.

    The same mapping for every channel keeps a greyscale patch grey and a colour-dropped patch
    visibly one-channel (what :func:`~sslstudio.tasks.base.to_image` would tint with the ImageNet
    statistics); 0.25 shows two standard deviations either side of the mean.
    """
    t = (patch.detach().float().cpu() * spread + 0.5).clamp(0, 1)
    arr = (t.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def dominant_channel(patch: torch.Tensor, ratio: float = 10.0) -> int:
    """Index of the only channel that varies (``-1`` if no single channel dominates).

    A colour-dropped patch keeps one channel; the other two hold faint noise, so the kept one's
    standard deviation is far above the others'.
    """
    std = patch.detach().float().reshape(patch.shape[0], -1).std(dim=1)
    order = torch.argsort(std, descending=True)
    if std[order[0]] > ratio * max(float(std[order[1]]), 1e-12):
        return int(order[0])
    return -1


# -- batches of patches ([..., C, H, W], any device) ------------------------------------------
def crop_batch(images: torch.Tensor, y: torch.Tensor, x: torch.Tensor, size: int,
               channel_shifts: torch.Tensor | None = None) -> torch.Tensor:
    """Gather ``size x size`` windows out of a batch of images in one indexing operation.

    Args:
        images: ``[B, H, W, C]`` (uint8 or float), channels last as the data pipeline stores them.
        y, x: ``[B, N]`` integer top-left pixels of ``N`` windows per image (best on the CPU, where
            they are checked without waiting for the device; they are moved to ``images``' device).
        size: Side of the windows.
        channel_shifts: Optional ``[B, N, C, 2]`` integer offsets ``(dy, dx)`` per colour channel
            : each channel is cut from its own shifted window, clamped to the image (a channel moves
            by less where the window already touches the border).

    Returns:
        ``[B, N, C, size, size]`` windows, channels first, in the images' dtype.

    Raises:
        ValueError: If an unshifted window does not lie inside its image.
    """
    b, h, w, channels = images.shape
    if size > h or size > w or bool((y < 0).any() | (x < 0).any() | (y + size > h).any() | (x + size > w).any()):
        raise ValueError(f"a {size} px crop does not fit the {h}x{w} images")
    y = y.to(images.device, torch.long)
    x = x.to(images.device, torch.long)
    if channel_shifts is None:
        cy = y[..., None].expand(*y.shape, channels)  # [B, N, C]
        cx = x[..., None].expand(*x.shape, channels)
    else:
        s = channel_shifts.to(images.device, torch.long)  # [B, N, C, 2]
        cy = (y[..., None] + s[..., 0]).clamp(0, h - size)
        cx = (x[..., None] + s[..., 1]).clamp(0, w - size)
    ar = torch.arange(size, device=images.device)
    rows = (cy[..., None] + ar)[..., :, None]  # [B, N, C, size, 1]
    cols = (cx[..., None] + ar)[..., None, :]  # [B, N, C, 1, size]
    bi = torch.arange(b, device=images.device).view(b, 1, 1, 1, 1)
    ci = torch.arange(channels, device=images.device).view(1, 1, channels, 1, 1)
    return images[bi, rows, cols, ci]


def to_float_batch(patches: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (float input is returned as float32)."""
    if patches.dtype == torch.uint8:
        return patches.float().div_(255.0)
    return patches.float()


def standardise_batch(patches: torch.Tensor, per_channel_std: bool = True, floor: float = STD_FLOOR) -> torch.Tensor:
    """Normalise channels-first patches ``[..., C, H, W]`` each on its own.

    Zero mean per channel; unit (population) standard deviation per channel (``per_channel_std``:
    per-tile, per-channel statistics, as the jigsaw paper does) or one over the whole patch (so that
    near-constant channels, colour dropping's noise, stay near-constant), never dividing by less
    than ``floor``.
    """
    x = to_float_batch(patches)
    centred = x - x.mean(dim=(-2, -1), keepdim=True)
    dims = (-2, -1) if per_channel_std else (-3, -2, -1)
    std = centred.pow(2).mean(dim=dims, keepdim=True).sqrt()
    return centred / std.clamp(min=floor)


def greyscale_batch(patches: torch.Tensor) -> torch.Tensor:
    """BT.601 luminance (what PIL's ``convert("L")`` uses) in all three channels of ``[..., 3, H, W]``."""
    x = to_float_batch(patches)
    luma = torch.as_tensor(LUMA, device=x.device).view(3, 1, 1)
    return (x * luma).sum(dim=-3, keepdim=True).expand_as(x)


def project_colour_batch(patches: torch.Tensor) -> torch.Tensor:
    """Remove the green-magenta component of every pixel of ``[..., 3, H, W]`` ("projection", Doersch et al.).

    Chromatic aberration shifts green against magenta (red + blue); projecting every RGB colour
    onto the plane orthogonal to :data:`GREEN_MAGENTA` removes the cue while keeping brightness (the
    axis is orthogonal to grey) and the red-blue contrast. Values may leave [0, 1] slightly.
    """
    x = to_float_batch(patches)
    axis = torch.as_tensor(GREEN_MAGENTA, device=x.device).view(3, 1, 1)
    return x - (x * axis).sum(dim=-3, keepdim=True) * axis


def resize_matrix(size: int, side: int, resample: int) -> np.ndarray:
    """``[side, size]`` float64 matrix of PIL's 1-D resampling from ``size`` to ``side`` pixels.

    PIL resizes separably, so resizing an image equals ``R @ X @ R.T`` per channel with this
    matrix; it is read off PIL itself (mode ``"F"`` images, one unit impulse per column).
    """
    out = np.empty((side, size), dtype=np.float64)
    for j in range(size):
        row = np.zeros((1, size), dtype=np.float32)
        row[0, j] = 1.0
        out[:, j] = np.asarray(Image.fromarray(row, "F").resize((side, 1), resample))[0]
    return out


def pixelation_matrices(size: int, sides) -> tuple[torch.Tensor, torch.Tensor]:
    """Down- and up-sampling matrices of pixelation (PIL's BOX down, BILINEAR up) for every side in ``sides``.

    Returns:
        ``(down [n, size, size], up [n, size, size])`` float32: ``down[k]`` holds the BOX
        matrix ``[side_k, size]`` in its first ``side_k`` rows (zeros below), ``up[k]`` the
        BILINEAR matrix ``[size, side_k]`` in its first ``side_k`` columns; a side ``>= size``
        gives identities (no pixelation). So ``up @ round(down @ X @ down.T) @ up.T`` is
        PIL's ``resize(side, BOX)`` then ``resize(size, BILINEAR)`` for a whole batch, a different
        side per patch.
    """
    sides = [int(s) for s in sides]
    down = np.zeros((len(sides), size, size), dtype=np.float64)
    up = np.zeros((len(sides), size, size), dtype=np.float64)
    for k, side in enumerate(sides):
        if side >= size:
            down[k] = up[k] = np.eye(size)
            continue
        side = max(1, side)
        down[k, :side] = resize_matrix(size, side, Image.BOX)
        up[k, :, :side] = resize_matrix(side, size, Image.BILINEAR)
    return torch.from_numpy(down).float(), torch.from_numpy(up).float()


def pixelate_batch(patches: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Pixelate uint8 patches ``[..., C, p, p]``: resampled with per-patch matrices
    ``down``/``up`` ``[..., p, p]`` (from :func:`pixelation_matrices`, indexed per patch).

    Rounds to 8 bits after each resize as PIL does; returns float32 values in 0..255.
    """
    x = patches.float()
    d = down.unsqueeze(-3)  # one matrix for all channels of a patch
    u = up.unsqueeze(-3)
    small = (d @ x @ d.transpose(-1, -2)).round_().clamp_(0, 255)
    return (u @ small @ u.transpose(-1, -2)).round_().clamp_(0, 255)
