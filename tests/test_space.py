"""Search-space operators always yield valid archs; Arch is immutable and serialisable."""

from __future__ import annotations

import random

import pytest

from hwnas.spaces.base import Arch, Gene, SearchSpace
from tests.conftest import tiny_cnn


def _spaces() -> list[SearchSpace]:
    spaces = [tiny_cnn().space, tiny_cnn(max_depth=(3, 3), depth_choices=(1, 2, 3)).space]
    spaces.append(SearchSpace("toy", (Gene("a", (1, 2, 3), "g1"), Gene("b", ("x", "y"), "g2"))))
    return spaces


@pytest.mark.parametrize("space", _spaces(), ids=lambda s: s.name)
def test_sample_mutate_crossover_stay_valid(space):
    rng = random.Random(0)
    pop = [space.sample(rng) for _ in range(30)]
    for _ in range(300):
        a, b = rng.sample(pop, 2)
        child = space.crossover(a, b, rng) if rng.random() < 0.5 else space.mutate(a, rng, 0.5)
        assert space.contains(child)
        assert space.validate(dict(child)) == child
        pop.append(child)


@pytest.mark.parametrize("space", _spaces(), ids=lambda s: s.name)
def test_encode_decode_and_string_round_trip(space):
    rng = random.Random(1)
    for _ in range(50):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch
        assert Arch.from_str(arch.to_str()) == arch


def test_inactive_genes_are_canonical():
    space = tiny_cnn().space
    arch = space.min_arch()
    assert arch["d0"] == 1
    # genes of blocks beyond the depth take their first choice, so equal nets compare equal
    other = dict(arch)
    other["k0_1"] = 7
    assert space.canonical(other) == arch


def test_arch_is_immutable_and_hashable():
    arch = Arch({"a": 1})
    with pytest.raises(AttributeError):
        arch.x = 2  # type: ignore[attr-defined]
    assert len({arch, Arch({"a": 1})}) == 1
    assert arch.replace(a=2)["a"] == 2 and arch["a"] == 1


def test_restrict_fixes_other_groups_at_their_maximum():
    space = tiny_cnn().space
    kernel_only = space.restrict(["kernel"])
    rng = random.Random(0)
    big = space.max_arch()
    for _ in range(20):
        arch = kernel_only.sample(rng)
        assert all(arch[g.name] == big[g.name] for g in space.genes if g.group != "kernel")
    assert space.restrict([]).size() == 1


def test_validate_names_the_problem():
    space = tiny_cnn().space
    bad = dict(space.max_arch())
    bad["e0_0"] = 99
    with pytest.raises(ValueError, match="e0_0"):
        space.validate(bad)
    with pytest.raises(ValueError, match="missing|unknown"):
        space.validate({"d0": 1})
    with pytest.raises(ValueError):
        space.restrict(["colour"])


def test_space_id_changes_with_the_choices():
    assert tiny_cnn().space.id == tiny_cnn().space.id
    assert tiny_cnn().space.id != tiny_cnn(expand_choices=(2, 4)).space.id


@pytest.mark.parametrize("space", _spaces(), ids=lambda s: s.name)
def test_size_counts_distinct_archs_without_enumerating(space):
    assert space.size() == len(set(space.enumerate()))
    for groups in (["kernel"], ["kernel", "depth"]):
        if set(groups) <= set(space.groups):
            sub = space.restrict(groups)
            assert sub.size() == len(set(sub.enumerate()))


@pytest.mark.parametrize(
    "arch",
    [Arch({"a": 1, "b": "x"}), Arch({"op": ("conv", 3), "w": 8.5}), tiny_cnn().space.max_arch()],
    ids=["scalars", "tuples", "cnn"],
)
def test_arch_pickles_and_copies_and_stays_immutable(arch):
    import copy
    import pickle

    for clone in (
        pickle.loads(pickle.dumps(arch)),
        pickle.loads(pickle.dumps(arch, protocol=0)),
        copy.copy(arch),
        copy.deepcopy(arch),
        copy.deepcopy({"nested": [arch]})["nested"][0],
    ):
        assert isinstance(clone, Arch)
        assert clone == arch and hash(clone) == hash(arch)
        assert list(clone.items()) == list(arch.items())
        assert clone.to_str() == arch.to_str()
        assert len({clone, arch}) == 1
        with pytest.raises(AttributeError):
            clone._items = ()  # type: ignore[misc]
        with pytest.raises(AttributeError):
            del clone._items  # type: ignore[misc]


def test_categorical_genes_order_by_position_numeric_by_value():
    # string order ("large" < "medium" < "small") differs from position order
    size = Gene("size", ("small", "medium", "large"), "width")
    kernel = Gene("k", (5, 3, 7), "kernel")  # numeric: by value, not position
    space = SearchSpace("cat", [size, kernel])
    assert size.ordered == ("small", "medium", "large") and kernel.ordered == (3, 5, 7)
    assert space.max_arch() == Arch({"size": "large", "k": 7})
    assert space.min_arch() == Arch({"size": "small", "k": 3})
    fixed = space.restrict(["kernel"])
    assert fixed.gene("size").choices == ("large",)
    assert fixed.size() == 3
