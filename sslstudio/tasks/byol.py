"""BYOL: an online network predicts a slowly moving target network's projection of the other view.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot, Kavukcuoglu,
Munos and Valko, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020.
The online network (backbone, projection MLP 4096 -> 256, prediction MLP 4096 -> 256) maps one view to
``p``; the target network (backbone and projector, never trained by gradients) maps the other view to
``t``; the loss is ``2 - 2 cos(p, t)`` symmetrised over the two views (section 3.1). After every step the
target follows the online weights, ``xi <- tau * xi + (1 - tau) * theta``, with ``tau`` rising from
``tau_base`` to 1 over training along a cosine, ``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``
(section 3.2). Here the update happens at the start of every training forward (as MoCo's reference code
does), with ``k`` the model's own count of training steps (a buffer, saved and resumed) and ``K`` the run's
steps, which the training loop tells the task (:meth:`ByolTask.plan_run`); where no run is planned
(a preview, a benchmark) ``tau`` stays at ``tau_base``.

The augmentations are asymmetric (table 6): both views take a random resized crop, a flip, colour jitter
(0.4, 0.4, 0.2, 0.1) with probability 0.8 and greyscale with probability 0.2; blur has probability 1.0 in
the first view and 0.1 in the second, solarisation 0 and 0.2. The paper's recipe is ImageNet-scale (LARS,
batch 4096, 1000 epochs, tau_base 0.996); ours is a CIFAR-scale one (lightly's CIFAR-10 benchmark): SGD lr
0.06 per 128 images (0.24 at batch 512), momentum 0.9, weight decay 5e-4, 200 epochs, tau_base 0.99, blur
only from 64 px.

The target a batch carries is its views' augmentation parameters (what the preview draws), not a label.

Every default against the paper and the released code: docs/fidelity.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslstudio.tasks.base import param
from sslstudio.tasks.contrastive import (CIFAR_OPTIM, TwoViewTask, ViewConfig, frozen_copy, mlp, momentum_update)
from sslstudio.tasks.registry import register_task
from sslstudio.tasks.views import ViewRecipe


def target_rate(tau_base: float, step: int, total: int) -> float:
    """BYOL's cosine schedule of the target's rate: ``tau_base`` at step 0, 1 at step ``total``."""
    if total <= 0:
        return float(tau_base)
    k = min(max(step, 0), total)
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * k / total) + 1.0) / 2.0


@dataclass(frozen=True)
class ByolConfig(ViewConfig):
    """BYOL settings: the paper's asymmetric augmentations, a CIFAR-scale optimisation recipe."""

    saturation: float = param(0.2, "Colour jitter: saturation factor drawn from 1 +- this (BYOL: 0.2).", min=0.0,
                              max=1.0)
    blur_probability: float = param(1.0, "Probability of a Gaussian blur on the first view (BYOL: 1.0).", min=0.0,
                                    max=1.0)
    blur_probability_2: float = param(0.1, "Probability of a Gaussian blur on the second view (BYOL: 0.1).",
                                      min=0.0, max=1.0)
    solarize_probability: float = param(0.0, "Probability of solarising the first view (BYOL: 0).", min=0.0,
                                        max=1.0)
    solarize_probability_2: float = param(0.2, "Probability of solarising the second view (BYOL: 0.2).", min=0.0,
                                          max=1.0)
    tau_base: float = param(0.99, "The target network's EMA rate at the start; it rises to 1 along a cosine "
                                  "(ImageNet: 0.996; CIFAR-scale: 0.99).", min=0.0, max=1.0)
    proj_hidden: int = param(4096, "Hidden width of the projection and prediction MLPs (BYOL: 4096).", min=8,
                             max=16384)
    proj_dim: int = param(256, "Output size of the projection and prediction MLPs (BYOL: 256).", min=8,
                          max=16384)


class ByolHead(nn.Module):
    """Online network (``backbone``, ``projector``, ``predictor``) and its EMA ``target`` (backbone + projector).

    ``forward([B, 2, 3, S, S])`` returns ``[B, 6, d]``: the online projections ``z1, z2``, the predictions
    ``p1, p2`` and the target projections ``t1, t2`` (computed without gradients).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden: int, dim: int, tau_base: float):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp((feature_dim, hidden, dim))
        self.predictor = mlp((dim, hidden, dim))
        self.target = frozen_copy(nn.Sequential(backbone, self.projector))
        self.tau_base = float(tau_base)
        self.total_steps = 0  # the run's training steps (0: not known, tau stays at tau_base)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def rate(self) -> float:
        """The EMA rate of the next update."""
        return target_rate(self.tau_base, int(self.step), self.total_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        views = x.flatten(0, 1)
        if self.training:
            momentum_update(self.target, nn.Sequential(self.backbone, self.projector), self.rate())
            self.step += 1
        z = self.projector(self.backbone(views))
        p = self.predictor(z)
        with torch.no_grad():
            t = self.target(views)
        return torch.cat([z.view(b, 2, -1), p.view(b, 2, -1), t.view(b, 2, -1).to(z.dtype)], 1)


@register_task("byol")
class ByolTask(TwoViewTask):
    """Predict the target network's projection of one view from the other (no negatives, EMA target)."""

    description = "Predict a slowly moving copy's embedding of one augmented view from another view of the image"
    paper = ("Grill, Strub, Altché, Tallec, Richemond, et al. Bootstrap Your Own Latent: A New Approach to "
             "Self-Supervised Learning. NeurIPS 2020")
    config_cls = ByolConfig
    optim = CIFAR_OPTIM

    def __init__(self, config=None, image_size: int = 64):
        super().__init__(config, image_size)
        self.total_steps = 0

    def recipe(self, view: int) -> ViewRecipe:
        base, c = super().recipe(view), self.config
        blur = (c.blur_probability, c.blur_probability_2)[view] if self.image_size >= c.blur_min_size else 0.0
        solar = (c.solarize_probability, c.solarize_probability_2)[view]
        return ViewRecipe(**{**base.__dict__, "blur_probability": blur, "solarize_probability": solar})

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        c = self.config
        head = ByolHead(backbone, feature_dim, c.proj_hidden, c.proj_dim, c.tau_base)
        head.total_steps = self.total_steps
        return self.remember(head, c.proj_dim)

    def plan_run(self, epochs: int, steps_per_epoch: int, batch_size: int) -> None:
        """The run's length, for the EMA schedule (and the batch, for the chance level)."""
        super().plan_run(epochs, steps_per_epoch, batch_size)
        self.total_steps = int(epochs) * int(steps_per_epoch)
        if self._head is not None:
            self._head.total_steps = self.total_steps

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``2 - 2 cos(p1, t2)`` plus ``2 - 2 cos(p2, t1)``, averaged over the batch."""
        _, _, p1, p2, t1, t2 = output.float().unbind(1)
        t1, t2 = t1.detach(), t2.detach()
        return (4 - 2 * F.cosine_similarity(p1, t2, dim=-1) - 2 * F.cosine_similarity(p2, t1, dim=-1)).mean()

    def render_note(self) -> str:
        if self._head is not None:
            return f"target EMA rate {self._head.rate():.4f}"
        return f"target EMA rate {self.config.tau_base:g}, rising to 1"

    def explain_how(self) -> str:
        return "A slowly following copy of the network encodes the other view, and no other images are pushed away."
