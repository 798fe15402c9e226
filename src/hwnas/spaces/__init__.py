"""Search spaces: the generic declarative :class:`SearchSpace`, NAS-Bench-201, and the
registry of arch-string parsers used by the correlation harness."""

from hwnas.spaces.base import Arch, Gene, SearchSpace
from hwnas.spaces.nb201 import (
    EDGES,
    GENE_NAMES,
    OPS,
    NB201Network,
    arch_to_str,
    build_nb201,
    nb201_space,
    str_to_arch,
)
from hwnas.spaces.parsing import (
    ArchParser,
    get_arch_parser,
    list_arch_parsers,
    register_arch_parser,
)

__all__ = [
    "EDGES",
    "GENE_NAMES",
    "OPS",
    "Arch",
    "ArchParser",
    "Gene",
    "NB201Network",
    "SearchSpace",
    "arch_to_str",
    "build_nb201",
    "get_arch_parser",
    "list_arch_parsers",
    "nb201_space",
    "register_arch_parser",
    "str_to_arch",
]
