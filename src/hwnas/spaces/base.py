"""Declarative search spaces and immutable architectures.

A :class:`SearchSpace` is a list of :class:`Gene` objects; every domain describes
its space as data (names, choices, groups, activity conditions), so one generic
implementation serves CNNs, transformers and cell spaces alike.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Gene:
    """One decision of a search space.

    ``group`` names the elastic dimension the gene belongs to (``kernel``, ``depth``,
    ``width``, ...), used by progressive shrinking to open the space one dimension at a
    time. ``active_if=(gene, threshold)`` makes the gene matter only when the value of
    ``gene`` is greater than ``threshold`` (e.g. the kernel of block 3 of a stage only
    matters when that stage's depth is > 2); inactive genes are canonicalised to their
    first choice so equal networks have equal archs.
    """

    name: str
    choices: tuple[Any, ...]
    group: str = ""
    active_if: tuple[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"gene {self.name!r} has no choices")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"gene {self.name!r} has repeated choices {self.choices}")

    @property
    def ordered(self) -> tuple[Any, ...]:
        """Choices from smallest to largest: by value when every choice is a number,
        else by position in ``choices`` (categorical genes: the last is the largest)."""
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in self.choices):
            return tuple(sorted(self.choices))
        return self.choices

    @property
    def largest(self) -> Any:
        return self.ordered[-1]

    @property
    def smallest(self) -> Any:
        return self.ordered[0]


class Arch(Mapping[str, Any]):
    """An immutable, hashable, JSON-serialisable description of one subnet.

    Pickles and copies (``copy.copy``/``copy.deepcopy``) by rebuilding from its items,
    so the hash is recomputed in the receiving process.
    """

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]]):
        pairs = tuple(items.items()) if isinstance(items, Mapping) else tuple(items)
        object.__setattr__(self, "_items", pairs)
        object.__setattr__(self, "_hash", hash(pairs))

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self._items == other._items

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Arch is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Arch is immutable")

    def __reduce__(self) -> tuple[type[Arch], tuple[tuple[tuple[str, Any], ...]]]:
        return (Arch, (self._items,))

    def __copy__(self) -> Arch:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Arch:
        return self

    def __repr__(self) -> str:
        return f"Arch({self.to_str()})"

    def replace(self, **changes: Any) -> Arch:
        unknown = set(changes) - set(self)
        if unknown:
            raise KeyError(f"unknown genes {sorted(unknown)}")
        return Arch([(k, changes.get(k, v)) for k, v in self._items])

    def to_dict(self) -> dict[str, Any]:
        return dict(self._items)

    def to_str(self) -> str:
        """Compact one-line form, stable across runs (used as cache key and in CSVs)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_str(cls, text: str) -> Arch:
        return cls(json.loads(text))


@dataclass
class SearchSpace:
    """A generic search space driven by a list of :class:`Gene` specs."""

    name: str
    genes: list[Gene]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [g.name for g in self.genes]
        if len(set(names)) != len(names):
            raise ValueError(f"search space {self.name!r} has duplicate gene names")
        self._by_name = {g.name: g for g in self.genes}
        for g in self.genes:
            if g.active_if is not None and g.active_if[0] not in self._by_name:
                raise ValueError(f"gene {g.name!r} depends on unknown gene {g.active_if[0]!r}")

    # ----------------------------------------------------------------- identity
    @property
    def id(self) -> str:
        """Short hash of the spec: a latency table or cache built for one space is
        refused for another."""
        spec = [(g.name, list(g.choices), g.group, g.active_if) for g in self.genes]
        blob = json.dumps([self.name, spec, self.meta], sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def groups(self) -> list[str]:
        return sorted({g.group for g in self.genes if g.group})

    def gene(self, name: str) -> Gene:
        return self._by_name[name]

    def size(self) -> int:
        """Number of distinct (canonical) architectures, counted without enumerating:
        each gene's choices multiply in only where the gene is active."""
        children: dict[str | None, list[Gene]] = {}
        for g in self.genes:
            children.setdefault(g.active_if[0] if g.active_if else None, []).append(g)

        def count(gene: Gene) -> int:
            total = 0
            for value in gene.choices:
                n = 1
                for child in children.get(gene.name, []):
                    n *= count(child) if value > child.active_if[1] else 1
                total += n
            return total

        n = 1
        for root in children.get(None, []):
            n *= count(root)
        return n

    # ------------------------------------------------------------------ arch ops
    def is_active(self, gene: Gene, values: Mapping[str, Any]) -> bool:
        if gene.active_if is None:
            return True
        dep, threshold = gene.active_if
        return bool(values[dep] > threshold)

    def canonical(self, values: Mapping[str, Any]) -> Arch:
        out = {g.name: values[g.name] for g in self.genes}
        for g in self.genes:
            if not self.is_active(g, out):
                out[g.name] = g.choices[0]
        return Arch([(g.name, out[g.name]) for g in self.genes])

    def contains(self, arch: Mapping[str, Any]) -> bool:
        if set(arch) != set(self._by_name):
            return False
        return all(arch[g.name] in g.choices for g in self.genes)

    def validate(self, arch: Mapping[str, Any]) -> Arch:
        """Return ``arch`` as a canonical :class:`Arch`, or raise a clear ``ValueError``."""
        missing = [g.name for g in self.genes if g.name not in arch]
        extra = sorted(set(arch) - set(self._by_name))
        if missing or extra:
            raise ValueError(
                f"arch does not fit space {self.name!r}: missing genes {missing}, "
                f"unknown genes {extra}"
            )
        for g in self.genes:
            if arch[g.name] not in g.choices:
                raise ValueError(
                    f"gene {g.name!r}={arch[g.name]!r} is not one of {list(g.choices)}"
                )
        return self.canonical(arch)

    def sample(self, rng: random.Random) -> Arch:
        return self.canonical({g.name: rng.choice(g.choices) for g in self.genes})

    def mutate(self, arch: Arch, rng: random.Random, prob: float) -> Arch:
        """Resample each gene with probability ``prob`` (DE-NAS mutation)."""
        values = {
            g.name: (rng.choice(g.choices) if rng.random() < prob else arch[g.name])
            for g in self.genes
        }
        return self.canonical(values)

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Uniform crossover: each gene from either parent with probability 1/2."""
        return self.canonical(
            {g.name: (a if rng.random() < 0.5 else b)[g.name] for g in self.genes}
        )

    def max_arch(self) -> Arch:
        """Every gene at its largest choice (see :attr:`Gene.ordered`)."""
        return self.canonical({g.name: g.largest for g in self.genes})

    def min_arch(self) -> Arch:
        """Every gene at its smallest choice (see :attr:`Gene.ordered`)."""
        return self.canonical({g.name: g.smallest for g in self.genes})

    def encode(self, arch: Arch) -> list[int]:
        return [self.gene(n).choices.index(arch[n]) for n in self._by_name]

    def decode(self, codes: Sequence[int]) -> Arch:
        return self.canonical({g.name: g.choices[int(c)] for g, c in zip(self.genes, codes)})

    def enumerate(self) -> Iterator[Arch]:
        """Every canonical arch once (only for small spaces)."""
        seen: set[Arch] = set()
        for combo in itertools.product(*(g.choices for g in self.genes)):
            arch = self.canonical(dict(zip((g.name for g in self.genes), combo)))
            if arch not in seen:
                seen.add(arch)
                yield arch

    def restrict(self, elastic_groups: Sequence[str]) -> SearchSpace:
        """The sub-space where only ``elastic_groups`` vary; every other grouped gene is
        fixed at its largest choice (:attr:`Gene.largest`; progressive shrinking phases)."""
        unknown = set(elastic_groups) - set(self.groups)
        if unknown:
            raise ValueError(
                f"space {self.name!r} has no elastic groups {sorted(unknown)}; "
                f"choose from {self.groups}"
            )
        genes = [
            g
            if (not g.group or g.group in elastic_groups)
            else Gene(g.name, (g.largest,), g.group, g.active_if)
            for g in self.genes
        ]
        meta = {**self.meta, "restricted_to": sorted(elastic_groups)}
        return SearchSpace(self.name, genes, meta)
