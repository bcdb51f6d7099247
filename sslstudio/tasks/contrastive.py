"""What the two-view tasks share: their losses, their metric, the collapse guard and the task base.

The two-view methods (SimCLR, MoCo v2, SimSiam, BYOL: :mod:`sslstudio.tasks.simclr`,
:mod:`~sslstudio.tasks.moco`, :mod:`~sslstudio.tasks.simsiam`, :mod:`~sslstudio.tasks.byol`, which cite
their papers) make two augmented views of every image (:mod:`sslstudio.tasks.views`) and train the
backbone so that the views of one image map to nearby points.

* Loss: NT-Xent (:func:`nt_xent`, SimCLR's normalised temperature-scaled cross-entropy), MoCo's InfoNCE
  against a queue, or the negative cosine of a prediction and a stopped-gradient target (SimSiam, BYOL).
* Metric (every two-view task): top-1 accuracy of finding the other view of an image among the batch's
  ``2B - 1`` other views by cosine similarity of the L2-normalised projections (:func:`match_accuracy`),
  so chance is ``1 / (2B - 1)``. The held-out figure is the same on the held-out images.
* Collapse guard: the standard deviation over samples of each dimension of the L2-normalised projections,
  averaged over the ``d`` dimensions (:func:`collapse_std`; SimSiam's paper, section 4.1: about
  ``1/sqrt(d)`` for well spread outputs, 0 when every image maps to the same point). Measured each epoch
  on the held-out images (on the training batches when nothing is held out), recorded in the epoch's
  record as ``collapse_std``, with a warning when it falls below ``COLLAPSE_FRACTION / sqrt(d)``
  (:meth:`TwoViewTask.epoch_extra`, which the training loop calls after each epoch's validation).
* The training loop tells the task the run's length and each process's batch before it starts
  (:meth:`TwoViewTask.plan_run`): the chance level and BYOL's EMA schedule depend on them.

The target a two-view batch carries is not a label: it is the views' augmentation parameters
``[B, 2, len(views.FIELDS)]``, what the preview draws under each view; the losses do not read it.
In a data-parallel run (``torchrun``) the negatives are gathered across the processes, as the papers do:
SimCLR's NT-Xent contrasts each process's views against the views of the whole global batch
(:func:`gather_views`, whose gradient reaches every process's own views), and MoCo enqueues the keys of
every process (:func:`gather_views` without gradient), so every process holds the same queue. Only training
batches are gathered; held-out batches are scored per process.

Every default against the papers: docs/fidelity.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sslstudio.tasks.base import OptimConfig, PretextTask, param, to_image
from sslstudio.tasks.render import hstack, labelled_tile
from sslstudio.tasks.views import ViewRecipe, describe, two_views

#: The optimiser recipe of lightly's CIFAR-10 benchmark that SimCLR, MoCo v2 and BYOL share (read in its
#: ``cifar10_benchmark.py``; docs/fidelity.md): SGD at lr 0.06 per 128 images (0.24 at batch 512), momentum 0.9,
#: weight decay 5e-4, 200 epochs; the engine's step schedule stands in for the cosine of long runs.
CIFAR_OPTIM = OptimConfig(epochs=200, batch_size=512, lr=0.24, momentum=0.9, nesterov=False, weight_decay=5e-4,
                          lr_decay=0.1, milestones=(0.5, 0.75))

#: A collapse value below this fraction of ``1/sqrt(d)`` is reported as a collapsed representation.
COLLAPSE_FRACTION = 0.1


# -- gathering across processes ------------------------------------------------------------------
def _world() -> tuple[int, int]:
    """``(rank, world size)`` of the process group, ``(0, 1)`` outside a data-parallel run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherRows(torch.autograd.Function):
    """Every process's rows, concatenated in rank order; the gradient of this process's rows is the sum over
    the processes of the gradients they send back for them (each process's loss reads every row)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...], rank: int) -> torch.Tensor:
        import torch.distributed as dist

        longest = max(sizes)
        padded = x.new_zeros((longest,) + tuple(x.shape[1:]))
        padded[:x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None, None


def gather_views(x: torch.Tensor, grad: bool = True) -> tuple[torch.Tensor, int]:
    """``(rows of every process in rank order, where this process's rows start)``; outside a data-parallel
    run ``(x, 0)``. Processes may hold different numbers of rows. With ``grad``, the loss of every process
    sends its gradient back to the process whose rows it read (SimCLR's global batch); without, the rows are
    constants (MoCo's keys)."""
    import torch.distributed as dist

    rank, world = _world()
    if world == 1:
        return x, 0
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = tuple(int(c) for c in counts)
    if grad:
        rows = _GatherRows.apply(x, sizes, rank)
    else:
        with torch.no_grad():
            rows = _GatherRows.apply(x.detach(), sizes, rank)
    return rows, sum(sizes[:rank])


# -- losses and figures ---------------------------------------------------------------------------
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool = False) -> torch.Tensor:
    """SimCLR's NT-Xent loss of the pairs ``(z1[i], z2[i])``: the mean over the ``2B`` views of the
    cross-entropy of finding the view's partner among the other ``2B - 1`` by cosine / temperature.

    With ``gather`` in a data-parallel run, this process's views are the anchors and the candidates are the
    ``2B`` views of the global batch (every process's, :func:`gather_views`): the mean of the processes'
    losses, and the gradient data-parallel training averages, are those of one process holding the global
    batch (when the processes' batches are equal)."""
    n = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    if gather and _world()[1] > 1:
        a1, start = gather_views(local[:n])
        a2, _ = gather_views(local[n:])
    else:
        a1, a2, start = local[:n], local[n:], 0
    total = a1.shape[0]
    candidates = torch.cat([a1, a2])  # [2N, d]: first views, then second views, of every process
    sim = (local @ candidates.T) / temperature  # [2n, 2N]
    own = torch.cat([torch.arange(n) + start, torch.arange(n) + start + total]).to(local.device)
    sim = sim.masked_fill(F.one_hot(own, 2 * total).bool(), float("-inf"))
    partner = torch.cat([torch.arange(n) + start + total, torch.arange(n) + start]).to(local.device)
    return F.cross_entropy(sim, partner)


def match_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> tuple[float, int]:
    """``(hits, 2B)``: how many of the ``2B`` views have their partner as their most similar other view."""
    n = z1.shape[0]
    if n < 2:
        return 0.0, 0
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T).fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return float((sim.argmax(1) == partner).sum().item()), 2 * n


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, z)``: minus the mean cosine of ``p`` and ``z`` (``z`` is not differentiated)."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()


