"""A user's own ``lightning.LightningDataModule`` in the pipeline (``data=custom``,
docs/own-data.md).

``data._target_`` names the module's class (or a function returning one) on the Python
path; the other keys of ``data`` but ``name``, ``_target_`` and ``task`` are its
constructor arguments. ``python:<name>`` names one handed over in Python
(:func:`register_datamodule_object`, used by ``hwnas.run(datamodule=...)``).

:class:`CustomDataModule` wraps it in hwnas's :class:`~hwnas.data.base.DataModule`
contract. Its :meth:`~CustomDataModule.setup` runs the user's ``prepare_data`` and
``setup`` and checks their loaders once, at start-up: ``train_dataloader()``,
``val_dataloader()`` and ``test_dataloader()`` each give a first batch of finite values;
``input_shape`` and ``num_classes`` are the module's attributes of those names, or read
from the batches (inputs ``[B, *input_shape]``, integer labels: the largest label in a
few train batches plus one). The task (``data.task``) is built by a factory the app
floor hands over (:mod:`hwnas.tasks.factory`) and must split the first batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, Subset

from hwnas.core.imports import DEBUG_HINT, first_line, import_object
from hwnas.core.seeding import seeded_generator
from hwnas.data.base import DataModule
from hwnas.data.batches import (
    LABEL_BATCHES,
    describe,
    first_batch,
    labelled_pair,
    max_label,
    non_finite,
)

log = logging.getLogger(__name__)

__all__ = ["OWN_KEYS", "CustomDataModule", "build_custom", "register_datamodule_object"]

KEY = "data._target_"
OWN_KEYS = ("name", "_target_", "task")  # the data keys hwnas reads; the rest go to the class
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
TaskFactory = Callable[["CustomDataModule", float], Any]
_OBJECTS: dict[str, Any] = {}


def register_datamodule_object(name: str, datamodule: Any) -> str:
    """Make ``datamodule`` (a LightningDataModule instance) available as
    ``data._target_=python:<name>`` in this process; returns that string."""
    if not callable(getattr(datamodule, "train_dataloader", None)):
        raise TypeError(
            f"datamodule must be a lightning.LightningDataModule, got {type(datamodule).__name__}"
        )
    _OBJECTS[name] = datamodule
    return f"python:{name}"


def build_custom(
    args: Mapping[str, Any], task_factory: TaskFactory | None = None, seed: int = 0
) -> DataModule:
    """The data module of a ``data`` node with ``_target_`` (plain data), wrapped."""
    args = dict(args)
    target, task = args.pop("_target_", None), args.pop("task", None) or "image_classification"
    args.pop("name", None)
    if target is None or not str(target).strip():
        raise ValueError(
            f"{KEY} is not set: data=custom needs {KEY}=<package.module.Class> naming your "
            "LightningDataModule (or a function returning one) on the Python path"
        )
    module = _instantiate(str(target), args)
    if isinstance(module, DataModule):  # already hwnas's contract: its own task and loaders
        log.info("data: %s is a hwnas DataModule; its own task() is used", target)
        return module
    return CustomDataModule(module, str(target), str(task), task_factory, seed)


def _instantiate(target: str, kwargs: dict[str, Any]) -> Any:
    where = f"{KEY}={target!r}"
    if target.startswith("python:"):
        name = target.partition(":")[2]
        if name not in _OBJECTS:
            raise ValueError(
                f"{where}: no data module handed over as {name!r} in this process "
                f"(hwnas.run(datamodule=...)); registered: {sorted(_OBJECTS)}"
            )
        obj = _OBJECTS[name]
        cls = type(obj)
        if cls.__module__ != "__main__":
            log.info("data: %s is this process's %s; a rerun elsewhere needs data=custom "
                     "data._target_=%s.%s with its constructor keys as +data.<key>=...",
                     target, cls.__name__, cls.__module__, cls.__qualname__)  # fmt: skip
        else:
            log.info("data: %s is this process's %s; a rerun elsewhere needs data=custom "
                     "data._target_=<package.module.Class> importable from the Python path",
                     target, cls.__name__)  # fmt: skip
    else:
        obj = import_object(target, KEY)
    if not kwargs and _is_datamodule(obj):
        return obj
    if isinstance(obj, type) and not issubclass(obj, L.LightningDataModule) or not callable(obj):
        raise ValueError(
            f"{where} is a {_kind(obj)}, not a lightning.LightningDataModule class or a "
            "function returning one"
        )
    try:
        made = obj(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"{where}: calling it with {sorted(kwargs)} raised TypeError: {first_line(err)}; "
            "the data keys besides name, _target_ and task are its constructor arguments "
            "(add one with +data.<key>=..., remove one with ~data.<key>)"
        ) from err
    except Exception as err:  # the user's constructor fails: one line, its cause chained
        raise ValueError(
            f"{where}: its constructor raised {type(err).__name__}: {first_line(err)}; fix it "
            f"({DEBUG_HINT})"
        ) from err
    if not _is_datamodule(made):
        raise ValueError(
            f"{where} returned a {_kind(made)}, not a lightning.LightningDataModule (with "
            "train_dataloader(), val_dataloader() and test_dataloader())"
        )
    return made


def _is_datamodule(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "train_dataloader", None))


def _kind(obj: Any) -> str:
    return f"class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__


class CustomDataModule(DataModule):
    """hwnas's data contract over a user's LightningDataModule ``module`` (see the module
    doc); ``target`` names it in messages, ``task`` is ``data.task``, ``seed`` seeds the
    calibration subset."""

    name = "custom"

    def __init__(
        self,
        module: Any,
        target: str,
        task: str = "image_classification",
        task_factory: TaskFactory | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.module, self.target, self.task_name = module, target, task
        self.task_factory, self.seed = task_factory, int(seed)
        self.num_workers, self.pin_memory = 0, False
        self.where = f"{KEY}={target!r}"
        self._shape: tuple[int, ...] | None = None
        self._classes: int | None = None
        self._prepared, self._stages, self._checked = False, set(), False

    # ------------------------------------------------------------ the contract
    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        if self._shape is None:
            self.setup()
        return self._shape  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        if self._classes is None:
            self.setup()
        return self._classes  # type: ignore[return-value]

    def attribute(self, name: str) -> Any:
        """The user's data module's attribute ``name`` (``AttributeError`` when it has none
        or it is None): what :func:`hwnas.tasks.build_task` fills a task's arguments from."""
        value = getattr(self.module, name, None)
        if value is None:
            raise AttributeError(name)
        return value

    def task(self, label_smoothing: float = 0.0) -> Any:
        if self.task_factory is None:
            raise ValueError(
                f"{self.where}: no task builder was given (build the data module with "
                "hwnas.app.data.build_data)"
            )
        return self.task_factory(self, float(label_smoothing))

    def prepare_data(self) -> None:
        if not self._prepared:
            self._call("prepare_data()", self.module.prepare_data)
            self._prepared = True

    def setup(self, stage: str | None = None) -> None:
        """The user's ``prepare_data`` and ``setup('fit')`` / ``setup('test')`` (each once),
        then the start-up checks (once)."""
        self.prepare_data()
        for s in ("fit", "test"):
            if s not in self._stages:
                self._stages.add(s)
                self._call(f"setup({s!r})", self.module.setup, s)
        if not self._checked:
            self._checked = True
            self._check()

    def train_dataloader(self) -> Any:
        return self._loader("train_dataloader")

    def val_dataloader(self) -> Any:
        return self._loader("val_dataloader")

    def test_dataloader(self) -> Any:
        return self._loader("test_dataloader")

    def proxy_batch(self, batch_size: int, seed: int) -> tuple[Any, Any]:
        """``batch_size`` train samples picked with ``seed``, collated as the train loader
        does (needs a map-style dataset and ``(inputs, labels)`` samples)."""
        loader, data = self._map_style("zero_shot.inputs=data")
        if not 1 <= batch_size <= len(data):
            raise ValueError(
                f"proxy batch_size={batch_size} must be in 1..{len(data)} (the train split size)"
            )
        pick = torch.randperm(len(data), generator=seeded_generator(seed, "proxy_batch"))
        batch = loader.collate_fn([data[i] for i in pick[:batch_size].tolist()])
        return labelled_pair(batch, self.where, "train_dataloader()")

    def calibration_loader(self, num_samples: int, batch_size: int | None = None) -> DataLoader:
        """A seeded subset of ``num_samples`` train samples in fixed order (a map-style
        dataset), else the first train batches that hold them."""
        loader = self.train_dataloader()
        size = batch_size or getattr(loader, "batch_size", None) or 64
        data = getattr(loader, "dataset", None)
        if _map_style(data):
            pick = self._calibration_pick(num_samples, len(data))
            collate = getattr(loader, "collate_fn", None)
            return DataLoader(Subset(data, pick.tolist()), batch_size=size, collate_fn=collate)
        taken, seen = [], 0
        for batch in loader:  # an iterable dataset: its own order decides
            taken.append(batch)
            seen += len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)
            if seen >= num_samples:
                break
        return DataLoader(taken, batch_size=None)

    # ------------------------------------------------------------- internals
    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:  # the user's code fails: one line, its cause chained
            raise ValueError(
                f"{self.where}: {what} raised {type(err).__name__}: {first_line(err)}; fix the "
                f"data module ({DEBUG_HINT})"
            ) from err

    def _loader(self, which: str) -> Any:
        try:  # a loader may ask its trainer (world size, ...)
            self.module.trainer = self.trainer
        except AttributeError:  # a read-only attribute: it manages its own
            pass
        if getattr(type(self.module), which, None) is getattr(L.LightningDataModule, which):
            raise ValueError(
                f"{self.where}: the data module has no {which}(); hwnas needs train, val and "
                "test loaders (val picks the subnets, test reports them): define it"
            )
        return self._call(f"{which}()", getattr(self.module, which))

    def _map_style(self, why: str) -> tuple[Any, Any]:
        loader = self.train_dataloader()
        data = getattr(loader, "dataset", None)
        if not _map_style(data):
            raise ValueError(
                f"{why} needs a map-style train dataset (with __len__ and __getitem__); "
                f"{self.where} has a {type(data).__name__}: use zero_shot.inputs=gaussian"
            )
        return loader, data

    def _check(self) -> None:
        """The start-up checks of the module doc (one-line ValueErrors)."""
        first = {}
        for which in LOADERS:
            call = f"{which}()"
            first[which] = first_batch(self._loader(which), self.where, call)
            non_finite(first[which], self.where, call)
        shape, classes = self._optional("input_shape"), self._optional("num_classes")
        if shape is None or classes is None:
            x, _ = labelled_pair(first["train_dataloader"], self.where, "train_dataloader()")
            for which in LOADERS[1:]:
                other, _ = labelled_pair(first[which], self.where, f"{which}()")
                if tuple(other.shape[1:]) != tuple(x.shape[1:]):
                    raise ValueError(
                        f"{self.where}: {which}() gives samples shaped {list(other.shape[1:])}"
                        f" but train_dataloader() {list(x.shape[1:])}; give one shape"
                    )
        if shape is None:
            shape = tuple(x.shape[1:])
            log.info("data: input_shape=%s read from the first train batch", list(shape))
        else:
            log.info("data: input_shape=%s from %s.input_shape", list(shape), self.target)
        if classes is None:
            classes = self._count_classes(first)
        else:
            log.info("data: num_classes=%s from %s.num_classes", classes, self.target)
        self._shape, self._classes = tuple(int(s) for s in shape), int(classes)
        if self.task_factory is not None:
            self._check_task(first["train_dataloader"])

    def _optional(self, name: str) -> Any:
        try:
            return self.attribute(name)
        except AttributeError:
            return None

    def _count_classes(self, first: dict[str, Any]) -> int:
        seen, n = [], 0
        for batch in self.train_dataloader():
            seen.append(batch)
            n += 1
            if n >= LABEL_BATCHES:
                break
        seen += [first["val_dataloader"], first["test_dataloader"]]
        top = max_label(seen, self.where, "train_dataloader()")
        if top < 1:
            raise ValueError(
                f"{self.where}: the labels of {n} train batches are all {top}: a classifier "
                f"needs two classes or more; set num_classes on the data module"
            )
        log.info("data: num_classes=%d inferred as the largest label + 1 in %d train batches "
                 "and the first val and test batches (set a num_classes attribute on %s to "
                 "give it)", top + 1, n, self.target)  # fmt: skip
        return top + 1

    def _check_task(self, batch: Any) -> None:
        task = self.task()
        try:
            inputs, _ = task.split_batch(batch)
        except Exception as err:  # noqa: BLE001 - any failure is one line naming the form
            raise ValueError(
                f"{self.where}: data.task={self.task_name} cannot read its train batches "
                f"({describe(batch)}): {type(err).__name__}: {first_line(err)}"
            ) from err
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise ValueError(
                f"{self.where}: data.task={self.task_name} reads model inputs "
                f"{[type(t).__name__ for t in inputs]} from {describe(batch)}: "
                "setup() must give train_dataloader() batches of (inputs, labels) tensors"
            )
        log.info("data: %s, task %s (%s), input_shape %s, %d classes", self.target,
                 self.task_name, type(task).__name__, list(self._shape or ()),
                 self._classes or 0)  # fmt: skip


def _map_style(data: Any) -> bool:
    return (
        data is not None
        and not isinstance(data, IterableDataset)
        and hasattr(data, "__len__")
        and hasattr(data, "__getitem__")
    )
