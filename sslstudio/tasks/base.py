"""The pretext-task protocol shared by every task.

A task is a small module with a frozen config dataclass (the paper's defaults, cited in the
task's docstring) and a registered class that answers five questions: what a training batch is
(:meth:`PretextTask.make_batch`: the one implementation of the pretext transform, batched on the
training device; previews and bench call it too), what sits on the backbone
(:meth:`PretextTask.build_head`), how it is scored (:meth:`PretextTask.loss`,
:meth:`PretextTask.metric`), how a sample looks to a person (:meth:`PretextTask.render`, one item
of a batch, with :meth:`PretextTask.caption` and :meth:`PretextTask.explain` in words) and what
it needs from an image (``min_image_size``, ``needs_colour``, ``small_image_policy``).

The config dataclass is also what a form is made from: each field carries its help text and range
in ``field.metadata`` (see :func:`param`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sslstudio.errors import ConfigError
# Inputs are normalised with the ImageNet statistics (defined once, in sslstudio.models.normalise)
# so that ImageNet-initialised backbones see what they were trained on; every backbone uses the
# same normalisation. The names are re-exported here for the tasks and the evaluation.
from sslstudio.models.normalise import (MEAN, STD, normalise, normalise_batch, to_image,  # noqa: F401
                                        to_tensor)
from sslstudio.settings import check_settings
from sslstudio.settings import param as settings_param


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None, **more: Any) -> Any:
    """A config field with its help text and allowed range (what a settings form shows).

    The same metadata keys as every declared setting (:func:`sslstudio.settings.param`, which also
    takes ``min_exclusive`` / ``max_exclusive`` / ``flag``)."""
    return settings_param(default, help, min=min, max=max, choices=choices, **more)


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation settings of a task (the paper's recipe); every field can be overridden."""

    epochs: int = param(100, "Training epochs.", min=1, max=10_000)
    batch_size: int = param(128, "Source images per batch.", min=1, max=65_536)
    lr: float = param(0.1, "Peak learning rate.", min=0.0, max=10.0)
    momentum: float = param(0.9, "SGD momentum.", min=0.0, max=0.999)
    nesterov: bool = param(True, "Nesterov momentum.")
    weight_decay: float = param(5e-4, "L2 weight decay.", min=0.0, max=1.0)
    lr_decay: float = param(0.2, "Step schedule: multiply the rate by this at each milestone.",
                            min=0.0, max=1.0)
    milestones: tuple[float, ...] = param((0.3, 0.6, 0.8),
                                          "Step schedule: milestones as fractions of the run.")


def config_fields(config_cls: type) -> list[dict]:
    """Describe a config dataclass's fields (name, type, default, help, range) for forms and docs."""
    out = []
    for f in dataclasses.fields(config_cls):
        out.append({"name": f.name, "type": f.type if isinstance(f.type, str) else f.type.__name__,
                    "default": f.default, **{k: v for k, v in f.metadata.items()}})
    return out


def validate_config(config: Any) -> None:
    """Check every field against its declared range; raise :class:`ConfigError` with a sentence."""
    check_settings(config, name=lambda f: f"{type(config).__name__}.{f.name}")


def make_config(config_cls: type, options: dict | None) -> Any:
    """Build a task config from ``options`` (unknown names are a clear error)."""
    options = dict(options or {})
    names = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {config_cls.__name__}; "
                          f"known: {', '.join(sorted(names))}.")
    for key, value in list(options.items()):
        default = names[key].default
        if isinstance(default, tuple) and isinstance(value, list):
            options[key] = tuple(value)
    config = config_cls(**options)
    validate_config(config)
    return config


@dataclass(frozen=True)
class Defence:
    """A defence a task declares against a shortcut (a trivial cue that would answer the pretext
    question without learning what it is meant to teach), next to its settings.

    Attributes:
        name: Short name (``"gap"``).
        description: One sentence: what it does and which shortcut it closes.
        off: The task-setting overrides that switch it off (``{"gap_fraction": 0.0}``); the shortcut
            check (``sslstudio explore``) measures the trained model with and without them.
    """

    name: str
    description: str
    off: dict


