"""Tasks: what a domain plugs into the pipeline besides its elastic model (the task side
of the domain contract; each domain defines its own in ``hwnas.domains.<domain>.task``)."""

from hwnas.tasks.base import Task, distill_loss

__all__ = ["Task", "distill_loss"]
