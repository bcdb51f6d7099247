"""SimCLR: contrast two augmented views of each image against the other images of the batch.

Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Every image of a batch of B is augmented twice (random resized crop,
flip, colour jitter with probability 0.8, greyscale with probability 0.2, Gaussian blur: section 3 and
appendix A); backbone and a projection MLP (here Linear-BN-ReLU-Linear, 512 -> 128) map each of the
2B views to ``z``, and the NT-Xent loss (section 2.1: cross-entropy of finding a view's partner among
the other 2B - 1 views by cosine similarity / temperature, averaged over all 2B views) pulls the two
views of an image together and pushes the others apart.

The paper's recipe is ImageNet-scale (batch 4096, LARS, temperature 0.1 to 0.5, 100-800 epochs); its
CIFAR-10 appendix (B.9) drops the blur. Ours is the CIFAR-10 recipe of lightly's benchmark
(``benchmarks/cifar10_benchmark.py``): SGD, lr 0.06 per 128 images (0.24 at batch 512), momentum 0.9,
weight decay 5e-4, batch 512, 200 epochs with cosine decay, temperature 0.5, colour jitter of strength
0.5 (brightness, contrast, saturation 0.4, hue 0.1), no blur at 32 px; the engine's schedule is
warm-up + cosine for short runs and its step schedule for 30 epochs or more, so the step schedule
below stands in for the cosine of long runs.

In a data-parallel run the negatives are the whole global batch, as in the paper (section 2.2: the
negatives are aggregated over all devices): each process's views are contrasted against every
process's views, and the gradient of each process's loss reaches the views it read
(:func:`~sslstudio.tasks.contrastive.gather_views`). Not done: the paper's global batch norm (the
projection's batch norm uses each process's own batch).

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslstudio.tasks.base import param
from sslstudio.tasks.contrastive import CIFAR_OPTIM, TwoViewTask, ViewConfig, mlp, nt_xent
from sslstudio.tasks.registry import register_task


@dataclass(frozen=True)
class SimCLRConfig(ViewConfig):
    """SimCLR settings: lightly's CIFAR-10 recipe (see the module docstring)."""

    temperature: float = param(0.5, "NT-Xent temperature (lightly's CIFAR-10 benchmark: 0.5; solo-learn: 0.2).",
                               min=0.01, max=10.0)
    proj_hidden: int = param(512, "Hidden width of the projection MLP.", min=8, max=16384)
    proj_dim: int = param(128, "Output size of the projection MLP (the paper: 128).", min=8, max=16384)


class SimCLRHead(nn.Module):
    """Backbone + projection MLP, applied to both views in one pass: ``[B, 2, 3, S, S] -> [B, 2, d]``."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden: int, out: int):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp((feature_dim, hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        z = self.projector(self.backbone(x.flatten(0, 1)))
        return z.view(b, 2, -1)


@register_task("simclr")
class SimCLRTask(TwoViewTask):
    """Tell the two views of an image apart from the views of the other images (NT-Xent)."""

    description = "Recognise which two augmented views come from the same image among the batch"
    paper = ("Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive Learning of Visual "
             "Representations. ICML 2020")
    config_cls = SimCLRConfig
    optim = CIFAR_OPTIM

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        c = self.config
        return self.remember(SimCLRHead(backbone, feature_dim, c.proj_hidden, c.proj_dim), c.proj_dim)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        training = self._head is None or self._head.training  # held-out batches are scored per process
        return nt_xent(output[:, 0], output[:, 1], self.config.temperature, gather=training)
