"""One registry class for every kind of plug-in hwnas builds by name (models, data
modules, proxies, search strategies, arch parsers).

The registration decorator sits next to each definition (as timm's does); a registry
knows the modules that hold its built-in entries and imports them on first lookup, so
a library never has to import the floors that register into it::

    MODELS = Registry("model", builtins=("hwnas.domains",))

    @MODELS.register("elastic_cnn")
    def _build_cnn(...): ...
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError"]


class UnknownNameError(KeyError):
    """A name no entry of a registry has; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries of one kind; ``builtins`` are modules imported before the first
    lookup (their import registers the built-in entries)."""

    def __init__(self, kind: str, builtins: Sequence[str] = ()) -> None:
        self.kind = kind
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """``@registry.register(name)`` on a definition, or ``registry.register(name, obj)``.
        Registering a name again replaces its entry (a reloaded module re-registers)."""
        if obj is not None:
            self._entries[name] = obj
            return obj

        def deco(entry: T) -> T:
            self._entries[name] = entry
            return entry

        return deco

    @property
    def entries(self) -> dict[str, T]:
        """The live mapping of names to entries (tests patch it, plug-ins remove theirs)."""
        self.load_builtins()
        return self._entries

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` has an entry now (without loading the built-ins)."""
        return name in self._entries

    def load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtins:
            importlib.import_module(module)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name is an :class:`UnknownNameError` listing the
        valid ones and the closest match."""
        self.load_builtins()
        if name not in self._entries:
            raise UnknownNameError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: object) -> str:
        """The message for an unknown ``name``: the valid names and the closest one."""
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; choose one of {names}"

    def names(self) -> list[str]:
        self.load_builtins()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self.load_builtins()
        return sorted(self._entries.items())

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        self.load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load_builtins()
        return len(self._entries)
