"""Tasks: what a domain plugs into the pipeline besides its elastic model (the task side
of the domain contract; each domain defines its own in ``hwnas.domains.<domain>.task``
and registers it by name in ``TASKS``, which ``data.task`` of a user's own data names)."""

from hwnas.tasks.base import Task, distill_loss
from hwnas.tasks.classification import Classification
from hwnas.tasks.factory import (
    TASKS,
    build_task,
    register_task,
    register_task_object,
    resolve_task,
)

register_task("classification", Classification)

__all__ = [
    "TASKS",
    "Classification",
    "Task",
    "build_task",
    "distill_loss",
    "register_task",
    "register_task_object",
    "resolve_task",
]
