"""Schema of the ``trainer`` group: the Lightning settings the supernet and final
stages share. Their one home is :class:`hwnas.training.settings.TrainerSettings` (the
library that builds the trainers owns its defaults and checks); the group's schema is
that dataclass."""

from __future__ import annotations

from hwnas.training.settings import ACCELERATORS, LOGGERS, STRATEGIES, TrainerSettings

TrainerConfig = TrainerSettings

__all__ = ["ACCELERATORS", "LOGGERS", "STRATEGIES", "TrainerConfig"]
