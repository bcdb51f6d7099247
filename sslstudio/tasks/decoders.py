"""Dense heads: a backbone feature map upsampled back to an image-shaped output.

Shared by the reconstruction tasks (inpainting, autoencoder: 3 channels at the input size) and
colorization (the ab-bin scores at a quarter of the input side). The decoder reads a single
stage of the backbone (the last one by default, so gradients reach every layer that the exported
backbone keeps) and has no skip connections: the whole image has to pass through the backbone's
representation, as in the context encoder's and the denoising autoencoder's bottleneck.

The decoder is a chain of ``ConvTranspose2d(4, stride 2) + BatchNorm + ReLU`` blocks, each
doubling the resolution and halving the width (from ``width`` down to ``min_width``), then a
3x3 convolution to the output channels (no activation: outputs are in the normalised space or
are logits). When the factor between the feature map and the output is not a power of two
(AlexNet, VGG) a bilinear resize before the last convolution makes the size exact. A ResNet-18
at 32 px ends at 1x1 (five blocks up to 32x32); ``resnet18_small`` at 32 px ends at 4x4 (three).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def stage_shape(backbone: nn.Module, stage: str, image_size: int) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the backbone's ``stage`` map for ``image_size`` inputs.

    Runs one blank image through the backbone in eval mode without gradients (the batch-norm
    running statistics are not touched) and restores the backbone's mode.
    """
    was_training = backbone.training
    backbone.eval()
    try:
        param = next(backbone.parameters())
        with torch.no_grad():
            fmap = backbone.forward_stage(torch.zeros(1, 3, image_size, image_size, device=param.device,
                                                      dtype=param.dtype), stage)
    finally:
        backbone.train(was_training)
    return int(fmap.shape[1]), int(fmap.shape[2]), int(fmap.shape[3])


class UpsamplingDecoder(nn.Module):
    """Feature map ``[N, C, h, w]`` -> ``[N, out_channels, out_size, out_size]``.

    Args:
        in_channels: Channels of the feature map.
        in_size: Side of the feature map (the larger one if it is not square).
        out_size: Side of the output.
        out_channels: Output channels (3 for an image, Q for bin scores).
        width: Channels of the first upsampling block.
        min_width: Narrowest block.
    """

    def __init__(self, in_channels: int, in_size: int, out_size: int, out_channels: int,
                 width: int = 256, min_width: int = 32):
        super().__init__()
        self.out_size = int(out_size)
        steps = max(0, math.ceil(math.log2(out_size / max(in_size, 1)) - 1e-9))
        layers: list[nn.Module] = []
        c = in_channels
        if steps == 0:  # at least one hidden layer even when no upsampling is needed
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        for k in range(steps):
            c_next = max(min_width, width >> k)
            layers += [nn.ConvTranspose2d(c, c_next, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_next), nn.ReLU(inplace=True)]
            c = c_next
        self.blocks = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, out_channels, 3, padding=1)
        self.upsampling_steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(x)
        if y.shape[-2:] != (self.out_size, self.out_size):
            y = F.interpolate(y, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return self.out(y)


class EncoderDecoder(nn.Module):
    """The backbone (submodule ``backbone``) read at one stage, followed by an :class:`UpsamplingDecoder`.

    Attributes:
        backbone: The backbone being trained (exported on its own).
        stage: The backbone stage the decoder reads.
        decoder: The dense head.
    """

    def __init__(self, backbone: nn.Module, stage: str, decoder: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.stage = stage
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone.forward_stage(x, self.stage))


def build_encoder_decoder(backbone: nn.Module, image_size: int, out_channels: int, out_size: int,
                          stage: str | None = None, width: int = 256) -> EncoderDecoder:
    """A backbone + dense head producing ``[N, out_channels, out_size, out_size]`` from ``image_size`` inputs.

    Args:
        backbone: A :class:`~sslstudio.models.backbones.Backbone` (needs ``forward_stage`` and ``stage_names``).
        image_size: Side of the network input.
        out_channels: Output channels.
        out_size: Output side.
        stage: The stage the decoder reads (``None``: the last one).
        width: Channels of the first decoder block.
    """
    stage = stage or backbone.stage_names()[-1]
    channels, h, w = stage_shape(backbone, stage, image_size)
    decoder = UpsamplingDecoder(channels, max(h, w), out_size, out_channels, width=width)
    return EncoderDecoder(backbone, stage, decoder)


# -- helpers of the image-shaped tasks --------------------------------------------------------
#: PSNR reported for a perfect reconstruction (an MSE of 1e-10), instead of infinity.
PSNR_CAP_DB = 100.0


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 1] (channels at dim -3) -> the normalised space of :func:`~sslstudio.tasks.base.to_tensor`."""
    from sslstudio.tasks.base import MEAN, STD

    mean = torch.tensor(MEAN, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    return (pixels - mean) / std


def unnormalise(tensor: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise` (not clipped)."""
    from sslstudio.tasks.base import MEAN, STD

    t = tensor.float()
    mean = torch.tensor(MEAN, device=t.device).view(3, 1, 1)
    std = torch.tensor(STD, device=t.device).view(3, 1, 1)
    return t * std + mean