@dataclass
class EpochPlan:
    """What :meth:`PretextTask.begin_epoch` tells the loop.

    Attributes:
        order: Item indices for the epoch in the order they are drawn (``None``: a seeded shuffle
            of all items). DeepCluster samples uniformly over its clusters this way.
        info: Figures to record with the epoch (e.g. DeepCluster's NMI between assignments).
    """

    order: np.ndarray | None = None
    info: dict = dataclasses.field(default_factory=dict)


class PretextTask:
    """Base class of a pretext task. Subclasses set the class attributes and override the methods.

    Attributes:
        name: Registry name (``sslstudio tasks`` lists it).
        description: One line saying what the network learns to predict.
        paper: Short citation of the paper the task follows.
        metric_name: ``"accuracy"`` (classification tasks) or ``"psnr"`` (reconstruction).
        config_cls: The frozen config dataclass with the paper's defaults.
        optim: The paper's optimisation recipe (:class:`OptimConfig`).
        samples_per_image: Network inputs made from one source image (rotation: 4).
        min_image_size: Smallest source side (pixels) the task can use as it is.
        small_image_policy: ``"upscale"`` or ``"skip"`` for sources smaller than that.
        needs_colour: Whether greyscale sources make no sense for the task.
        defences: The :class:`Defence` s the task declares against shortcuts (none by default).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    metric_name: ClassVar[str] = "accuracy"
    config_cls: ClassVar[type] = object
    optim: ClassVar[OptimConfig] = OptimConfig()
    samples_per_image: ClassVar[int] = 1
    min_image_size: ClassVar[int] = 8
    small_image_policy: ClassVar[str] = "upscale"
    needs_colour: ClassVar[bool] = False
    defences: ClassVar[tuple[Defence, ...]] = ()

    def __init__(self, config: Any = None, image_size: int = 64):
        self.config = config if config is not None else self.config_cls()
        validate_config(self.config)
        if image_size < self.min_image_size:
            raise ConfigError(f"the {self.name} task needs images of at least {self.min_image_size} px; "
                              f"image size {image_size} is too small.")
        self.image_size = int(image_size)

    # -- the five questions -------------------------------------------------------------------
    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, target)`` of a batch of items, made on the items' device: the task's one transform.

        Args:
            images: The batch's items from :meth:`prepare` (uint8 ``[B, S, S, 3]`` images for most
                tasks), already on the training device.
            generator: A CPU generator seeded from the run seed, epoch, step (and rank): all the
                batch's randomness comes from it, so a batch is a function of those numbers.
            index: int64 ``[B]`` positions of the items in :meth:`prepare`'s items, on the
                items' device (Exemplar-CNN's labels are these; DeepCluster looks its labels up).

        Returns:
            Tensors whose leading dimension is the item: sample ``b`` is ``(inputs[b], target[b])``,
            what :meth:`render` draws.
        """
        raise NotImplementedError

    def build_head(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        """The trainable model: the backbone (as submodule ``backbone``) plus the task head."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        """Return ``(sum, count)`` so that batches can be aggregated exactly."""
        raise NotImplementedError

    def render(self, inputs: torch.Tensor, target: torch.Tensor,
               output: torch.Tensor | None = None) -> Image.Image:
        """Draw one sample ``(inputs[b], target[b])`` of a batch (and optionally the model's prediction
        ``output[b]``) with its label, for a person."""
        raise NotImplementedError

    # -- words for a person ---------------------------------------------------------------------
    def caption(self, target: torch.Tensor) -> str:
        """A few words naming sample ``target[b]``'s label (``"turned 90°"``, ``"cluster 3"``): what the
        preview writes under its thumbnail. Default: ``"class k"`` for one integer label, else the task."""
        t = torch.as_tensor(target).reshape(-1)
        if t.numel() == 1 and not t.is_floating_point():
            return f"class {int(t[0])}"
        return f"{self.name} sample"

    def explain(self, inputs: torch.Tensor, target: torch.Tensor) -> str:
        """One or two plain sentences for a person about sample ``(inputs[b], target[b])``: what the network
        sees and what it must answer. Default: from :attr:`description`."""
        what = self.description[:1].lower() + self.description[1:]
        return f"The network sees this input and must {what.rstrip('.')}."

    # -- optional hooks (the defaults suit tasks whose samples depend on one image only) -------
    def prepare(self, images: np.ndarray, seed: int) -> np.ndarray:
        """Called once before training with every decoded training image (uint8 [N, S, S, 3]).

        Returns the items the training set indexes: the images themselves by default;
        Exemplar-CNN returns its seed patches. A task may also compute statistics of the user's
        images here (colorization's ab prior) or fixed sets (jigsaw's permutations). Must be
        deterministic for ``seed`` so that a resumed run prepares the same things.
        """
        return images

    def holdout_items(self, train_items: np.ndarray, holdout_images: np.ndarray) -> np.ndarray | None:
        """Items on which the held-out metric is measured (``None``: the task has none)."""
        return holdout_images

    def begin_epoch(self, model: nn.Module, items: np.ndarray, epoch: int, device: torch.device,
                    optimizer: torch.optim.Optimizer, seed: int) -> "EpochPlan":
        """Called before each training epoch (DeepCluster clusters here). Returns the epoch's plan."""
        return EpochPlan()

    def param_groups(self, model: nn.Module) -> list[dict]:
        """The SGD optimiser's parameter groups for ``model`` (what :meth:`build_head` made).

        Each group is ``{"params": [...]}`` plus any SGD options in which it differs from the run's
        settings (DeepCluster trains its classifier without momentum). The first group's learning
        rate is the one reported. Default: one group of every parameter.
        """
        return [{"params": list(model.parameters())}]

    def begin_preview(self, items: np.ndarray, seed: int) -> None:
        """Called by the preview after :meth:`prepare`, before :meth:`make_batch` (DeepCluster clusters here)."""

    def render_preview(self, images: np.ndarray, items: np.ndarray, index: np.ndarray, inputs: torch.Tensor,
                       target: torch.Tensor, seed: int) -> "Image.Image | None":
        """A whole preview grid drawn by the task itself from the batch the preview made.

        Args:
            images: The decoded source images; ``items``: what :meth:`prepare` made of them;
            index: the batch's positions in ``items``; inputs, target: :meth:`make_batch`'s batch
                (on the CPU); seed: the preview's seed.

        ``None`` (the default): the preview tiles :meth:`render` of every sample of the batch.
        """
        return None

    def shared_state(self):
        """State that :meth:`begin_epoch` changes and samples depend on (DeepCluster's labels).

        In a data-parallel run every process calls :meth:`begin_epoch`; rank 0's shared state is
        then sent to the others with :meth:`load_shared_state`, so that no process drifts.
        ``None`` (the default): nothing to share.
        """
        return None

    def load_shared_state(self, state) -> None:
        """Take over rank 0's :meth:`shared_state`."""

    def run_info(self) -> dict:
        """Figures recorded in ``config.json`` and ``summary.json`` (e.g. jigsaw's minimal Hamming distance)."""
        return {}

    def save_artifacts(self, folder) -> list:
        """Write what a run must keep besides weights (e.g. the jigsaw permutation set); return the paths."""
        return []

    # -- helpers ------------------------------------------------------------------------------
    def info(self) -> dict:
        """What ``sslstudio tasks --json`` prints about the task."""
        return {"name": self.name, "description": self.description, "paper": self.paper,
                "metric": self.metric_name, "samples_per_image": self.samples_per_image,
                "min_image_size": self.min_image_size, "small_image_policy": self.small_image_policy,
                "needs_colour": self.needs_colour,
                "config": [{k: v for k, v in f.items() if k != "type"} | {"type": str(f["type"])}
                           for f in config_fields(self.config_cls)],
                "optim": dataclasses.asdict(self.optim)}


class ClassificationTask(PretextTask):
    """A task scored by cross-entropy and top-1 accuracy over integer labels of any shape.

    Labels below zero (e.g. an image DeepCluster has not assigned yet) carry no loss and are not counted.
    """

    metric_name: ClassVar[str] = "accuracy"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.float(), target.reshape(-1), ignore_index=-1)

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        t = target.reshape(-1)
        valid = t >= 0
        return float((output.argmax(1)[valid] == t[valid]).sum().item()), int(valid.sum().item())
