"""Tasks built by name for a user's own data (``data=custom data.task=...``).

``TASKS`` maps a task name to its *builder*: a :class:`~hwnas.tasks.base.Task` subclass
or a function returning a task. Each domain registers its own
(``image_classification``, ``extractive_qa``, ``transducer_asr``); ``classification``
(any tensor in, class logits out) is registered here. :func:`build_task` fills a
builder's parameters by name: ``label_smoothing`` from the stage's setting,
``input_shape`` and ``num_classes`` from the data (given or inferred), ``data`` /
``datamodule`` with the data module itself, and any other parameter from the user's
data module attribute of the same name (``vocab``, ``n_mels``, ``mean``, ...);
a parameter with a default may be left out.

``data.task`` names a registered task, a dotted path to the user's own ``Task``
subclass or builder (``my_pkg.tasks.MyTask``, built the same way), or ``python:<name>``
for a task handed over in Python (:func:`register_task_object`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from hwnas.core.imports import DEBUG_HINT, first_line, import_object
from hwnas.core.registry import Registry
from hwnas.tasks.base import Task

log = logging.getLogger(__name__)

__all__ = ["TASKS", "build_task", "register_task", "register_task_object", "resolve_task"]

TaskBuilder = Callable[..., Task]
TASKS: Registry[TaskBuilder] = Registry("task", builtins=("hwnas.domains",))
_OBJECTS: dict[str, Task | TaskBuilder] = {}
_FROM_DATA = ("data", "datamodule")
_KEY = "data.task"


def register_task(name: str, builder: TaskBuilder) -> TaskBuilder:
    """Make ``builder`` (a ``Task`` subclass or a function returning a task) buildable as
    ``data.task=<name>``."""
    TASKS.register(name, builder)
    return builder


def register_task_object(name: str, task: Task | TaskBuilder) -> str:
    """Make ``task`` (a ``Task`` instance, subclass or builder) available as
    ``data.task=python:<name>`` in this process; returns that string."""
    if not (isinstance(task, Task) or callable(task)):
        raise TypeError(f"task must be a Task instance, subclass or builder, got {task!r}")
    _OBJECTS[name] = task
    return f"python:{name}"


def resolve_task(spec: str) -> Task | TaskBuilder:
    """The task or builder ``data.task=spec`` names (one-line ``ValueError`` otherwise)."""
    spec = str(spec)
    if spec in TASKS:
        return TASKS.get(spec)
    if spec.startswith("python:"):
        name = spec.partition(":")[2]
        if name not in _OBJECTS:
            raise ValueError(
                f"{_KEY}={spec!r}: no task handed over as {name!r} in this process "
                f"(hwnas.run(task=...)); registered: {sorted(_OBJECTS)}"
            )
        return _OBJECTS[name]
    if "." not in spec and ":" not in spec:
        raise ValueError(
            f"{_KEY}={spec!r}: {TASKS.unknown(spec)}, or the dotted path of your own Task "
            "subclass (my_pkg.tasks.MyTask)"
        )
    obj = import_object(spec, _KEY)
    if isinstance(obj, Task) or (inspect.isclass(obj) and issubclass(obj, Task)):
        return obj
    if inspect.isclass(obj) or not callable(obj):
        raise ValueError(
            f"{_KEY}={spec!r} is a {type(obj).__name__ if not inspect.isclass(obj) else 'class'}"
            f" that is not a hwnas Task; name a subclass of hwnas.tasks.Task or a function "
            "returning one"
        )
    return obj


def build_task(spec: str, data: Any, label_smoothing: float = 0.0) -> Task:
    """The task ``spec`` names, built for ``data`` (see the module doc). ``data`` has
    ``input_shape``, ``num_classes`` and ``attribute(name)`` (the user's data module's
    attribute; ``AttributeError`` when it has none)."""
    found = resolve_task(spec)
    if isinstance(found, Task):
        if label_smoothing:
            log.info("%s=%s: a ready task, label_smoothing=%s not applied", _KEY, spec,
                     label_smoothing)  # fmt: skip
        return found
    kwargs, missing = _arguments(found, data, float(label_smoothing))
    name = getattr(found, "__name__", type(found).__name__)
    if missing:
        raise ValueError(
            f"{_KEY}={spec}: {name} needs {missing} but the data module has no such "
            f"attribute(s); set them on {_data_name(data)} (e.g. in its __init__ or setup)"
        )
    try:
        task = found(**kwargs)
    except ValueError as err:
        raise ValueError(f"{_KEY}={spec}: {first_line(err)}") from err
    except Exception as err:  # a user's builder fails: one line, its cause chained
        raise ValueError(
            f"{_KEY}={spec}: {name}(...) raised {type(err).__name__}: {first_line(err)}; "
            f"fix it or the data module's attributes ({DEBUG_HINT})"
        ) from err
    if not isinstance(task, Task):
        raise ValueError(
            f"{_KEY}={spec}: {name} returned a {type(task).__name__}, not a hwnas Task"
        )
    return task


def _arguments(builder: TaskBuilder, data: Any, label_smoothing: float) -> tuple[dict, list]:
    """``builder``'s keyword arguments filled from ``data`` and the names it lacks."""
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):  # no signature: call it with the data module alone
        return {"data": data}, []
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == "label_smoothing":
            kwargs[p.name] = label_smoothing
        elif p.name in _FROM_DATA:
            kwargs[p.name] = data
        elif p.name in ("input_shape", "num_classes"):
            kwargs[p.name] = getattr(data, p.name)
        else:
            try:
                kwargs[p.name] = data.attribute(p.name)
            except AttributeError:
                if p.default is p.empty:
                    missing.append(p.name)
    return kwargs, missing


def _data_name(data: Any) -> str:
    describe = getattr(data, "target", None)
    return str(describe) if describe else type(data).__name__
