"""Context encoder: inpainting a masked region from its surroundings.

Pathak, Krähenbühl, Donahue, Darrell and Efros, "Context Encoders: Feature Learning by
Inpainting", CVPR 2016. A region of the image is dropped (filled with the dataset mean, which is
0 after the ImageNet normalisation), the encoder sees the rest and a decoder fills the region in.

Masks (``mask``; section 3.3 of the paper describes three):

* ``"random_region"`` (the default): smooth random blobs. Section 3.3 finds that the central
  region gives features that latch onto the mask's boundary, that random blocks and random regions
  give similarly general features which clearly beat it, and uses random regions "for all our
  feature based experiments", i.e. its classification, detection and segmentation results on
  PASCAL VOC (the numbers of that section and its table are unverified here). The paper's regions are
  segmentation shapes from PASCAL VOC 2012, deformed and pasted at random, covering up to 1/4 of
  the image; the released random-region trainer (pathak22/context-encoder ``train_random.lua``,
  which is what this follows) instead thresholds smooth noise: a uniform field of 600x600 values
  upsampled bicubically to 10,000 px (``res = 0.06``), set where below ``density = 0.25``, and
  cut into ``fineSize`` windows at random positions, a window being redrawn until it covers more
  than 20% and less than 30% of the image. Here each mask is such a window of its own field with
  the release's 7.68 field cells (0.06 x 128) across the image side at any image size, the
  threshold is ``coverage`` and the accepted range ``coverage +- 0.05``
  (:func:`random_region_masks`). Threshold 0.25 covers about 17% on average, so the kept masks
  mostly cover 20-23%. Differences from the release: every sample of a batch has its own mask
  (the release uses one mask for the whole batch of 64), the cubic kernel is Keys' ``a = -0.5``
  (Torch7's ``image.scale`` kernel is unverified), and the loss follows the paper's overlap rule
  below (the release's random trainer, with ``useOverlapPred``, weighs every context pixel 10x
  instead of a band; by default it has no L2 term at all).
* ``"center"`` (the paper's main setting for inpainting: the 64x64 centre of a 128x128 image):
  the central square of side ``S / 2``, a quarter of the area, at any image size.
* ``"random_blocks"`` (the paper's random-block variant: several smaller, possibly overlapping
  blocks covering up to a quarter of the image): square blocks of side ``block_size * S`` at
  uniformly random positions, added until they cover ``coverage`` of the image to within one
  block (never more).

Loss: the paper's reconstruction loss, a masked L2 between the prediction and the original. As
in the paper the loss also covers a band of context around the hole ("a slightly larger patch
that overlaps with the context region by 7 px", weighted 10x): here ``overlap`` is that band's
width as a fraction of the image side (7/128: 2 px at 32 px, 4 px at 64 px) and ``overlap_weight``
its weight; pixels farther out carry no loss. The band is the hole dilated by that width, for
every mask (around each blob or block too). The loss is the weighted mean squared error over
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

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from sslstudio.tasks.base import OptimConfig, PretextTask, normalise_batch, param, to_image
from sslstudio.tasks.decoders import build_encoder_decoder, placeholder_tile, psnr_per_image, psnr_sum
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import TILE, font, hstack, labelled_tile

MASKS = ("random_region", "center", "random_blocks")
#: Cells of the low-resolution random field across the image side: the released trainer's
#: ``res = 0.06`` (low-resolution cells per pattern pixel) times its ``fineSize = 128``.
REGION_CELLS = 0.06 * 128
#: The released trainer keeps a window whose covered fraction is within this of ``density`` (20-30% for 25%).
REGION_TOLERANCE = 0.05
#: Redraws before a mask that still misses the range is kept as drawn (about 1 in 5 draws is kept at 25%).
REGION_ROUNDS = 1000


@dataclass(frozen=True)
class InpaintingConfig:
    """Context-encoder settings (random regions by default: the paper's masks for feature learning)."""

    mask: str = param("random_region", "'random_region' (the paper's choice for all its feature-learning results): "
                                       "drop smooth random blobs, a low-resolution random noise field upsampled "
                                       "and thresholded as in the released trainer, covering about `coverage` of "
                                       "the image (20-30% by default). 'center': drop the central square of half "
                                       "the image side (a quarter of the area; paper: 64x64 of 128x128). "
                                       "'random_blocks': drop random square blocks covering `coverage` of the image.",
                      choices=MASKS)
    coverage: float = param(0.25, "random_region: threshold of the noise field, and masks covering coverage +- 0.05 "
                                  "are kept (released trainer: 0.25, so 20-30%). random_blocks: fraction of the "
                                  "image the blocks cover (paper: up to 1/4). A fraction, so it holds at any image "
                                  "size.", min=0.01, max=0.9)
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


def cubic_weights(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (``a = -0.5``) at offsets ``x`` (zero beyond 2)."""
    x = x.abs()
    near = (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    far = a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def noise_windows(batch: int, size: int, cells: float, generator: torch.Generator) -> torch.Tensor:
    """``[batch, size, size]`` windows of smooth noise: a uniform random field of ``cells`` cells across
    the window, upsampled bicubically, each window at a random sub-cell position of its own field.

    The released trainer upsamples one 600x600 uniform field to 10,000 px and cuts windows out of it;
    as the field's values are independent, a fresh field per window with a uniform phase within a cell
    gives windows of the same law. Each window is ``Ry @ field @ Rx^T`` with ``[size, n]`` interpolation
    matrices, so nothing larger than the window is computed.
    """
    n = math.ceil(cells) + 4  # the window plus the kernel's reach on both sides and one cell of phase
    field = torch.rand(batch, n, n, generator=generator)
    phase = 1.5 + torch.rand(batch, 2, 1, generator=generator)  # first cell coordinate, in [1.5, 2.5)
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) * (cells / size) - 0.5  # pixel centres in cells
    rows = cubic_weights((phase + centres)[..., None] - torch.arange(n, dtype=torch.float32))  # [B, 2, S, n]
    return rows[:, 0] @ field @ rows[:, 1].transpose(1, 2)


def random_region_masks(batch: int, size: int, density: float, generator: torch.Generator, band: int = 0,
                        cells: float = REGION_CELLS,
                        tolerance: float = REGION_TOLERANCE) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random blobs, as the context encoder's released random-region trainer draws them:
    boolean ``[batch, size, size]`` masks on the CPU, with their dilation by ``band`` pixels.

    A mask is where a smooth noise window (:func:`noise_windows`, ``cells`` cells across the image)
    is below ``density``; a mask is redrawn until the fraction it covers lies strictly between
    ``density - tolerance`` (and 0) and ``density + tolerance`` (the release: threshold 0.25, kept
    when 20% < area < 30%). All the masks still out of range are redrawn together; after
    :data:`REGION_ROUNDS` rounds a mask is kept as drawn (at any allowed density and size at least
  about 1 draw in 5 is kept, so this does not happen in practice).
    Each mask of the batch is drawn on its own (the release uses one mask for a whole batch).
    """
    lo, hi = max(density - tolerance, 0.0), density + tolerance
    holes = torch.zeros(batch, size, size, dtype=torch.bool)
    pending = torch.arange(batch)
    for _ in range(REGION_ROUNDS):
        drawn = noise_windows(len(pending), size, cells, generator) < density
        holes[pending] = drawn
        area = drawn.float().mean(dim=(1, 2))
        pending = pending[(area <= lo) | (area >= hi)]
        if len(pending) == 0:
            break
    if band <= 0:
        return holes, holes
    k = 2 * band + 1  # a square dilation is a row dilation then a column one: 2k, not k*k, per pixel
    grown = F.max_pool2d(holes[:, None].float(), (1, k), stride=1, padding=(0, band))
    grown = F.max_pool2d(grown, (k, 1), stride=1, padding=(band, 0))
    return holes, grown[:, 0] > 0.5


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a ``[H, W]`` mask by a ``(2r+1)``-px square."""
    if radius <= 0:
        return mask.copy()
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy() > 0.5


def loss_region_tile(inputs: torch.Tensor, target: torch.Tensor, text: str, size: int = TILE) -> Image.Image:
    """The masked input at ``size`` px with the hole in magenta and the overlap band darkened (the loss
    region of :meth:`InpaintingTask.make_batch`'s ``target``), and ``text`` written in the middle."""
    hole = (target[3] > 0.5).cpu().numpy()
    band = ((target[4] > 0) & (target[3] <= 0.5)).cpu().numpy()
    pixels = np.asarray(to_image(inputs).convert("RGB")).astype(np.float32)
    pixels[band] *= 0.45
    pixels[hole] = (225, 60, 200)
    tile = Image.fromarray(pixels.astype(np.uint8)).resize((size, size), Image.NEAREST)
    draw = ImageDraw.Draw(tile)
    lines = text.split("\n")
    for k, line in enumerate(lines):
        draw.text((size / 2, size / 2 + 16 * (k - (len(lines) - 1) / 2)), line, fill=(255, 255, 255), font=font(13),
                  anchor="mm", stroke_width=2, stroke_fill=(0, 0, 0))
    return tile


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
        on the CPU; random regions and blocks are drawn from ``generator``, one per sample)."""
        s, r = self.image_size, self.overlap_px()
        if self.config.mask == "random_region":
            return random_region_masks(batch, s, self.config.coverage, generator, band=r)
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
        centre = self.config.mask == "center"
        tiles = [labelled_tile(to_image(inputs), "input: centre hidden" if centre else
                               f"input: {float(hole.float().mean()):.0%} hidden")]
        if output is None:
            ys, xs = torch.nonzero(hole[0], as_tuple=True)
            s = float(hole.shape[-1])
            if centre and len(ys):
                box = (float(xs.min()) / s, float(ys.min()) / s, (float(xs.max()) + 1) / s, (float(ys.max()) + 1) / s)
                tile = placeholder_tile(to_image(inputs), "not trained\nyet", TILE, box=box)
            else:
                tile = loss_region_tile(inputs, target, "not trained\nyet")
            tiles.append(labelled_tile(tile, "filled in"))
        else:
            filled = torch.where(hole, output.float(), target[:3].float())
            psnr = float(psnr_per_image(output[None], target[None, :3], target[None, 3:4])[0])
            tiles.append(labelled_tile(to_image(filled), f"filled in {psnr:.1f} dB"))
        tiles.append(labelled_tile(to_image(target[:3]), "original"))
        return hstack(tiles)

    def caption(self, target: torch.Tensor) -> str:
        share = float((torch.as_tensor(target)[3] > 0.5).float().mean())
        return "centre hidden" if self.config.mask == "center" else f"{share:.0%} hidden"

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        share = float((torch.as_tensor(target)[3] > 0.5).float().mean())
        shape = {"center": "a square in the centre", "random_region": "a random region",
                 "random_blocks": "random blocks"}.get(self.config.mask, "a region")
        w = float(self.config.overlap_weight)
        band = " It is scored on the hole only."
        if self.overlap_px() > 0 and w > 0:
            band = (f" It is scored on the hole and, {w:g} times as strictly, on a thin band of the image around "
                    "it." if w != 1 else " It is scored on the hole and on a thin band of the image around it.")
        return (f"The network sees the image with {shape} ({share:.0%} of it) blanked out and must paint the "
                f"missing part back in.{band}")

