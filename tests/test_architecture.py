"""The floors hold (docs/architecture.md): no import cycle, imports only go down, a domain
is its own folder, no layer below the app reads a raw config, modules stay small.

These read the source with ``ast`` (imports inside functions count too); import-linter
checks the same layer contract in ``make lint`` from pyproject.toml."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "hwnas"
# bottom to top; a module may import its own floor and the floors below it
FLOORS = [
    {"core"},
    {"spaces", "data"},
    {"elastic", "proxies"},
    {"tasks", "hardware"},
    {"search"},
    {"training"},
    {"quantize", "bootstrap"},
    {"domains"},
    {"app"},
]
# entry shims at the top (python -m hwnas, hwnas.profile, .correlate, .export) and the
# package's lazy API sit above every floor; python -m hwnas.quantize is one shim inside
TOP_LEVEL = {"hwnas", "hwnas.__main__", "hwnas.profile", "hwnas.correlate", "hwnas.export"}
SHIMS = {("hwnas.quantize.__main__", "hwnas.app.quantize_cli")}
MAX_LINES = 400
# one class doing one job, each over MAX_LINES: the bootstrap converter's channel
# analysis of a traced graph (ChannelAnalysis) and the converted supernet (BootstrapModel)
LONG_MODULES = {"hwnas.bootstrap.analysis", "hwnas.bootstrap.model"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODS = _modules()


def _imports(name: str) -> set[str]:
    """hwnas modules that ``name`` imports anywhere in its file (package inits of
    ``from pkg import sub`` resolved to the submodule when it is one)."""
    path = MODS[name]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODS}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if path.name == "__init__.py" else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names} & MODS.keys()
            if base in MODS and (len(subs) < len(node.names) or base != "hwnas"):
                out.add(base)
            out |= subs
    out.discard(name)
    return out


GRAPH = {m: _imports(m) for m in MODS}


def _floor(module: str) -> int | None:
    if module in TOP_LEVEL:
        return None
    top = module.split(".")[1]
    return next((i for i, names in enumerate(FLOORS) if top in names), None)


def test_every_package_is_on_a_floor():
    stray = sorted(m for m in MODS if m not in TOP_LEVEL and _floor(m) is None)
    assert not stray, f"modules on no floor (add them to FLOORS and docs): {stray}"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_only_go_down():
    up = []
    for src, targets in GRAPH.items():
        mine = _floor(src)
        for dst in targets:
            theirs = _floor(dst)
            if mine is None or theirs is None or (src, dst) in SHIMS:
                continue
            if theirs > mine:
                up.append(f"{src} -> {dst}")
    assert not up, "upward imports:\n" + "\n".join(sorted(up))


def test_domains_do_not_import_each_other():
    crossing = [
        f"{src} -> {dst}"
        for src, targets in GRAPH.items()
        if src.startswith("hwnas.domains.")
        for dst in targets
        if dst.startswith("hwnas.domains.") and dst.split(".")[2] != src.split(".")[2]
    ]
    assert not crossing, crossing


def _domain_classes() -> set[str]:
    names = set()
    for mod, path in MODS.items():
        if mod.startswith("hwnas.domains."):
            tree = ast.parse(path.read_text())
            names |= {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    return names


def test_no_probe_of_domain_classes_outside_their_domain():
    classes = _domain_classes()
    assert {"ElasticCNN", "ElasticBert", "ElasticRNNT", "SquadDataModule"} <= classes
    probe = re.compile(r"\b(isinstance|issubclass)\([^)]*\b(" + "|".join(classes) + r")\b")
    found = [
        f"{mod}:{i}: {line.strip()}"
        for mod, path in MODS.items()
        if not mod.startswith("hwnas.domains.")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if probe.search(line)
    ]
    assert not found, found


def test_only_the_app_floor_reads_raw_configs():
    found = [
        f"{mod}:{i}"
        for mod, path in MODS.items()
        if _floor(mod) is not None and _floor(mod) < FLOORS.index({"app"})
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bcfg\.get\(|\bDictConfig\b|^\s*(from|import) (omegaconf|hydra)\b", line)
    ]
    assert not found, found


def test_core_imports_nothing_else_of_hwnas():
    found = {
        m: sorted(t for t in GRAPH[m] if not t.startswith("hwnas.core"))
        for m in MODS
        if m.startswith("hwnas.core")
    }
    assert not any(found.values()), found


@pytest.mark.parametrize("module", sorted(MODS))
def test_modules_stay_small(module):
    lines = len(MODS[module].read_text().splitlines())
    assert lines <= MAX_LINES or module in LONG_MODULES, f"{module}: {lines} lines"
