"""Task registry in the style of timm's model registry: ``@register_task("name")``."""

from __future__ import annotations

from typing import Callable

from sslstudio.errors import ConfigError

_TASKS: dict[str, type] = {}


def register_task(name: str) -> Callable[[type], type]:
    """Class decorator registering a :class:`~sslstudio.tasks.base.PretextTask` under ``name``."""

    def deco(cls: type) -> type:
        if name in _TASKS and _TASKS[name] is not cls:
            raise ValueError(f"a task named {name!r} is already registered")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return deco


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    _load_builtin()
    return sorted(_TASKS)


def get_task(name: str) -> type:
    """The task class registered as ``name``; an unknown name lists the known ones."""
    _load_builtin()
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}.") from None


def create_task(name: str, options: dict | None = None, image_size: int = 64):
    """Instantiate task ``name`` with config ``options`` (validated) for ``image_size`` inputs."""
    from sslstudio.tasks.base import make_config

    cls = get_task(name)
    return cls(make_config(cls.config_cls, options), image_size=image_size)


_NOT_TASKS = {"base", "registry", "render"}


def _load_builtin() -> None:
    """Import every task module of this package (each registers itself)."""
    import importlib
    import pkgutil

    import sslstudio.tasks as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _NOT_TASKS and not module.name.startswith("_"):
            importlib.import_module(f"sslstudio.tasks.{module.name}")
