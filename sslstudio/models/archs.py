"""The table of supported architectures: sslstudio name -> torchvision name.

Both :mod:`sslstudio.models.backbones` (which builds them) and :mod:`sslstudio.models.weights`
(which fetches their ImageNet weights) read it from here, so neither imports the other's
internals for it: ``weights -> archs <- backbones -> weights`` has no cycle.
"""

from __future__ import annotations

from sslstudio.errors import ConfigError

__all__ = ["ARCHS", "list_archs", "resolve_arch"]

#: sslstudio architecture name -> torchvision architecture name.
ARCHS: dict[str, str] = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "alexnet": "alexnet",
    "vgg16": "vgg16",
    "resnet18_small": "resnet18",
}


def list_archs() -> list[str]:
    """Return the names of the supported architectures.

    Returns:
        Architecture names accepted by :func:`sslstudio.models.build_backbone`.
    """
    return list(ARCHS)


def resolve_arch(arch: str) -> str:
    """Return the torchvision architecture behind an sslstudio architecture name.

    Args:
        arch: An sslstudio architecture name.

    Returns:
        The torchvision model name (e.g. ``"resnet18"`` for ``"resnet18_small"``).

    Raises:
        ConfigError: If ``arch`` is unknown.
    """
    try:
        return ARCHS[arch]
    except (KeyError, TypeError):
        raise ConfigError(
            f"Unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}."
        ) from None
