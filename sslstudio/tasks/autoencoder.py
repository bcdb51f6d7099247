"""Denoising autoencoder.

Vincent, Larochelle, Bengio and Manzagol, "Extracting and Composing Robust Features with
Denoising Autoencoders", ICML 2008. The input is corrupted and the network reconstructs the
clean input from it. The paper's corruption is *masking noise*: a fixed number ``nu * d`` of the
``d`` input components, chosen at random, are forced to 0 (it reports destruction fractions of
10%, 25% and 40%; 25% is the default here). Here a component is a pixel: all three channels of
``round(mask_fraction * S * S)`` pixels, drawn without replacement, are set to 0 (black) on the
0..1 pixel scale. Additive Gaussian noise (``noise_std`` on 0..1 pixels, then clipped to
[0, 1]) is the other corruption offered. Both act per pixel, so neither depends on the image
size.

Encoder: the backbone (3-channel ImageNet-normalised input, so the exported backbone loads into
torchvision); decoder: :class:`~sslstudio.tasks.decoders.UpsamplingDecoder` from the last
stage's feature map back to ``[3, S, S]`` in the normalised space (no skip connections, so the
reconstruction has to pass through the deepest features). Loss: mean squared error over the
whole image (in the normalised space); metric: PSNR of the reconstruction in dB on 0..1 pixels.
The paper's variant that weights the corrupted components more (its "emphasis" alpha/beta
weights belong to the later JMLR 2010 paper) is not implemented.

Optimisation: the paper trains with plain stochastic gradient descent, choosing the learning rate
and the number of pretraining epochs per benchmark on validation data, and gives no single recipe
for convolutional networks on photographs. The defaults here are SGD with learning rate 0.01,
Nesterov momentum 0.9, weight decay 5e-4, batch 64 and 100 epochs (stable with the
batch-normalised decoder at 32 and 64 px).

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sslstudio.tasks.base import OptimConfig, PretextTask, param, to_image
from sslstudio.tasks.decoders import build_encoder_decoder, normalise, placeholder_tile, psnr_per_image, psnr_sum
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import TILE, hstack, labelled_tile

CORRUPTIONS = ("masking", "gaussian")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Denoising-autoencoder settings (the paper's masking noise by default)."""

    corruption: str = param("masking", "How the input is corrupted: 'masking' sets a fraction of the pixels "
                                       "to black (the paper's masking noise), 'gaussian' adds noise.",
                            choices=CORRUPTIONS)
    mask_fraction: float = param(0.25, "Masking noise: fraction of the pixels set to black (paper: 0.1, "
                                       "0.25, 0.4). A fraction of the pixels, so it holds at any image size.",
                                 min=0.0, max=0.95)
    noise_std: float = param(0.1, "Gaussian noise: standard deviation on 0..1 pixel values (the noisy "
                                  "image is clipped to [0, 1]). Per pixel, independent of the image size.",
                             min=0.0, max=1.0, label="Noise std. dev.")


@register_task("autoencoder")
class AutoencoderTask(PretextTask):
    """Reconstruct the clean image from a corrupted copy (denoising autoencoder)."""

    description = "Reconstruct the clean image from a corrupted copy (denoising autoencoder)"
    paper = ("Vincent, Larochelle, Bengio, Manzagol. Extracting and Composing Robust Features with "
             "Denoising Autoencoders. ICML 2008")
    metric_name = "psnr"
    config_cls = AutoencoderConfig
    optim = OptimConfig(epochs=100, batch_size=64, lr=0.01, momentum=0.9, nesterov=True,
                        weight_decay=5e-4, lr_decay=0.1, milestones=(0.5, 0.75))
    samples_per_image = 1
    min_image_size = 16
    small_image_policy = "upscale"
    needs_colour = False

    def corruption_noise(self, batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """The random part of a batch's corruption, drawn on the CPU from ``generator``.

        ``masking``: boolean ``[B, 1, S, S]``, ``True`` at exactly ``round(mask_fraction * S * S)``
        pixels per image, a uniformly random subset (those with the largest of uniform random keys).
        ``gaussian``: ``[B, 3, S, S]`` noise of standard deviation ``noise_std``.
        """
        if self.config.corruption == "masking":
            k = int(round(self.config.mask_fraction * size * size))
            chosen = torch.rand(batch, size * size, generator=generator).topk(k, dim=1, sorted=False).indices
            mask = torch.zeros(batch, size * size, dtype=torch.bool)
            mask.scatter_(1, chosen, True)
            return mask.view(batch, 1, size, size)
        return torch.randn(batch, 3, size, size, generator=generator) * self.config.noise_std

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, target)``, both ``[B, 3, S, S]``, of a uint8 batch ``[B, S, S, 3]``, on its device:
        the corruption of :meth:`corruption_noise` applied to the whole batch (masked pixels black,
        or noise added and clipped to [0, 1]), both normalised."""
        b, size = images.shape[0], images.shape[1]
        pixels = images.movedim(-1, -3).float().div_(255.0)  # [B, 3, S, S]
        noise = self.corruption_noise(b, size, generator).to(images.device)
        if self.config.corruption == "masking":
            noisy = pixels.masked_fill(noise, 0.0)
        else:
            noisy = (pixels + noise).clamp_(0.0, 1.0)
        return normalise(noisy), normalise(pixels)

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        return build_encoder_decoder(backbone, self.image_size, out_channels=3, out_size=self.image_size)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.float(), target.float())

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        return psnr_sum(output, target)

    def _corruption_label(self) -> str:
        if self.config.corruption == "masking":
            return f"input: {round(100 * self.config.mask_fraction)}% black"
        return f"input: noise {self.config.noise_std:g}"

    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        tiles = [labelled_tile(to_image(inputs), self._corruption_label())]
        if output is None:
            tiles.append(labelled_tile(placeholder_tile(to_image(inputs), "not trained\nyet", TILE),
                                       "output"))
        else:
            psnr = float(psnr_per_image(output[None], target[None])[0])
            tiles.append(labelled_tile(to_image(output), f"output {psnr:.1f} dB"))
        tiles.append(labelled_tile(to_image(target), "clean (target)"))
        return hstack(tiles)

    def caption(self, target: torch.Tensor) -> str:
        if self.config.corruption == "masking":
            return f"{round(100 * self.config.mask_fraction)}% of pixels black"
        return f"noise of size {self.config.noise_std:g}"

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        if self.config.corruption == "masking":
            damage = f"with {round(100 * self.config.mask_fraction)}% of its pixels, chosen at random, set to black"
        else:
            damage = (f"with random noise added (standard deviation {self.config.noise_std:g} on a 0 to 1 "
                      "brightness scale)")
        return f"The network sees the image {damage} and must give back the clean image."