def collapse_std(z: torch.Tensor) -> float:
    """The mean over dimensions of the per-dimension standard deviation of the L2-normalised rows of ``z``."""
    z = F.normalize(z.float(), dim=1)
    return float(z.std(0, unbiased=False).mean())


def spread_text(figures: dict) -> str | None:
    """One line of an epoch's collapse figures (``collapse_std`` and ``collapse_healthy`` of
    :meth:`TwoViewTask.epoch_extra`), for the command line and the window's log; ``None`` when the epoch has
    none (the pretext tasks)."""
    value, healthy = figures.get("collapse_std"), figures.get("collapse_healthy")
    if value is None or not healthy:
        return None
    return (f"projection spread {value:.4f} ({value / healthy:.0%} of the {healthy:.4f} of well spread "
            f"outputs; collapsed below {COLLAPSE_FRACTION * healthy:.4f})")


class CollapseWatch:
    """Running sums of L2-normalised projections, whose per-dimension standard deviation (averaged over the
    dimensions) is :func:`collapse_std` of every row added."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.n, self.sum, self.sumsq = 0, None, None

    def add(self, z: torch.Tensor) -> None:
        z = F.normalize(z.detach().double(), dim=1)
        s, q = z.sum(0).cpu(), (z * z).sum(0).cpu()
        self.sum = s if self.sum is None else self.sum + s
        self.sumsq = q if self.sumsq is None else self.sumsq + q
        self.n += z.shape[0]

    def value(self) -> float | None:
        if not self.n:
            return None
        mean = self.sum / self.n
        return float((self.sumsq / self.n - mean * mean).clamp(min=0).sqrt().mean())


def mlp(sizes: tuple[int, ...], last_bn: bool = False, bn: bool = True) -> nn.Sequential:
    """Linear layers of ``sizes`` with batch norm (when ``bn``) and ReLU between them (and batch norm after
    the last with ``last_bn``)."""
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        last = k == len(sizes) - 2
        layers.append(nn.Linear(sizes[k], sizes[k + 1], bias=not (bn and (not last or last_bn))))
        if not last:
            layers += ([nn.BatchNorm1d(sizes[k + 1])] if bn else []) + [nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(sizes[k + 1]))
    return nn.Sequential(*layers)


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """``theta_target <- m * theta_target + (1 - m) * theta_online`` for every parameter (buffers are the
    target's own)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(m).add_(o.detach(), alpha=1.0 - m)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters take no gradient (a momentum or target encoder)."""
    import copy

    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


# -- the shared config and task -------------------------------------------------------------------
@dataclass(frozen=True)
class ViewConfig:
    """The augmentation settings every two-view task has (each task sets its recipe's defaults)."""

    min_scale: float = param(0.08, "Random resized crop: smallest area of a view, as a fraction of the image.",
                             min=0.01, max=1.0)
    flip_probability: float = param(0.5, "Probability of mirroring a view left-right.", min=0.0, max=1.0)
    jitter_probability: float = param(0.8, "Probability of colour jitter on a view.", min=0.0, max=1.0)
    brightness: float = param(0.4, "Colour jitter: brightness factor drawn from 1 +- this.", min=0.0, max=1.0)
    contrast: float = param(0.4, "Colour jitter: contrast factor drawn from 1 +- this.", min=0.0, max=1.0)
    saturation: float = param(0.4, "Colour jitter: saturation factor drawn from 1 +- this.", min=0.0, max=1.0)
    hue: float = param(0.1, "Colour jitter: hue shift drawn from +- this (a full turn is 1).", min=0.0, max=0.5)
    grey_probability: float = param(0.2, "Probability of turning a view grey.", min=0.0, max=1.0)
    blur_probability: float = param(0.5, "Probability of a Gaussian blur (sigma 0.1-2 px) on a view.", min=0.0,
                                    max=1.0)
    blur_min_size: int = param(64, "No blur on images smaller than this (lightly's CIFAR-10 recipe has no blur "
                                   "at 32 px).", min=0, max=4096, unit="px")


class TwoViewTask(PretextTask):
    """Base of the two-view tasks: two augmented views per image, matching metric, collapse guard.

    The model's output is ``[B, K, d]``: the projections of the two views in slots 0 and 1 (what the metric
    and the collapse guard read, :meth:`projections`), then whatever the task's loss needs.
    """

    metric_name: ClassVar[str] = "accuracy"
    samples_per_image: ClassVar[int] = 2
    min_image_size: ClassVar[int] = 16
    small_image_policy: ClassVar[str] = "upscale"
    needs_colour: ClassVar[bool] = False

    def __init__(self, config=None, image_size: int = 64):
        super().__init__(config, image_size)
        self._head: nn.Module | None = None
        self._watch = {True: CollapseWatch(), False: CollapseWatch()}  # by the head's training mode
        self.projection_dim: int | None = None
        self.batch_size: int | None = None  # each process's batch of the planned run (:meth:`plan_run`)

    # -- samples --------------------------------------------------------------------------------
    def recipe(self, view: int) -> ViewRecipe:
        """The augmentation of view ``view`` (0 or 1) at this image size."""
        c = self.config
        blur = c.blur_probability if self.image_size >= c.blur_min_size else 0.0
        return ViewRecipe(min_scale=c.min_scale, flip_probability=c.flip_probability,
                          jitter_probability=c.jitter_probability, brightness=c.brightness, contrast=c.contrast,
                          saturation=c.saturation, hue=c.hue, grey_probability=c.grey_probability,
                          blur_probability=blur)

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views ``[B, 2, 3, S, S]`` of every image of a uint8 batch ``[B, S, S, 3]`` and their
        augmentation parameters ``[B, 2, P]`` (:data:`sslstudio.tasks.views.FIELDS`) as the target."""
        return two_views(images, generator, (self.recipe(0), self.recipe(1)))

    # -- scoring --------------------------------------------------------------------------------
    def remember(self, head: nn.Module, projection_dim: int) -> nn.Module:
        """Keep the head (its training mode tells held-out batches from training ones) and its output size."""
        self._head, self.projection_dim = head, int(projection_dim)
        return head

    def projections(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views' projections ``[B, d]`` in the model's output (slots 0 and 1 by default)."""
        return output[:, 0], output[:, 1]

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        z1, z2 = self.projections(output)
        training = bool(self._head.training) if self._head is not None else True
        self._watch[training].add(torch.cat([z1, z2]))
        return match_accuracy(z1, z2)

    def plan_run(self, epochs: int, steps_per_epoch: int, batch_size: int) -> None:
        """What the training loop tells the task about the run before it starts: its length and the images
        in each process's batch (what the matching metric's chance level depends on)."""
        self.batch_size = int(batch_size)

    def chance_level(self, batch_size: int | None = None) -> float | None:
        """``1 / (2B - 1)`` for batches of ``batch_size`` images (default: the planned run's); ``None`` when
        the batch is not known."""
        b = batch_size or self.batch_size
        return 1.0 / (2 * int(b) - 1) if b and b > 1 else None

    def epoch_extra(self, model: nn.Module) -> dict:
        """The epoch's collapse figure (held-out batches, else training ones), reset for the next epoch;
        ``warnings``: a sentence when the representation has collapsed."""
        held_out, training = self._watch[False].value(), self._watch[True].value()
        for watch in self._watch.values():
            watch.reset()
        value = held_out if held_out is not None else training
        if value is None or not self.projection_dim:
            return {}
        healthy = 1.0 / math.sqrt(self.projection_dim)
        out = {"collapse_std": value, "collapse_healthy": healthy}
        if value < COLLAPSE_FRACTION * healthy:
            out["warnings"] = [f"the representation has collapsed: the spread of the normalised projections is "
                               f"{value:.4f}, under a tenth of the {healthy:.4f} of well spread outputs "
                               "(every image maps to nearly the same point); lower the learning rate or "
                               "check the augmentations."]
        return out

    def param_groups(self, model: nn.Module) -> list[dict]:
        """The trainable parameters (a momentum or target encoder is not trained by SGD)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def run_info(self) -> dict:
        return {"views": 2, "projection_dim": self.projection_dim}

    # -- words and pictures ---------------------------------------------------------------------
    def render_note(self) -> str | None:
        """A line the task adds under the pair (MoCo's queue, BYOL's EMA rate); ``None``: nothing."""
        return None

    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        """The two views side by side, each with its augmentation parameters written under it."""
        note = self.render_note()
        solarisation = any(self.recipe(v).solarize_probability > 0 for v in range(2))
        tiles = []
        for v in range(2):
            lines = [f"view {v + 1}"] + describe(target[v], solarisation) + ([note] if note and v == 0 else [])
            tiles.append(labelled_tile(to_image(inputs[v]), "\n".join(lines)))
        return hstack(tiles)

    def caption(self, target: torch.Tensor) -> str:
        t = torch.as_tensor(target).reshape(2, -1)
        areas = [float(t[v, 2] * t[v, 3]) for v in range(2)]
        return f"two views: {areas[0]:.0%} and {areas[1]:.0%} of it"

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        return ("The network sees two views of the same image, each a random crop with its own flip, colours "
                "and blur, and must map them to nearby points. " + self.explain_how())

    def explain_how(self) -> str:
        """One sentence of how the task keeps the views apart from other images (or from collapse)."""
        return "Views of the other images in the batch must land far away."

    def info(self) -> dict:
        out = super().info()
        out["views"] = [dataclasses.asdict(self.recipe(v)) for v in range(2)]
        return out
