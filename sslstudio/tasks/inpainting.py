"""Context encoder: inpainting a masked region from its surroundings.

Pathak, Krähenbühl, Donahue, Darrell and Efros, "Context Encoders: Feature Learning by
Inpainting", CVPR 2016. A region of the image is dropped (filled with the dataset mean, which is
0 after the ImageNet normalisation), the encoder sees the rest and a decoder fills the region in.

Masks (``mask``):

* ``"center"`` (the paper's main setting: the 64x64 centre of a 128x128 image): the central
  square of side ``S / 2``, a quarter of the area, at any image size.
* ``"random_blocks"`` (the paper's random-block variant: several smaller, possibly overlapping
  blocks covering up to a quarter of the image): square blocks of side ``block_size * S`` at
  uniformly random positions, added until they cover ``coverage`` of the image to within one
  block (never more).

Loss: the paper's reconstruction loss, a masked L2 between the prediction and the original. As
in the paper the loss also covers a band of context around the hole ("a slightly larger patch
that overlaps with the context region by 7 px", weighted 10x): here ``overlap`` is that band's
width as a fraction of the image side (7/128: 2 px at 32 px, 4 px at 64 px) and ``overlap_weight``
its weight; pixels farther out carry no loss. The loss is the weighted mean squared error over
the loss region, in the normalised space. The paper's adversarial term (weight 0.001 in its
joint model) is not implemented: this task trains the reconstruction loss alone, which is the
paper's "L2" model.

Encoder: the backbone (3-channel normalised input, so the export loads into torchvision);
decoder: :class:`~sslstudio.tasks.decoders.UpsamplingDecoder` from the last stage's feature map
(transposed convolutions with batch norm and ReLU, no skip connections) to a full ``[3, S, S]``
image in the normalised space, of which the masked region is used. Metric: PSNR (dB, 0..1
pixels) over the masked pixels only.

Optimisation: the paper uses Adam (learning rate 2e-4 for its joint model); the training loop
here uses SGD, so the defaults are SGD values that train this encoder-decoder stably at 32 and
64 px: learning rate 0.01, Nesterov momentum 0.9, weight decay 5e-4, batch 64, 100 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sslstudio.tasks.base import OptimConfig, PretextTask, normalise_batch, param, to_image
from sslstudio.tasks.decoders import build_encoder_decoder, placeholder_tile, psnr_per_image, psnr_sum
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import TILE, hstack, labelled_tile

MASKS = ("center", "random_blocks")


@dataclass(frozen=True)
class InpaintingConfig:
    """Context-encoder settings (the paper's central mask by default)."""

    mask: str = param("center", "'center': drop the central square of half the image side (a quarter of "
                                "the area; paper: 64x64 of 128x128). 'random_blocks': drop random blocks "
                                "covering `coverage` of the image.", choices=MASKS)
    coverage: float = param(0.25, "random_blocks: fraction of the image the blocks cover (paper: up to "
                                  "1/4). A fraction, so it holds at any image size.", min=0.01, max=0.9)
    block_size: float = param(0.125, "random_blocks: side of one block as a fraction of the image side "
                                     "(16 px at 128, 8 px at 64, 4 px at 32).", min=0.02, max=0.5)
    overlap: float = param(7 / 128, "Width of the band of context around the hole that the loss also "
                                    "covers, as a fraction of the image side, rounded to whole pixels "
                                    "(paper: 7 px at 128 = 0.055; 4 px at 64, 2 px at 32). 0 turns it off.",
                           min=0.0, max=0.25)
    overlap_weight: float = param(10.0, "Loss weight of the overlap band relative to the hole (paper: 10).",
                                  min=0.0, max=1000.0)


def center_mask(size: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask of the central square of side ``size // 2``."""
    side = size // 2
    start = (size - side) // 2
    mask = np.zeros((size, size), dtype=bool)
    mask[start:start + side, start:start + side] = True
    return mask


def random_block_masks(batch: int, size: int, coverage: float, block: int, generator: torch.Generator,
                       band: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of random ``block``-px squares covering ``coverage`` of the image, with their dilation:
    boolean ``[batch, size, size]`` on the CPU.

    All masks at once: each round draws one block position per mask (uniform, from ``generator``)
    and places the block where that mask is still more than a block short of ``coverage``; then 32
    more rounds in which each mask keeps its block only if it does not exceed ``coverage``. So the
    covered fraction ends in ``(coverage - block**2 / size**2, coverage]``. Each round reads and
    writes only the ``block x block`` windows.

    Returns:
        ``(holes, dilated)``: the masks, and the masks dilated by ``band`` pixels (the union of
        the blocks grown by ``band`` on every side, clipped to the image: what :func:`dilate`
        gives).
    """
    block = int(min(max(1, block), size))
    target = coverage * size * size
    holes = torch.zeros(batch, size, size, dtype=torch.bool)
    dilated = torch.zeros(batch, size, size, dtype=torch.bool) if band > 0 else holes
    flat_holes, flat_dilated = holes.view(-1), dilated.view(-1)  # windows as flat indices: fast on the CPU
    base = (torch.arange(batch) * size * size).view(batch, 1, 1)
    inner = torch.arange(block)
    outer = torch.arange(-band, block + band)
    covered = torch.zeros(batch, dtype=torch.long)

    def place(keep_if) -> None:
        """Draw a block per mask, keep it where ``keep_if(covered, new pixels)``."""
        nonlocal covered
        y, x = torch.randint(0, size - block + 1, (2, batch, 1), generator=generator)
        index = base + (y + inner)[:, :, None] * size + (x + inner)[:, None, :]  # [B, k, k]
        window = flat_holes[index]
        new = block * block - window.sum(dim=(1, 2))
        keep = keep_if(covered, new)
        flat_holes[index] = window | keep[:, None, None]
        covered = covered + new * keep
        if band > 0:
            index = (base + (y + outer).clamp(0, size - 1)[:, :, None] * size
                     + (x + outer).clamp(0, size - 1)[:, None, :])
            flat_dilated[index] = flat_dilated[index] | keep[:, None, None]

    for _ in range(100_000):
        if not bool((covered <= target - block * block).any()):
            break
        place(lambda covered, new: covered <= target - block * block)
    for _ in range(32):
        place(lambda covered, new: covered + new <= target)
    return holes, dilated


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a ``[H, W]`` mask by a ``(2r+1)``-px square."""
    if radius <= 0:
        return mask.copy()
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy() > 0.5


@register_task("inpainting")
class InpaintingTask(PretextTask):
    """Fill in a masked region of the image from its context (context encoder)."""

    description = "Fill in a masked region of the image from its surroundings (context encoder)"
    paper = ("Pathak, Kr\u00e4henb\u00fchl, Donahue, Darrell, Efros. Context Encoders: Feature Learning by "
             "Inpainting. CVPR 2016")
    metric_name = "psnr"
    config_cls = InpaintingConfig
    optim = OptimConfig(epochs=100, batch_size=64, lr=0.01, momentum=0.9, nesterov=True,
                        weight_decay=5e-4, lr_decay=0.1, milestones=(0.5, 0.75))
    samples_per_image = 1
    min_image_size = 16
    small_image_policy = "upscale"
    needs_colour = False

    def overlap_px(self) -> int:
        """Width of the overlap band in pixels at this image size."""
        return int(round(self.config.overlap * self.image_size))

    def make_masks(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The holes of a batch and the holes grown by the overlap band (boolean ``[B, S, S]`` each,
        on the CPU; random blocks are drawn from ``generator``)."""
        s, r = self.image_size, self.overlap_px()
        if self.config.mask == "center":
            hole = center_mask(s)
            return (torch.from_numpy(hole).expand(batch, s, s),
                    torch.from_numpy(dilate(hole, r)).expand(batch, s, s))
        return random_block_masks(batch, s, self.config.coverage, int(round(self.config.block_size * s)),
                                  generator, band=r)

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs [B, 3, S, S], target [B, 5, S, S])`` of a uint8 batch ``[B, S, S, 3]``, on its device.

        The holes and their overlap bands are made on the CPU (:meth:`make_masks`) and copied
        over. Inputs: the normalised image with the hole set to the dataset mean (0). Target
        channels: 0-2 the normalised original, 3 the hole, 4 the loss weight (1 in the hole,
        ``overlap_weight`` in the band around it, 0 elsewhere).
        """
        if tuple(images.shape[1:3]) != (self.image_size, self.image_size):
            raise ValueError(f"inpainting needs {self.image_size} px square images; got {tuple(images.shape[1:3])}")
        holes, grown = self.make_masks(images.shape[0], generator)
        masks = torch.stack([holes, grown], dim=1).to(images.device)  # [B, 2, S, S] bool, one copy
        hole = masks[:, 0:1].float()
        weight = torch.where(masks[:, 1:2], float(self.config.overlap_weight), 0.0).masked_fill_(masks[:, 0:1], 1.0)
        original = normalise_batch(images)  # [B, 3, S, S]
        inputs = original * (1.0 - hole)  # the dataset mean (0 once normalised) in the hole
        return inputs, torch.cat([original, hole, weight], dim=1)

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        return build_encoder_decoder(backbone, self.image_size, out_channels=3, out_size=self.image_size)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = target[:, 4:5].float()
        err = (output.float() - target[:, :3].float()).pow(2) * weight
        return err.sum() / (weight.sum() * output.shape[1]).clamp(min=1e-8)

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        return psnr_sum(output, target[:, :3], target[:, 3:4])

    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        hole = target[3:4] > 0.5
        tiles = [labelled_tile(to_image(inputs), "masked input")]
        if output is None:
            ys, xs = torch.nonzero(hole[0], as_tuple=True)
            s = float(hole.shape[-1])
            box = None
            if self.config.mask == "center" and len(ys):
                box = (float(xs.min()) / s, float(ys.min()) / s, (float(xs.max()) + 1) / s, (float(ys.max()) + 1) / s)
            tile = placeholder_tile(to_image(inputs), "not trained\nyet", TILE, box=box)
            tiles.append(labelled_tile(tile, "filled in: none yet"))
        else:
            filled = torch.where(hole, output.float(), target[:3].float())
            psnr = float(psnr_per_image(output[None], target[None, :3], target[None, 3:4])[0])
            tiles.append(labelled_tile(to_image(filled), f"filled in {psnr:.1f} dB"))
        tiles.append(labelled_tile(to_image(target[:3]), "original"))
        return hstack(tiles)

