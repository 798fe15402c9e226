"""NAS-Bench-201 space: arch strings, enumeration, network construction, registry."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from hwnas.spaces.nb201 import (
    GENE_NAMES,
    OPS,
    NB201Cell,
    ReLUConvBN,
    ResNetReduction,
    Zero,
    arch_to_str,
    build_nb201,
    nb201_space,
    str_to_arch,
)
from hwnas.spaces.parsing import get_arch_parser, register_arch_parser

FIXTURE = Path(__file__).parent / "fixtures" / "nb201_small.csv"
ARCH = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def test_space_spec():
    space = nb201_space()
    assert space.name == "nb201"
    assert [g.name for g in space.genes] == list(GENE_NAMES) and len(GENE_NAMES) == 6
    assert all(g.choices == OPS for g in space.genes) and len(OPS) == 5


def test_all_archs_round_trip_fast():
    t0 = time.perf_counter()
    archs = list(nb201_space().enumerate())
    strings = [arch_to_str(a) for a in archs]
    assert all(str_to_arch(s) == a for s, a in zip(strings, archs, strict=True))
    assert time.perf_counter() - t0 < 10.0
    assert len(archs) == 5**6 == len(set(strings)) == len(set(archs))


def test_string_maps_to_edges():
    arch = str_to_arch(ARCH)
    assert arch["edge_1_0"] == "nor_conv_3x3"
    assert (arch["edge_2_0"], arch["edge_2_1"]) == ("none", "skip_connect")
    assert (arch["edge_3_0"], arch["edge_3_1"], arch["edge_3_2"]) == (
        "avg_pool_3x3",
        "nor_conv_1x1",
        "nor_conv_3x3",
    )
    assert arch_to_str(arch) == ARCH
    assert nb201_space().contains(arch)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("|nor_conv_3x3~0|+|none~0|skip_connect~1|", "nodes"),
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "op~0"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "needs 2 inputs"),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "start and end"),
    ],
)
def test_bad_strings_fail_clearly(text, match):
    with pytest.raises(ValueError, match=match):
        str_to_arch(text)


def _conv_kernel(m: nn.Module) -> int:
    assert isinstance(m, ReLUConvBN)
    assert isinstance(m[0], nn.ReLU) and isinstance(m[2], nn.BatchNorm2d)
    return m[1].kernel_size[0]


@pytest.mark.parametrize("arch_str", [ARCH, *pd.read_csv(FIXTURE)["arch"].head(4)])
def test_edges_hold_the_right_modules(arch_str):
    arch = str_to_arch(arch_str)
    net = build_nb201(arch, num_classes=7, C=4, N=2)
    cells = [m for m in net.cells if isinstance(m, NB201Cell)]
    assert len(cells) == 6 and sum(isinstance(m, ResNetReduction) for m in net.cells) == 2
    for cell in cells:
        for name in GENE_NAMES:
            op, mod = arch[name], cell.edges[name]
            if op == "none":
                assert isinstance(mod, Zero)
            elif op == "skip_connect":
                assert isinstance(mod, nn.Identity)
            elif op == "avg_pool_3x3":
                assert isinstance(mod, nn.AvgPool2d) and mod.kernel_size == 3
                assert mod.count_include_pad is False
            else:
                assert _conv_kernel(mod) == (1 if op == "nor_conv_1x1" else 3)
    assert net.arch == arch


def test_shapes_and_zero_op():
    net = build_nb201(ARCH, num_classes=7, C=4, N=1, seed=0)
    x = torch.randn(3, 3, 32, 32)
    assert net.forward_features(x).shape == (3, 16, 8, 8)
    assert net(x).shape == (3, 7)
    assert torch.equal(Zero()(x), torch.zeros_like(x))
    # A cell whose output node only receives 'none' edges outputs exact zeros.
    dead = str_to_arch("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|none~2|")
    cell = NB201Cell(dead, channels=4)
    assert torch.count_nonzero(cell(torch.randn(2, 4, 8, 8))) == 0
    live = dead.replace(edge_3_0="skip_connect")
    z = torch.randn(2, 4, 8, 8)
    assert torch.equal(NB201Cell(live, channels=4)(z), z)


def test_parameter_counts_match_nas_bench_201():
    # The fixture's `params` column is NAS-Bench-201's own count (millions).
    table = pd.read_csv(FIXTURE)
    classes = {"cifar10": 10, "cifar100": 100}
    assert set(table["dataset"]) == set(classes)
    for arch, ref, ds in zip(table["arch"], table["params"], table["dataset"], strict=True):
        n = sum(p.numel() for p in build_nb201(arch, num_classes=classes[ds]).parameters())
        assert n / 1e6 == pytest.approx(ref, abs=1e-6), arch


def test_seeded_build_is_deterministic_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    a = build_nb201(ARCH, C=4, N=1, seed=5)
    b = build_nb201(ARCH, C=4, N=1, seed=5)
    c = build_nb201(ARCH, C=4, N=1, seed=6)
    torch.random.set_rng_state(state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_registry():
    entry = get_arch_parser("nb201")
    assert entry.input_shape == (3, 32, 32)
    net = entry.build_from_str(ARCH, 5, C=4, N=1)
    assert net(torch.randn(1, *entry.input_shape)).shape == (1, 5)
    with pytest.raises(KeyError, match="nb201"):
        get_arch_parser("no_such_space")
    with pytest.raises(ValueError, match="already registered"):
        register_arch_parser("nb201", str_to_arch, build_nb201, (3, 32, 32))


def test_every_edge_op_pair_builds_and_computes_the_cell_dag():
    # Arch k puts op (k + e) % 5 on edge e: five archs cover all 30 (edge, op) pairs.
    x = torch.randn(2, 3, 6, 6)
    for k in range(len(OPS)):
        arch = str_to_arch(arch_to_str({g: OPS[(k + e) % 5] for e, g in enumerate(GENE_NAMES)}))
        cell = NB201Cell(arch, channels=3).eval()
        ops = {g: cell.edges[g] for g in GENE_NAMES}
        for g, mod in ops.items():
            want = {"none": Zero, "skip_connect": nn.Identity, "avg_pool_3x3": nn.AvgPool2d}
            assert isinstance(mod, want.get(arch[g], ReLUConvBN)), (g, arch[g])
        nodes = [x]
        for i in range(1, 4):
            nodes.append(sum(ops[f"edge_{i}_{j}"](nodes[j]) for j in range(i)))
        with torch.no_grad():
            assert torch.allclose(cell(x), nodes[3])
    pool = NB201Cell(
        str_to_arch("|avg_pool_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"), 3
    )
    expect = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    assert torch.allclose(pool(x), expect)


def test_registry_rejects_bad_entries():
    with pytest.raises(ValueError, match="input_shape"):
        register_arch_parser("tmp_space", str_to_arch, build_nb201, (3, 0, 32))
    with pytest.raises(TypeError, match="callables"):
        register_arch_parser("tmp_space", "not callable", build_nb201, (3, 32, 32))
