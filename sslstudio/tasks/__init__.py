"""Pretext tasks: one module per task, registered by name."""

from sslstudio.tasks.base import PretextTask, OptimConfig, config_fields, param
from sslstudio.tasks.registry import create_task, get_task, list_tasks, register_task

__all__ = ["PretextTask", "OptimConfig", "config_fields", "param", "create_task", "get_task",
           "list_tasks", "register_task"]
