"""MoCo v2: contrast a query view against its key view and a queue of earlier keys.

He, Fan, Wu, Xie and Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020, with the improvements of Chen, Fan, Girshick and He, "Improved Baselines with Momentum
Contrastive Learning" (MoCo v2), arXiv 2003.04297, 2020. One view of every image is the query ``q``
(backbone + projection MLP, trained by SGD), the other the key ``k`` (a momentum copy of both,
``theta_k <- m * theta_k + (1 - m) * theta_q`` before every training forward, never trained by
gradients). The loss is InfoNCE (MoCo section 3.1): cross-entropy of picking ``k`` among ``k`` and the
``K`` keys of earlier batches in a first-in-first-out queue, by dot product of the L2-normalised vectors
divided by a temperature; after the loss is formed, the batch's keys enter the queue and the oldest
leave. MoCo v2 adds the 2-layer MLP projection (fc-ReLU-fc), blur in the augmentation and a cosine
schedule, with temperature 0.2 (MoCo v2 table 1).

As in the authors' code (``moco/builder.py``), the momentum update and the enqueue happen inside the
model's forward in training mode, so the training loop needs no hook; the queue and its pointer are
registered buffers (saved and resumed with the checkpoint), and the key encoder is a submodule named
``key_encoder`` (not under ``backbone.``, so an export keeps the query backbone only). Validation runs
in eval mode and changes neither.

The paper's recipe is ImageNet-scale (m = 0.999, K = 65,536, batch 256, lr 0.03, 200 epochs). Ours is a
CIFAR-scale one (lightly's CIFAR-10 benchmark): m = 0.99, K = 4,096, temperature 0.2 (the paper's; lightly
uses 0.1), batch 512, SGD lr 0.06 per 128 images (0.24), momentum 0.9, weight decay 5e-4, 200 epochs;
crops of area 0.2 to 1 as in the authors' ``aug_plus``. In a data-parallel run every process enqueues the
keys of all processes, in rank order (the authors' ``concat_all_gather``), so every process holds the same
queue. Not done: the shuffled batch norm of the authors' multi-GPU code (keys here use their own
batch's statistics).

The target a batch carries is its views' augmentation parameters (what the preview draws), not a label.

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslstudio.tasks.base import param
from sslstudio.tasks.contrastive import (CIFAR_OPTIM, TwoViewTask, ViewConfig, frozen_copy, gather_views, mlp,
                                         momentum_update)
from sslstudio.tasks.registry import register_task


@dataclass(frozen=True)
class MoCoConfig(ViewConfig):
    """MoCo v2 settings: a CIFAR-scale recipe (see the module docstring)."""

    min_scale: float = param(0.2, "Random resized crop: smallest area of a view, as a fraction of the image "
                                  "(the authors' MoCo v2 augmentation: 0.2).", min=0.01, max=1.0)
    temperature: float = param(0.2, "InfoNCE temperature (MoCo v2: 0.2).", min=0.01, max=10.0)
    queue_size: int = param(4096, "Keys of earlier batches kept as negatives (ImageNet: 65,536; CIFAR-scale: "
                                  "4,096).", min=1, max=1_000_000)
    key_momentum: float = param(0.99, "Momentum m of the key encoder, theta_k <- m theta_k + (1 - m) theta_q "
                                      "(ImageNet: 0.999; CIFAR-scale: 0.99).", min=0.0, max=1.0)
    proj_hidden: int = param(512, "Hidden width of the projection MLP.", min=8, max=16384)
    proj_dim: int = param(128, "Output size of the projection MLP (MoCo: 128).", min=8, max=16384)


class MoCoHead(nn.Module):
    """Query encoder (``backbone`` + ``projector``), momentum ``key_encoder`` and the queue of keys.

    ``forward([B, 2, 3, S, S])`` returns ``[B, 2d + K]``: the normalised query and key, then the query's
    dot products with the queue as it was before this batch (whose keys it then enqueues, in training mode).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden: int, dim: int, queue_size: int,
                 momentum: float):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp((feature_dim, hidden, dim), bn=False)
        self.key_encoder = frozen_copy(nn.Sequential(backbone, self.projector))
        self.momentum = float(momentum)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def online(self) -> nn.Module:
        """The query encoder as one module, parameter for parameter like ``key_encoder``."""
        return nn.Sequential(self.backbone, self.projector)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Put ``keys`` in the queue in place of the oldest (first in, first out; wraps around)."""
        size = self.queue.shape[0]
        keys = keys[-size:]
        rows = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[rows] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = F.normalize(self.projector(self.backbone(x[:, 0])), dim=1)
        with torch.no_grad():
            if self.training:
                momentum_update(self.key_encoder, self.online(), self.momentum)
            k = F.normalize(self.key_encoder(x[:, 1]), dim=1)
        negatives = q @ self.queue.clone().T.to(q.dtype)
        if self.training:
            self.enqueue(gather_views(k, grad=False)[0])  # every process's keys (the authors' concat_all_gather)
        return torch.cat([q, k.to(q.dtype), negatives], 1)


@register_task("moco")
class MoCoTask(TwoViewTask):
    """Pick each query view's key among a queue of earlier images' keys (InfoNCE, momentum key encoder)."""

    description = "Match a view of an image to its momentum-encoded partner view among a queue of other images"
    paper = ("Chen, Fan, Girshick, He. Improved Baselines with Momentum Contrastive Learning (MoCo v2). "
             "arXiv 2003.04297, 2020")
    config_cls = MoCoConfig
    optim = CIFAR_OPTIM

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        c = self.config
        head = MoCoHead(backbone, feature_dim, c.proj_hidden, c.proj_dim, c.queue_size, c.key_momentum)
        return self.remember(head, c.proj_dim)

    def projections(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.config.proj_dim
        return output[:, :d], output[:, d:2 * d]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """InfoNCE: cross-entropy of the key (logit 0) among the key and the queue, over the temperature."""
        d = self.config.proj_dim
        q, k, negatives = output[:, :d].float(), output[:, d:2 * d].float(), output[:, 2 * d:].float()
        logits = torch.cat([(q * k).sum(1, keepdim=True), negatives], 1) / self.config.temperature
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))

    def render_note(self) -> str:
        return f"queue of {self.config.queue_size:,} keys, m {self.config.key_momentum:g}"

    def explain_how(self) -> str:
        return (f"The second view goes through a slowly following copy of the network, and the first must pick "
                f"it out among {self.config.queue_size:,} views of earlier images.")
