"""Pretext tasks: one module per task, registered by name."""

from sslstudio.tasks.base import ClassificationTask, OptimConfig, PretextTask, config_fields, param
from sslstudio.tasks.registry import create_task, get_task, list_tasks, register_task

__all__ = ["ClassificationTask", "PretextTask", "OptimConfig", "config_fields", "param", "create_task", "get_task",
           "list_tasks", "register_task"]
