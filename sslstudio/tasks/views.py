"""Two augmented views of every image, made on the training device in one batched pass.

The augmentations of the two-view methods (SimCLR, MoCo v2, SimSiam, BYOL; their modules cite the
papers) as torchvision composes them one image at a time, here batched: a random resized crop
(area ``min_scale``..1 of the image, aspect 3/4..4/3, resized back to the image side with bilinear
sampling) with a horizontal flip, colour jitter with a probability (brightness, contrast, saturation,
hue, applied in this fixed order; torchvision shuffles the order per image), greyscale with a
probability, Gaussian blur with a probability (sigma 0.1..2 px, kernel about a tenth of the side) and
solarisation with a probability (pixels at or above 0.5 inverted).

Every random number is drawn from the batch's CPU generator, so a batch is a function of its seed,
and the parameters of every view come back with it (:data:`FIELDS`, one row per view): what the
preview draws under each view and what the tests check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslstudio.models.normalise import mean_std

#: The columns of a view's parameter row: the crop box (top, left, height, width as fractions of the
#: source side), flip (0/1), jitter applied (0/1) with its four factors (the identity when not applied),
#: greyscale (0/1), blur sigma in pixels (0: none), solarised (0/1).
FIELDS = ("top", "left", "height", "width", "flip", "jitter", "brightness", "contrast", "saturation", "hue",
          "grey", "blur", "solarise")
COL = {name: k for k, name in enumerate(FIELDS)}
#: Grey weights of torchvision's ``rgb_to_grayscale`` (ITU-R 601-2 luma).
GREY = (0.2989, 0.587, 0.114)
#: Attempts at a crop of the drawn area and aspect that fits, as torchvision makes (then the whole image).
CROP_ATTEMPTS = 10
BLUR_SIGMA = (0.1, 2.0)


@dataclass(frozen=True)
class ViewRecipe:
    """The augmentation of one view (probabilities and strengths as torchvision's arguments)."""

    min_scale: float = 0.08
    max_scale: float = 1.0
    flip_probability: float = 0.5
    jitter_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grey_probability: float = 0.2
    blur_probability: float = 0.0
    solarize_probability: float = 0.0


def draw_params(n: int, recipe: ViewRecipe, generator: torch.Generator) -> torch.Tensor:
    """The parameters ``[n, len(FIELDS)]`` (float32, CPU) of ``n`` views, drawn from ``generator``."""
    u = torch.rand(n, CROP_ATTEMPTS, 4, generator=generator, dtype=torch.float64)
    area = recipe.min_scale + (recipe.max_scale - recipe.min_scale) * u[..., 0]
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[..., 1]
    w, h = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()
    fits = (w <= 1) & (h <= 1)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    pick = first.clamp(min=0)
    w = torch.where(first >= 0, w[rows, pick], torch.ones(n, dtype=torch.float64))
    h = torch.where(first >= 0, h[rows, pick], torch.ones(n, dtype=torch.float64))
    top, left = u[rows, pick, 2] * (1 - h), u[rows, pick, 3] * (1 - w)
    r = torch.rand(n, 9, generator=generator, dtype=torch.float64)
    jitter = r[:, 1] < recipe.jitter_probability

    def factor(x, strength):
        return torch.where(jitter, max(0.0, 1 - strength) + (1 + strength - max(0.0, 1 - strength)) * x, 1.0)

    hue = torch.where(jitter, (2 * r[:, 5] - 1) * recipe.hue, 0.0)
    blur = torch.where(r[:, 7] < recipe.blur_probability, BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * r[:, 8],
                       0.0)
    solar = torch.rand(n, generator=generator, dtype=torch.float64) < recipe.solarize_probability
    columns = [top, left, h, w, (r[:, 0] < recipe.flip_probability).double(), jitter.double(),
               factor(r[:, 2], recipe.brightness), factor(r[:, 3], recipe.contrast),
               factor(r[:, 4], recipe.saturation), hue, (r[:, 6] < recipe.grey_probability).double(), blur,
               solar.double()]
    return torch.stack(columns, 1).float()


def crop_flip(images: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Float ``[B, 3, H, W]`` images -> their crops (``params``' boxes, mirrored where ``flip``) at ``size`` px
    (bilinear, edge pixels repeated outside the image: a box never leaves it)."""
    p = params.to(images.device, torch.float32)
    sign = 1 - 2 * p[:, COL["flip"]]
    theta = torch.zeros(len(p), 2, 3, device=images.device)
    theta[:, 0, 0] = p[:, COL["width"]] * sign
    theta[:, 0, 2] = 2 * p[:, COL["left"]] + p[:, COL["width"]] - 1
    theta[:, 1, 1] = p[:, COL["height"]]
    theta[:, 1, 2] = 2 * p[:, COL["top"]] + p[:, COL["height"]] - 1
    grid = F.affine_grid(theta, [len(p), 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grey(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1, H, W]`` luma."""
    w = torch.tensor(GREY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    top, _ = x.max(1)
    low, _ = x.min(1)
    span = top - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    h = torch.where(top == r, ((g - b) / safe) % 6, torch.where(top == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(span > 0, h / 6, torch.zeros_like(h))
    s = torch.where(top > 0, span / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(top))
    return torch.stack([h, s, top], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], 1)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def colour(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Jitter (where drawn), then greyscale (where drawn), of 0..1 images ``[B, 3, H, W]``."""
    p = params.to(x.device, x.dtype)

    def per(col):
        return p[:, COL[col]].view(-1, 1, 1, 1)

    out = (x * per("brightness")).clamp(0, 1)
    mean = grey(out).mean((1, 2, 3), keepdim=True)
    out = (per("contrast") * out + (1 - per("contrast")) * mean).clamp(0, 1)
    out = (per("saturation") * out + (1 - per("saturation")) * grey(out)).clamp(0, 1)
    hsv = rgb_to_hsv(out)
    hsv = torch.stack([(hsv[:, 0] + per("hue")[:, 0]) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
    out = torch.where(per("jitter") > 0, hsv_to_rgb(hsv), x)
    return torch.where(per("grey") > 0, grey(out).expand_as(out), out)


def blur(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of ``[B, 3, H, W]`` with each image's sigma (none where it is 0), separable, kernel
    side about a tenth of the image (odd, at least 3), edges reflected."""
    sigma = params[:, COL["blur"]].to(x.device, x.dtype)
    if not bool((sigma > 0).any()):
        return x
    side = x.shape[-1]
    k = max(3, int(round(side / 10)) | 1)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kernel = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.clamp(min=1e-3).view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)  # [B*3, k]
    b = x.shape[0]
    y = x.reshape(1, b * 3, side, side)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), kernel.view(b * 3, 1, 1, k), groups=b * 3)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), kernel.view(b * 3, 1, k, 1), groups=b * 3)
    return torch.where(sigma.view(-1, 1, 1, 1) > 0, y.view_as(x), x)


def solarise(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    on = params[:, COL["solarise"]].to(x.device).view(-1, 1, 1, 1) > 0
    return torch.where(on & (x >= 0.5), 1 - x, x)


def augment(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, S, S, 3]`` -> 0..1 float ``[B, 3, S, S]`` views with ``params`` (from :func:`draw_params`)."""
    x = images.permute(0, 3, 1, 2).float().div(255)
    x = crop_flip(x, params, images.shape[1])
    return solarise(blur(colour(x, params), params), params)


def two_views(images: torch.Tensor, generator: torch.Generator,
              recipes: tuple[ViewRecipe, ViewRecipe]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of every image of a uint8 batch ``[B, S, S, 3]``: normalised ``[B, 2, 3, S, S]`` inputs and
    their parameters ``[B, 2, len(FIELDS)]``, on the images' device. The first view's numbers are drawn
    before the second's."""
    if images.shape[1] != images.shape[2]:
        raise ValueError("two-view tasks need square images (the data pipeline crops them square)")
    params = [draw_params(images.shape[0], recipe, generator) for recipe in recipes]
    mean, std = mean_std(images.device)
    views = [(augment(images, p) - mean) / std for p in params]
    return torch.stack(views, 1), torch.stack(params, 1).to(images.device)


def describe(p: torch.Tensor, solarisation: bool = False) -> list[str]:
    """Lines naming one view's parameters (a row of :data:`FIELDS`), for the preview (the solarisation
    line only with ``solarisation``, for recipes that have it)."""
    v = {name: float(p[k]) for k, name in enumerate(FIELDS)}
    lines = [f"crop {v['height']:.0%} by {v['width']:.0%} at {v['top']:.0%}, {v['left']:.0%}",
             "mirrored" if v["flip"] else "not mirrored"]
    if v["jitter"]:
        lines.append(f"jitter b {v['brightness']:.2f} c {v['contrast']:.2f} s {v['saturation']:.2f} "
                     f"h {v['hue']:+.2f}")
    else:
        lines.append("no colour jitter")
    lines.append("grey" if v["grey"] else "in colour")
    lines.append(f"blur sigma {v['blur']:.1f} px" if v["blur"] else "no blur")
    if solarisation or v["solarise"]:
        lines.append("solarised" if v["solarise"] else "not solarised")
    return lines
