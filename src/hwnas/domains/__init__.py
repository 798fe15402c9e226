"""The domains: one sub-package per domain (data, task, models, registration).

Importing this package imports every sub-package, which registers its models and data
modules; a new domain is a new folder here plus its ``conf/`` files, nothing else."""

from __future__ import annotations

import importlib
import pkgutil

DOMAINS: list[str] = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)

for _name in DOMAINS:
    importlib.import_module(f"{__name__}.{_name}")
