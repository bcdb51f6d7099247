"""Convolutional backbones whose ``state_dict`` uses torchvision's own key names.

A :class:`Backbone` registers torchvision's submodules directly as its
children, so ``backbone.state_dict()`` holds exactly torchvision's keys minus
the classifier (``fc.*`` for ResNets, ``classifier.*`` for AlexNet/VGG). An
exported ``backbone.pt`` therefore loads into ``torchvision.models.<arch>()``
with ``strict=False`` and only the classifier reported missing.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from sslstudio.errors import ConfigError
from sslstudio.models.archs import ARCHS, list_archs, resolve_arch
from sslstudio.models.normalise import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ALEXNET_STAGE_END",
    "Backbone",
    "RESNET_STAGES",
    "VGG16_STAGE_END",
    "arch_stages",
    "backbone_metadata",
    "build_backbone",
    "list_archs",
    "resolve_arch",
]

#: Stages of the ResNets (their residual stages), shallow to deep.
RESNET_STAGES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
#: AlexNet / VGG16 stages, shallow to deep: index (inclusive) in ``features`` where each ends.
ALEXNET_STAGE_END: dict[str, int] = {"conv1": 1, "conv2": 4, "conv3": 7, "conv4": 9, "conv5": 11}
VGG16_STAGE_END: dict[str, int] = {"block1": 4, "block2": 9, "block3": 16, "block4": 23, "block5": 30}
# the old private names, used by the code below
_RESNET_STAGES = RESNET_STAGES
_ALEXNET_STAGE_END = ALEXNET_STAGE_END
_VGG16_STAGE_END = VGG16_STAGE_END


def arch_stages(arch: str) -> list[str]:
    """Return the stage names of ``arch`` (what :meth:`Backbone.stage_names` gives), without
    building the network.

    Args:
        arch: One of :func:`list_archs`.

    Raises:
        ConfigError: If ``arch`` is unknown.
    """
    tv_arch = resolve_arch(arch)
    if tv_arch.startswith("resnet"):
        return list(RESNET_STAGES)
    if tv_arch == "alexnet":
        return list(ALEXNET_STAGE_END)
    if tv_arch == "vgg16":
        return list(VGG16_STAGE_END)
    return Backbone(arch).stage_names()


class Backbone(nn.Module):
    """A torchvision CNN without its classifier, returning pooled features.

    Attributes:
        arch: The sslstudio architecture name (e.g. ``"resnet18_small"``).
        torchvision_arch: The torchvision model it is built from (e.g. ``"resnet18"``).
        feature_dim: Size of the feature vector returned by :meth:`forward`.
        load_report: The report of the last weights loaded by
            :func:`build_backbone` (see :func:`sslstudio.models.load_into_backbone`),
            or ``None`` for a random initialisation.
    """

    arch: str
    torchvision_arch: str
    feature_dim: int

    def __init__(self, arch: str) -> None:
        """Build the backbone with torchvision's default random initialisation.

        Args:
            arch: One of :func:`list_archs`.

        Raises:
            ConfigError: If ``arch`` is unknown.
        """
        super().__init__()
        tv_arch = resolve_arch(arch)
        self.arch = arch
        self.torchvision_arch = tv_arch
        self.load_report: dict | None = None
        tv = torchvision.models.get_model(tv_arch, weights=None)
        if tv_arch.startswith("resnet"):
            if arch == "resnet18_small":
                conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
                nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
                tv.conv1 = conv1
                tv.maxpool = nn.Identity()
            self.conv1 = tv.conv1
            self.bn1 = tv.bn1
            self.relu = tv.relu
            self.maxpool = tv.maxpool
            self.layer1 = tv.layer1
            self.layer2 = tv.layer2
            self.layer3 = tv.layer3
            self.layer4 = tv.layer4
            self._stage_names = list(_RESNET_STAGES)
            self.feature_dim = int(tv.fc.in_features)
        else:
            self.features = tv.features
            ends = _ALEXNET_STAGE_END if tv_arch == "alexnet" else _VGG16_STAGE_END
            self._stage_end = dict(ends)
            self._stage_names = list(ends)
        self._channels = {s: self._infer_channels(s) for s in self._stage_names}
        if not tv_arch.startswith("resnet"):
            self.feature_dim = self._channels[self._stage_names[-1]]

    def _infer_channels(self, stage: str) -> int:
        if self.torchvision_arch.startswith("resnet"):
            layer = getattr(self, stage)
            last_block = layer[-1]
            last_bn = getattr(last_block, "bn3", None) or last_block.bn2
            return int(last_bn.num_features)
        convs = [m for m in self.features[: self._stage_end[stage] + 1] if isinstance(m, nn.Conv2d)]
        return int(convs[-1].out_channels)

    def stage_names(self) -> list[str]:
        """Return the names of the intermediate feature maps, shallow to deep.

        ResNets: ``layer1``..``layer4``. AlexNet: ``conv1``..``conv5`` (after
        each conv's ReLU). VGG16: ``block1``..``block5`` (after each max-pool).

        Returns:
            The stage names accepted by :meth:`forward_stage`.
        """
        return list(self._stage_names)

    def _check_stage(self, stage: str) -> None:
        if stage not in self._stage_names:
            raise ConfigError(
                f"Unknown stage {stage!r} for {self.arch}; choose one of: "
                f"{', '.join(self._stage_names)}."
            )

    def stage_channels(self, stage: str) -> int:
        """Return the number of channels of the feature map at ``stage``.

        Args:
            stage: One of :meth:`stage_names`.

        Returns:
            The channel count.

        Raises:
            ConfigError: If ``stage`` is unknown.
        """
        self._check_stage(stage)
        return self._channels[stage]

    def forward_stage(self, x: Tensor, stage: str) -> Tensor:
        """Return the feature map at ``stage``, computing only the layers needed.

        Args:
            x: Images ``[N, 3, H, W]``.
            stage: One of :meth:`stage_names`.

        Returns:
            The feature map ``[N, C, H', W']``.

        Raises:
            ConfigError: If ``stage`` is unknown.
        """
        self._check_stage(stage)
        if self.torchvision_arch.startswith("resnet"):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for name in _RESNET_STAGES:
                x = getattr(self, name)(x)
                if name == stage:
                    break
            return x
        end = self._stage_end[stage]
        for i in range(end + 1):
            x = self.features[i](x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Return globally average-pooled features of the deepest stage.

        For AlexNet this is the last conv map after its ReLU (before the final
        max-pool, so small images work); for VGG16 the map after the last max-pool.

        Args:
            x: Images ``[N, 3, H, W]``.

        Returns:
            Features ``[N, feature_dim]``.
        """
        fmap = self.forward_stage(x, self._stage_names[-1])
        return torch.flatten(fmap.mean(dim=(2, 3)), 1)

    def extra_repr(self) -> str:  # noqa: D102 - nn.Module hook
        return f"arch={self.arch!r}, feature_dim={self.feature_dim}"


def backbone_metadata(backbone: Backbone) -> dict[str, Any]:
    """Describe a backbone in JSON-serialisable form.

    Args:
        backbone: The backbone to describe.

    Returns:
        ``{"arch", "torchvision_arch", "feature_dim", "stages", "stage_channels"}``.
    """
    return {
        "arch": backbone.arch,
        "torchvision_arch": backbone.torchvision_arch,
        "feature_dim": int(backbone.feature_dim),
        "stages": backbone.stage_names(),
        "stage_channels": {s: backbone.stage_channels(s) for s in backbone.stage_names()},
    }


def build_backbone(arch: str, weights: str | os.PathLike[str] | None = None, trust_code: bool = False) -> Backbone:
    """Build a backbone, optionally with pretrained weights.

    Args:
        arch: One of :func:`list_archs`.
        weights: ``None`` for torchvision's random initialisation (seed it with
            ``torch.manual_seed``), ``"imagenet"`` for torchvision's ImageNet
            weights (from the torch hub cache, see
            :func:`sslstudio.models.imagenet_state_dict`), or a path to a
            ``.pt``/``.pth``/``.safetensors`` weights file.
        trust_code: Accept a TorchScript archive as the weights file (opening one runs code from
            it; see :func:`sslstudio.models.load_weights_file`).

    Returns:
        The backbone, in training mode, on the CPU. ``backbone.load_report``
        tells what was loaded; tensors that could not be loaded (e.g. the 3x3
        ``conv1`` of ``resnet18_small`` with ImageNet weights) are reported
        with a :class:`UserWarning`.

    Raises:
        ConfigError: If ``arch`` is unknown or the weights do not fit it.
        WeightsUnavailableError: If the weights are not available on this machine.
    """
    from sslstudio.models.weights import (
        imagenet_state_dict,
        load_into_backbone,
        load_weights_file,
        warn_about_report,
    )

    resolve_arch(arch)
    if weights is None:
        return Backbone(arch)
    if isinstance(weights, str) and weights.lower() == "imagenet":
        state = imagenet_state_dict(arch)
        source = f"the ImageNet weights of {resolve_arch(arch)}"
    else:
        state = load_weights_file(weights, trust_code=trust_code)
        source = f"the weights file {os.fspath(weights)}"
    backbone = Backbone(arch)
    report = load_into_backbone(backbone, state)
    backbone.load_report = report
    warn_about_report(report, source)
    return backbone