def psnr_per_image(output: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB of each image ``[N]``, on 0..1 pixel values, over ``region``.

    Args:
        output: Predictions ``[N, 3, H, W]`` in the normalised space (un-normalised and clipped
            to [0, 1] here, as the picture a person would see).
        target: Clean images ``[N, 3, H, W]`` in the normalised space.
        region: Optional ``[N, 1, H, W]`` 0/1 mask of the pixels to score (all when ``None``).

    Returns:
        ``10 * log10(1 / MSE)`` per image, capped at :data:`PSNR_CAP_DB`; NaN for an image whose
        region is empty.
    """
    err = (unnormalise(output).clamp(0.0, 1.0) - unnormalise(target).clamp(0.0, 1.0)).pow(2)
    if region is None:
        region = torch.ones_like(err[:, :1])
    region = region.float()
    n = region.sum(dim=(1, 2, 3)) * err.shape[1]
    mse = (err * region).sum(dim=(1, 2, 3)) / n.clamp(min=1)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp(min=10 ** (-PSNR_CAP_DB / 10)))
    return torch.where(n > 0, psnr, torch.full_like(psnr, float("nan")))


def psnr_sum(output: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> tuple[float, int]:
    """``(sum of per-image PSNR, number of images)`` for the loop's aggregation (empty regions skipped)."""
    psnr = psnr_per_image(output.detach(), target.detach(), region)
    ok = ~torch.isnan(psnr)
    return float(psnr[ok].sum().item()), int(ok.sum().item())


def placeholder_tile(image, text: str, size: int = 128, box: tuple[float, float, float, float] | None = None):
    """Upscale ``image`` (PIL) to ``size`` px and write ``text`` over it (inside ``box``, as fractions
    ``(x0, y0, x1, y1)`` of the side, which is greyed out first; the whole tile when ``None``)."""
    from PIL import Image, ImageDraw

    from sslstudio.tasks.render import font

    tile = image.convert("RGB").resize((size, size), Image.NEAREST)
    draw = ImageDraw.Draw(tile)
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, 1.0, 1.0)
    rect = (round(x0 * size), round(y0 * size), round(x1 * size) - 1, round(y1 * size) - 1)
    draw.rectangle(rect, fill=(96, 96, 100))
    lines = text.split("\n")
    cy = (rect[1] + rect[3]) / 2 - 8 * (len(lines) - 1)
    for k, line in enumerate(lines):
        draw.text(((rect[0] + rect[2]) / 2, cy + 16 * k), line, fill=(240, 240, 240), font=font(13), anchor="mm")
    return tile
