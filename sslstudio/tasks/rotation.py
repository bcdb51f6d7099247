"""Rotation prediction (RotNet).

Gidaris, Singh and Komodakis, "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018. Each image is fed at 0, 90, 180 and 270 degrees in the same batch, the
network predicts which of the four rotations was applied (labels 0..3), with a classifier on the
backbone trained by cross-entropy. The paper's recipe (CIFAR-10, section 4.1): SGD with Nesterov
momentum 0.9, batch 128 images (x4 rotations), learning rate 0.1, weight decay 5e-4, 100 epochs,
the rate multiplied by 0.2 after 30, 60 and 80 epochs (here: at 30%, 60% and 80% of the run).

Label ``k`` means the image was rotated by ``k * 90`` degrees counter-clockwise
(``torch.rot90(image, k)`` over the rows and columns, ``numpy.rot90``'s direction).

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from sslstudio.tasks.base import ClassificationTask, OptimConfig, normalise_batch, param, to_image
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.render import hstack, labelled_tile

ANGLES = (0, 90, 180, 270)


@dataclass(frozen=True)
class RotationConfig:
    """Rotation settings. The paper feeds all four rotations of every image in one batch."""

    horizontal_flip: bool = param(True, "Randomly mirror the image left-right before rotating "
                                        "(a mirror keeps 'up' where it is, so labels stay true).")


class RotationHead(nn.Module):
    """Backbone followed by a linear classifier over the four rotations."""

    def __init__(self, backbone: nn.Module, feature_dim: int, classes: int = 4):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(feature_dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # [B, 4, C, H, W] -> [4B, C, H, W]
            x = x.flatten(0, 1)
        return self.classifier(self.backbone(x))


@register_task("rotation")
class RotationTask(ClassificationTask):
    """Predict which of four rotations (0/90/180/270 degrees) was applied to an image."""

    description = "Predict the rotation (0, 90, 180, 270 degrees) applied to an image"
    paper = "Gidaris, Singh, Komodakis. Unsupervised Representation Learning by Predicting Image Rotations. ICLR 2018"
    metric_name = "accuracy"
    config_cls = RotationConfig
    optim = OptimConfig(epochs=100, batch_size=128, lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=5e-4, lr_decay=0.2, milestones=(0.3, 0.6, 0.8))
    samples_per_image = 4
    min_image_size = 8
    small_image_policy = "upscale"
    needs_colour = False
    defences = ()  # none in the paper; the shortcut check blanks the image borders instead

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The four rotations ``[B, 4, 3, S, S]`` of every image of a uint8 batch ``[B, S, S, 3]`` (each
        mirrored first with probability 1/2), labels ``[B, 4]`` = 0..3, on the images' device."""
        if images.shape[1] != images.shape[2]:
            raise ValueError("rotation needs square images (the data pipeline crops them square)")
        if self.config.horizontal_flip:
            flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(2), images)
        rotated = torch.stack([torch.rot90(images, k, dims=(1, 2)) for k in range(4)], dim=1)  # [B, 4, S, S, 3]
        target = torch.arange(4, device=images.device).repeat(images.shape[0], 1)
        return normalise_batch(rotated), target

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        return RotationHead(backbone, feature_dim)

    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        tiles = []
        for k in range(inputs.shape[0]):
            label = f"turned {ANGLES[int(target[k])]}\u00b0"
            colour = (255, 255, 255)
            if output is not None:
                pred = int(output[k].argmax())
                label = f"{ANGLES[int(target[k])]}\u00b0 \u2192 {ANGLES[pred]}\u00b0"
                colour = (120, 230, 120) if pred == int(target[k]) else (255, 120, 120)
            tiles.append(labelled_tile(to_image(inputs[k]), label, colour=colour))
        return hstack(tiles)

    def caption(self, target: torch.Tensor) -> str:
        angles = [f"{ANGLES[int(t)]}\u00b0" for t in torch.as_tensor(target).reshape(-1)]
        if len(angles) == 1:
            return f"turned {angles[0]}"
        return "turned " + ", ".join(angles)

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        angles = [f"{ANGLES[int(t)]}\u00b0" for t in torch.as_tensor(target).reshape(-1)]
        mirror = " It may be mirrored first; a mirror keeps 'up' where it is." if self.config.horizontal_flip else ""
        if len(angles) == 1:
            return (f"The network sees the image turned by {angles[0]} and must say which of the four angles "
                    f"(0\u00b0, 90\u00b0, 180\u00b0, 270\u00b0) it was turned by.{mirror}")
        listed = ", ".join(angles[:-1]) + f" and {angles[-1]}"
        return (f"The network sees the image turned by {listed} ({len(angles)} separate inputs) and must say "
                f"for each which of the four angles it was turned by.{mirror}")
