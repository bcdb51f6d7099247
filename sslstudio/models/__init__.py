"""Backbones (torchvision CNNs without classifier) and safe weight loading."""

from sslstudio.models.archs import ARCHS, list_archs, resolve_arch
from sslstudio.models.backbones import (
    Backbone,
    arch_stages,
    backbone_metadata,
    build_backbone,
)
from sslstudio.models.normalise import IMAGENET_MEAN, IMAGENET_STD
from sslstudio.models.weights import (
    CLASSIFIER_PREFIXES,
    imagenet_checkpoint_path,
    imagenet_state_dict,
    imagenet_url,
    load_into_backbone,
    load_weights_file,
)

__all__ = [
    "ARCHS",
    "CLASSIFIER_PREFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "arch_stages",
    "backbone_metadata",
    "build_backbone",
    "imagenet_checkpoint_path",
    "imagenet_state_dict",
    "imagenet_url",
    "list_archs",
    "load_into_backbone",
    "load_weights_file",
    "resolve_arch",
]
