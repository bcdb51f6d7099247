"""Colorization: predict the colours of a photograph from its lightness.

Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016. Images are converted to CIE
Lab (D65, sRGB with its gamma; :mod:`sslstudio.tasks.lab`); the network sees the lightness L and
predicts, at every position of a map at a quarter of the input side (the paper: 56x56 for
224x224 inputs), a distribution over quantised ab colours:

* **ab grid**: the Q = 313 bins of side 10 around the sRGB gamut, as in the paper: the grid
  points within one bin (Chebyshev distance 10) of the convex hull of the ab of all 8-bit sRGB
  colours (:func:`~sslstudio.tasks.lab.gamut_bins`; the rule and why it gives 313 are in
  :mod:`sslstudio.tasks.lab`). Computed, not read from the released code's file.
* **Augmentation**: a random square crop (``crop_fraction``: the released training prototxt
  crops 176 px out of its 256 px images, 0.6875 of the side; 44 px at 64 px, 24 px at 32 px,
  rounded to a multiple of ``output_stride``) and a left-right mirror with probability 0.5
  (``mirror``; the prototxt's ``mirror: true``), drawn for the whole batch from the batch's
  generator in :meth:`ColorizationTask.make_batch`. The network is trained at the crop's size, as
  the released code is (fully convolutional).
* **Targets**: the true ab point-sampled at the output resolution, as the released code does (a
  1x1 convolution of stride 4 on the ab map: the pixels ``0, 4, 8, ...`` of the crop, offset 0,
  in both directions; no averaging), soft-encoded on its 5 nearest bins with a Gaussian of sigma
  5 (the paper). The released code's encoding layer uses the 10 nearest bins
  (``NNEncLayer``: ``NN = 10``, sigma 5); 5 is kept here as the paper writes it (``neighbours``).
  The soft encoding is done in :meth:`ColorizationTask.loss` on the device, so samples carry only
  a ``[3, C/4, C/4]`` target (a, b and the image's loss weight) instead of ``[Q, C/4, C/4]``.
* **Class rebalancing** (lambda = 0.5): :meth:`ColorizationTask.prepare` measures the ab
  distribution of the user's own training images over the Q bins (the point samples of the
  whole images, not of crops), smooths it with a Gaussian of sigma 5 (ab units) as the paper
  does, and sets ``w ∝ 1 / ((1 - lambda) p + lambda / Q)``,
  normalised so that ``E_p[w] = 1``. Each pixel's loss is weighted by ``w`` of its nearest bin.
* **Loss**: the multinomial cross-entropy between the soft targets and the predicted
  distribution, weighted as above, averaged over the pixels of colour images. Greyscale sources
  (the 99th percentile of their chroma ``sqrt(a^2 + b^2)`` over the whole image, before the crop,
  at most ``grey_chroma``) carry weight 0: they have no colour to predict.
* **Decoding**: the annealed mean of the distribution, temperature T = 0.38.
* **Metric**: per-pixel accuracy of the predicted bin (argmax) against the nearest bin of the
  true ab, over the pixels of colour images.

Input: the backbone must stay a 3-channel RGB network so that the exported weights load into
torchvision, so L is given as the grey sRGB image of that lightness (L with a = b = 0, i.e. the
greyscale photograph; the three channels are equal) normalised with the ImageNet statistics
like every other task's input.

Head: :class:`~sslstudio.tasks.decoders.UpsamplingDecoder` reading the backbone's last stage
(``stage``) and upsampling with transposed convolutions to the ``C/4`` output map of Q scores,
so that gradients reach every backbone layer. (The paper's network is a VGG-style stack with
dilated convolutions at 1/8 resolution and one upsampling layer.)

Optimisation: the paper trains with Adam (beta1 0.9, beta2 0.99, weight decay 1e-3, learning
rate 3e-5 dropped to 1e-5 at 200k and to 3e-6 at 375k iterations, batch 40, 450k iterations:
about 14 passes over ImageNet). The training loop here uses SGD, so the defaults are SGD values
that train this head stably (learning rate 0.01, Nesterov momentum 0.9) with the paper's weight
decay, batch size, length (15 epochs) and its two rate drops (at 200/450 and 375/450 of the run,
each about x0.3).

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sslstudio.tasks.base import OptimConfig, PretextTask, param, to_image
from sslstudio.tasks.decoders import build_encoder_decoder, normalise, placeholder_tile, unnormalise
from sslstudio.tasks.lab import (annealed_mean, gamut_bins, lab_to_rgb, lightness_to_srgb, nearest_bins, rgb8_to_lab,
                                 rgb_to_lab, soft_encode)
from sslstudio.tasks.patches import crop_batch
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import TILE, hstack, labelled_tile


@dataclass(frozen=True)
class ColorizationConfig:
    """Colorization settings (the paper's values)."""

    output_stride: int = param(4, "The prediction map's side is the input (crop) side divided by this, and the "
                                  "ab targets are the pixels 0, 4, 8, ... of the crop (paper: 4, 56x56 for "
                                  "224x224; 11x11 for the 44 px crops of 64 px images).", min=1, max=32)
    neighbours: int = param(5, "Soft encoding: number of nearest ab bins a target spreads over (paper: 5).",
                            min=1, max=32, label="Soft-encoding neighbours")
    sigma: float = param(5.0, "Soft encoding: Gaussian sigma in ab units (paper: 5).", min=0.1, max=100.0,
                         label="Soft-encoding σ")
    rebalance_lambda: float = param(0.5, "Class rebalancing: weight of the uniform distribution mixed with "
                                         "the ab prior (paper: 0.5; 1 turns rebalancing off).", min=0.0, max=1.0,
                                         label="Rebalancing λ")
    prior_sigma: float = param(5.0, "Class rebalancing: Gaussian smoothing of the ab prior, in ab units "
                                    "(paper: 5).", min=0.0, max=100.0, label="Prior smoothing σ")
    temperature: float = param(0.38, "Annealed-mean decoding temperature (paper: 0.38; 1 is the mean, "
                                     "towards 0 the mode).", min=0.01, max=10.0, label="Annealed-mean temperature")
    grey_chroma: float = param(2.0, "An image whose 99th-percentile chroma sqrt(a^2+b^2) is at most this "
                                    "is greyscale and carries no loss (Lab units).", min=0.0, max=50.0,
                                    label="Greyscale chroma limit")
    crop_fraction: float = param(176 / 256, "Random training crop: its side as a fraction of the image side, "
                                            "rounded to a multiple of output_stride (released code: 176 px crops "
                                            "of 256 px images; 44 px at 64 px). The network trains at that size. "
                                            "1 turns cropping off.", min=0.1, max=1.0)
    mirror: bool = param(True, "Flip each image left-right with probability 0.5 (released code: mirror).")
    stage: str = param("last", "Backbone stage the colour head reads ('last', or a stage name such as "
                               "layer3; stages after it are then not trained).")


def grey_input(lightness: torch.Tensor) -> torch.Tensor:
    """L ``[..., 1, H, W]`` -> the normalised 3-channel grey image of that lightness."""
    grey = lightness_to_srgb(lightness)  # the sRGB grey of (L, 0, 0), on one channel
    return normalise(grey.expand(*grey.shape[:-3], 3, *grey.shape[-2:]))


def lightness_of(inputs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`grey_input`: L ``[1, H, W]`` of a normalised grey input ``[3, H, W]``."""
    grey = unnormalise(inputs).clamp(0.0, 1.0)
    return rgb_to_lab(grey)[0:1]


def colour_name(ab: torch.Tensor) -> str:
    """Words for the mean colour of ab values ``[2, H, W]`` (Lab units): "mostly <hue>" or "muted colours"."""
    a, b = (float(v) for v in torch.as_tensor(ab).float().reshape(2, -1).mean(1))
    if math.hypot(a, b) < 6.0:
        return "muted colours"
    hue = math.degrees(math.atan2(b, a)) % 360.0
    for upper, name in ((25, "red"), (70, "orange"), (105, "yellow"), (160, "green"), (215, "teal"),
                        (290, "blue"), (340, "purple"), (360, "red")):
        if hue < upper:
            return f"mostly {name}"
    return "mostly red"


def rebalance_weights(prior: np.ndarray, lam: float) -> np.ndarray:
    """The paper's class weights: ``w ∝ 1 / ((1 - lam) p + lam / Q)`` with ``sum_q p_q w_q = 1``."""
    p = np.asarray(prior, dtype=np.float64)
    w = 1.0 / np.maximum((1.0 - lam) * p + lam / len(p), 1e-12)  # lam = 0 and p = 0: bins never seen
    return w / float((p * w).sum())


@register_task("colorization")
class ColorizationTask(PretextTask):
    """Predict the ab colours of an image from its lightness, as a distribution over in-gamut bins."""

    description = "Predict an image's colours from its lightness (classes over quantised ab)"
    paper = "Zhang, Isola, Efros. Colorful Image Colorization. ECCV 2016"
    metric_name = "accuracy"
    config_cls = ColorizationConfig
    optim = OptimConfig(epochs=15, batch_size=40, lr=0.01, momentum=0.9, nesterov=True,
                        weight_decay=1e-3, lr_decay=0.3, milestones=(200 / 450, 375 / 450))
    samples_per_image = 1
    min_image_size = 16
    small_image_policy = "upscale"
    needs_colour = True

    def __init__(self, config: ColorizationConfig | None = None, image_size: int = 64):
        super().__init__(config, image_size)
        self.centres = torch.from_numpy(gamut_bins())
        q = len(self.centres)
        self.prior = np.full(q, 1.0 / q)
        self.class_weights = np.ones(q)
        self.prior_images = 0
        self.grey_images = 0
        self.mode_share: float | None = None  # the commonest bin's share of the training pixels
        self._device_cache: dict = {}

    @property
    def crop_size(self) -> int:
        """Side of the network input: the random crop, a multiple of ``output_stride`` where it fits."""
        stride = self.config.output_stride
        side = int(round(self.image_size * self.config.crop_fraction / stride)) * stride
        return min(max(side, stride), self.image_size)

    @property
    def out_size(self) -> int:
        """Side of the prediction map."""
        return max(1, self.crop_size // self.config.output_stride)

    # -- samples ------------------------------------------------------------------------------
    def _is_colour(self, lab: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool of Lab images ``[B, 3, H, W]``: the 99th percentile of the chroma is above ``grey_chroma``."""
        chroma = lab[:, 1:].pow(2).sum(1).sqrt()
        return torch.quantile(chroma.flatten(1), 0.99, dim=1) > self.config.grey_chroma

    def _targets(self, lab: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        """Lab ``[B, 3, C, C]`` -> ``[B, 3, C/4, C/4]``: the ab point-sampled at every ``output_stride``-th
        pixel from offset 0 (rows and columns ``0, 4, 8, ...``) and each image's loss weight (``colour``)."""
        stride = self.config.output_stride
        out = max(1, lab.shape[-1] // stride)  # out_size for a crop
        ab = lab[:, 1:, :out * stride:stride, :out * stride:stride]
        weight = colour.to(ab.dtype).view(-1, 1, 1, 1).expand(-1, 1, out, out)
        return torch.cat([ab, weight], dim=1)

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs [B, 3, C, C], target [B, 3, C/4, C/4])`` of a uint8 batch ``[B, S, S, 3]``, on its
        device, ``C`` = :attr:`crop_size`: Lab (:func:`~sslstudio.tasks.lab.rgb8_to_lab`), each image's
        greyscale test, a random crop (top-left uniform over the positions that fit) and mirror
        (probability 0.5) per image, drawn on the CPU from ``generator`` in that order, then the
        grey input of L and the point-sampled target, for the whole batch at once."""
        b, size = images.shape[0], images.shape[1]
        lab = rgb8_to_lab(images, dim=-1)  # [B, S, S, 3]
        colour = self._is_colour(lab.movedim(-1, -3))
        crop = self.crop_size
        y = torch.randint(0, size - crop + 1, (b, 1), generator=generator)
        x = torch.randint(0, images.shape[2] - crop + 1, (b, 1), generator=generator)
        flip = torch.rand(b, generator=generator) < (0.5 if self.config.mirror else 0.0)
        lab = crop_batch(lab, y, x, crop)[:, 0]  # [B, 3, C, C]
        lab = torch.where(flip.to(lab.device).view(b, 1, 1, 1), lab.flip(-1), lab)
        return grey_input(lab[:, 0:1]), self._targets(lab, colour)

    def prepare(self, images: np.ndarray, seed: int) -> np.ndarray:
        """Measure the smoothed ab prior of the user's colour images and the rebalancing weights."""
        q = len(self.centres)
        counts = np.zeros(q, dtype=np.float64)
        colour = grey = 0
        for start in range(0, len(images), 256):  # make_batch's targets on whole images, a chunk at a time
            lab = rgb8_to_lab(torch.from_numpy(np.ascontiguousarray(images[start:start + 256])), dim=-1)
            lab = lab.movedim(-1, -3)
            is_colour = self._is_colour(lab)
            targets = self._targets(lab, is_colour)
            colour, grey = colour + int(is_colour.sum()), grey + int((~is_colour).sum())
            ab = targets[is_colour, :2].permute(0, 2, 3, 1).reshape(-1, 2)
            if len(ab):
                counts += np.bincount(nearest_bins(ab, self.centres)[1][:, 0].numpy(), minlength=q)
        self.mode_share = float(counts.max() / counts.sum()) if counts.sum() > 0 else None
        if counts.sum() > 0:
            p = counts / counts.sum()
            if self.config.prior_sigma > 0:
                d2 = torch.cdist(self.centres.double(), self.centres.double()).pow(2).numpy()
                kernel = np.exp(-d2 / (2.0 * self.config.prior_sigma ** 2))
                p = kernel @ p
                p = p / p.sum()
        else:
            p = np.full(q, 1.0 / q)
        self.prior = p
        self.class_weights = rebalance_weights(p, self.config.rebalance_lambda)
        self.prior_images, self.grey_images = colour, grey
        self._device_cache = {}
        return images

    # -- model --------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        stage = None if self.config.stage == "last" else self.config.stage
        return build_encoder_decoder(backbone, self.crop_size, out_channels=len(self.centres),
                                     out_size=self.out_size, stage=stage)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = (self.centres.to(device),
                                       torch.as_tensor(self.class_weights, dtype=torch.float32, device=device))
        return self._device_cache[key]

    def _pixels(self, output: torch.Tensor, target: torch.Tensor):
        """Per-pixel log-probabilities ``[P, Q]``, ab ``[P, 2]`` of the colour pixels."""
        q = output.shape[1]
        logp = F.log_softmax(output.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, q)
        ab = target[:, :2].float().permute(0, 2, 3, 1).reshape(-1, 2)
        keep = target[:, 2].reshape(-1) > 0
        return logp[keep], ab[keep]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        centres, weights = self._on(output.device)
        logp, ab = self._pixels(output, target)
        if ab.shape[0] == 0:  # only greyscale images in the batch
            return output.float().sum() * 0.0
        w, idx = soft_encode(ab, centres, self.config.neighbours, self.config.sigma)
        ce = -(w * logp.gather(1, idx)).sum(dim=1)
        return (weights[idx[:, 0]] * ce).mean()

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        centres, _ = self._on(output.device)
        logp, ab = self._pixels(output, target)
        if ab.shape[0] == 0:
            return 0.0, 0
        true = nearest_bins(ab, centres)[1][:, 0]
        return float((logp.argmax(dim=1) == true).sum().item()), int(ab.shape[0])

    # -- display ------------------------------------------------------------------------------
    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Annealed-mean ab ``[N, 2, h, w]`` of scores ``[N, Q, h, w]``."""
        return annealed_mean(output, self.centres.to(output.device), self.config.temperature)

    def _colour_image(self, lightness: torch.Tensor, ab: torch.Tensor) -> Image.Image:
        size = lightness.shape[-1]
        ab_full = F.interpolate(ab[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
        rgb = lab_to_rgb(torch.cat([lightness, ab_full], dim=0))
        arr = (rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(arr, "RGB")

    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        lightness = lightness_of(inputs.cpu())
        target = target.cpu()
        colour = bool(target[2].max() > 0)
        side = inputs.shape[-1]
        tiles = [labelled_tile(to_image(inputs), "input: lightness" if side == self.image_size
                               else f"input: {side} px crop")]
        if output is None:
            grey = self._colour_image(lightness, torch.zeros(2, 1, 1))
            tiles.append(labelled_tile(placeholder_tile(grey, "not trained\nyet", TILE), "prediction"))
        else:
            pred = self.decode(output[None].detach().cpu())[0]
            label = "prediction"
            if colour:
                _, ab = self._pixels(output[None].detach().cpu(), target[None])
                true = nearest_bins(ab, self.centres)[1][:, 0]
                hit = float((output.detach().cpu().argmax(0).reshape(-1) == true).float().mean())
                label = f"{100 * hit:.0f}% bins right"
            tiles.append(labelled_tile(self._colour_image(lightness, pred), label))
        if colour:
            tiles.append(labelled_tile(self._colour_image(lightness, target[:2]), "true colours"))
        else:
            tiles.append(labelled_tile(to_image(inputs), "grey: no loss", colour=(255, 200, 120)))
        return hstack(tiles)

    def caption(self, target: torch.Tensor) -> str:
        target = torch.as_tensor(target).float()
        if not bool(target[2].max() > 0):
            return "greyscale: no loss"
        return colour_name(target[:2])

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        seen = ("the lightness of the image (a grey picture)" if inputs.shape[-1] == self.image_size else
                f"the lightness (a grey picture) of a {inputs.shape[-1]} px crop of the image")
        if not bool(torch.as_tensor(target)[2].max() > 0):
            return (f"The network sees {seen}; this image has no colour of its own, so it teaches nothing "
                    "(no loss).")
        return (f"The network sees {seen} and must guess its colours (here: {colour_name(target[:2])}), "
                f"choosing one of {len(self.centres)} colour bins every {self.config.output_stride} pixels.")

    # -- records ------------------------------------------------------------------------------
    def prior_entropy_bits(self) -> float:
        p = self.prior[self.prior > 0]
        return float(-(p * np.log2(p)).sum())

    def run_info(self) -> dict:
        return {"bins": int(len(self.centres)), "crop_px": self.crop_size, "mirror": bool(self.config.mirror),
                "target_px": self.out_size,
                "target_sampling": f"point samples every {self.config.output_stride} px from offset 0 of the crop",
                "prior_entropy_bits": round(self.prior_entropy_bits(), 4),
                "prior_max_entropy_bits": round(math.log2(len(self.centres)), 4),
                "commonest_bin_share": None if self.mode_share is None else round(self.mode_share, 4),
                "prior_images": int(self.prior_images), "greyscale_images": int(self.grey_images),
                "rebalance_lambda": self.config.rebalance_lambda,
                "class_weight_range": [round(float(self.class_weights.min()), 4),
                                       round(float(self.class_weights.max()), 4)]}

    def save_artifacts(self, folder) -> list:
        path = Path(folder) / "colorization_prior.npz"
        np.savez(path, centres=self.centres.numpy(), prior=self.prior, class_weights=self.class_weights)
        return [path]
