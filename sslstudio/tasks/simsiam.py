"""SimSiam: predict one view's projection from the other's, with a stop-gradient and no negatives.

Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021. Two views of every image
go through the same encoder ``f`` (backbone + projection MLP) to ``z1, z2``; a prediction MLP ``h``
maps each to ``p1, p2``; the loss is ``D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`` with ``D`` the negative
cosine similarity and ``sg`` the stop-gradient (section 3, Algorithm 1): no negative pairs, no
momentum encoder. The stop-gradient is what keeps it from collapsing (section 4.1, where the
per-dimension standard deviation of the normalised output, about ``1/sqrt(d)`` when healthy and 0 when
collapsed, is the measure this code logs every epoch as ``collapse_std``).

Augmentations (section 4.1 / appendix A: MoCo v2's): random resized crop of area 0.2 to 1, flip, colour
jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8, greyscale 0.2, blur on ImageNet; the paper's CIFAR-10
recipe (appendix D): a ResNet-18, a 2-layer projection MLP of 2048 (BN on every layer, also the output),
a prediction MLP 2048 -> 512 -> 2048, SGD lr 0.03 x B/256 (0.06 at batch 512), momentum 0.9, weight
decay 5e-4, 800 epochs with cosine decay, no blur. Ours is that recipe (blur only from 64 px); the
prediction MLP's learning rate follows the schedule like the rest (the paper keeps it fixed).

The target a batch carries is its views' augmentation parameters (what the preview draws), not a label.

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslstudio.tasks.base import OptimConfig, param
from sslstudio.tasks.contrastive import TwoViewTask, ViewConfig, mlp, negative_cosine
from sslstudio.tasks.registry import register_task


@dataclass(frozen=True)
class SimSiamConfig(ViewConfig):
    """SimSiam settings: the paper's CIFAR-10 recipe (appendix D)."""

    min_scale: float = param(0.2, "Random resized crop: smallest area of a view, as a fraction of the image "
                                  "(the paper: 0.2).", min=0.01, max=1.0)
    proj_dim: int = param(2048, "Width of the projection MLP (hidden and output; the paper: 2048).", min=8,
                          max=16384)
    proj_layers: int = param(2, "Layers of the projection MLP (the paper: 3 on ImageNet, 2 on CIFAR-10).", min=2,
                             max=3)
    pred_hidden: int = param(512, "Hidden width of the prediction MLP (the paper's bottleneck: 512).", min=8,
                             max=16384)


class SimSiamHead(nn.Module):
    """Backbone + projector + predictor on both views: ``[B, 2, 3, S, S] -> [B, 4, d]`` = ``z1, z2, p1, p2``."""

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int, layers: int, pred_hidden: int):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp((feature_dim,) + (dim,) * layers, last_bn=True)
        self.predictor = mlp((dim, pred_hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        z = self.projector(self.backbone(x.flatten(0, 1)))
        p = self.predictor(z)
        return torch.cat([z.view(b, 2, -1), p.view(b, 2, -1)], 1)


@register_task("simsiam")
class SimSiamTask(TwoViewTask):
    """Predict each view's projection from the other's, through a stop-gradient (no negatives)."""

    description = "Predict one augmented view's embedding from another view of the same image"
    paper = "Chen, He. Exploring Simple Siamese Representation Learning. CVPR 2021"
    config_cls = SimSiamConfig
    optim = OptimConfig(epochs=800, batch_size=512, lr=0.06, momentum=0.9, nesterov=False, weight_decay=5e-4,
                        lr_decay=0.1, milestones=(0.5, 0.75))

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        c = self.config
        head = SimSiamHead(backbone, feature_dim, c.proj_dim, c.proj_layers, c.pred_hidden)
        return self.remember(head, c.proj_dim)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2``: no gradient reaches the projections ``z``."""
        z1, z2, p1, p2 = output.unbind(1)
        return negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2

    def explain_how(self) -> str:
        return "It predicts each view's point from the other, with no other images to push away."
