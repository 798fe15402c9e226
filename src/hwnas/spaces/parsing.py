"""Registry that turns architecture strings into networks, one entry per search space.

Tools that read architectures from files (the correlation harness, benchmark
importers) only talk to this registry, so a new space plugs in by registering a
parser and a builder; nothing downstream branches on the space name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwnas.core.registry import Registry
from hwnas.spaces.base import Arch

ParseFn = Callable[[str], Arch]
BuildFn = Callable[..., nn.Module]  # build(arch, num_classes, seed=None, **space_kwargs)
InputFn = Callable[[int, tuple[int, ...], int], torch.Tensor]  # (batch, shape, seed) -> x
RecordFn = Callable[[Mapping[str, Any]], str]  # benchmark record -> arch string

# Modules whose import registers the built-in parsers (the package itself, then
# the spaces known to live in it, in case the package does not import them).
_BUILTIN_MODULES = ("hwnas.spaces", "hwnas.spaces.nb201", "hwnas.spaces.nasbench_bert")


@dataclass(frozen=True)
class ArchParser:
    """How to read one space's arch strings and build the network they describe.

    ``input_shape`` is the model's input without the batch dimension, e.g. (3, 32, 32).
    ``build(arch, num_classes, seed=None, **kwargs)`` returns a fresh ``nn.Module``;
    with an int ``seed`` it draws the initial weights from a ``torch.Generator`` seeded
    with it (same seed, same network). Other keyword arguments are space-specific
    (e.g. NAS-Bench-201's ``C`` and ``N``).

    ``data_free_input(batch_size, input_shape, seed)``, when given, draws the space's
    data-free proxy batch instead of N(0, 1) noise (e.g. random token ids through an
    embedding, for a space whose models start after the embedding). ``from_record``,
    when given, turns one record of a benchmark file (a JSON-lines row without an arch
    column) into the space's arch string.
    """

    name: str
    parse: ParseFn
    build: BuildFn
    input_shape: tuple[int, ...]
    data_free_input: InputFn | None = None
    from_record: RecordFn | None = None

    def build_from_str(self, text: str, num_classes: int, **kwargs: Any) -> nn.Module:
        """Parse ``text`` and build its network (``kwargs`` go to the builder)."""
        return self.build(self.parse(text), num_classes, **kwargs)


PARSERS: Registry[ArchParser] = Registry("arch parser", builtins=_BUILTIN_MODULES)


def register_arch_parser(
    space_name: str,
    parse: ParseFn,
    build: BuildFn,
    input_shape: tuple[int, ...],
    *,
    overwrite: bool = False,
    data_free_input: InputFn | None = None,
    from_record: RecordFn | None = None,
) -> ArchParser:
    """Register how to parse and build archs of ``space_name``; returns the entry
    (see :class:`ArchParser` for the optional hooks)."""
    if not callable(parse) or not callable(build):
        raise TypeError(f"register_arch_parser({space_name!r}): parse and build must be callables")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"register_arch_parser({space_name!r}): input_shape must be positive ints without "
            f"the batch dimension, e.g. (3, 32, 32); got {input_shape!r}"
        )
    if PARSERS.is_registered(space_name) and not overwrite:
        raise ValueError(
            f"an arch parser for space {space_name!r} is already registered; "
            "pass overwrite=True to replace it"
        )
    entry = ArchParser(space_name, parse, build, shape, data_free_input, from_record)
    PARSERS.register(space_name, entry)
    return entry


def get_arch_parser(space_name: str) -> ArchParser:
    """The registered parser for ``space_name``; a clear ``KeyError`` lists the known ones."""
    if space_name not in PARSERS:
        raise KeyError(
            f"no arch parser registered for space {space_name!r}; "
            f"registered spaces: {PARSERS.names()} (register one with register_arch_parser)"
        )
    return PARSERS.get(space_name)


def list_arch_parsers() -> list[str]:
    """Names of the spaces whose arch strings can be parsed and built."""
    return PARSERS.names()
