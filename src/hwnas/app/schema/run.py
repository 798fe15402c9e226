"""Schema of the run's top-level keys (``conf/config.yaml``): seed, stages, threads,
progress and the constraint windows every searched arch must meet; the groups' own
nodes have their schemas beside this one (their values stay ``Any`` here: the data,
model, hardware and proxy nodes are constructor arguments checked by their classes)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hwnas.app.schema.base import check_int, check_number, check_window, is_int

STAGES = ("zero_shot", "supernet", "search", "final", "quantize")
PROGRESS = ("auto", "bar", "log")  # hwnas.core.progress.MODES


@dataclass
class ConstraintWindow:
    """A hard window on one cost: ``min`` <= cost <= ``max``; null = no bound on that
    side."""

    min: float | None = None
    max: float | None = None

    def validate(self, key: str = "constraints.<metric>") -> None:
        check_window(key, self)


@dataclass
class ConstraintsConfig:
    """Hard windows on the costs of every searched arch (``constraints.*``), each a
    :class:`ConstraintWindow` ``{min: x, max: y}``; a bare number given on the command
    line (``constraints.latency_ms=5``) is a max. Their fields are typed ``Any`` for
    that bare number; a window's keys and values are still checked when composed.

    - ``params_m``: millions of parameters.
    - ``flops_m``: MFLOPs per sample.
    - ``latency_ms``: on the hardware target (``hardware=...``).
    - ``memory_mb``: peak activation memory.
    """

    params_m: Any = field(default_factory=ConstraintWindow)
    flops_m: Any = field(default_factory=ConstraintWindow)
    latency_ms: Any = field(default_factory=ConstraintWindow)
    memory_mb: Any = field(default_factory=ConstraintWindow)

    def validate(self, prefix: str = "constraints") -> None:
        for f in fields(self):
            check_window(f"{prefix}.{f.name}", getattr(self, f.name))


@dataclass
class RunConfig:
    """The composed config's root: the run's own keys, then one node per group.

    - ``seed``: seeds data splits, weights, subnet sampling, searches and proxies.
    - ``stages``: stages to run, in order (a non-empty subset of zero_shot, supernet,
      search, final, quantize); finished stages of a resumed run are skipped. Add
      quantize (after final) for a per-layer INT8/FP32 assignment deployed with ONNX
      Runtime.
    - ``threads``: CPU threads for training and proxies: auto = the cores not already
      busy when the run starts (from the load average, at least 1), so a shared machine
      is not oversubscribed; or a number. Latency timing uses ``hardware.threads``.
    - ``progress``: progress on long work: bar (rich bars, terminals only) | log (a log
      line every ``progress_interval_s`` seconds) | auto (bars on a terminal, log lines
      otherwise.
    - ``progress_interval_s``: seconds between progress log lines.
    - ``constraints``: :class:`ConstraintsConfig`.

    The group nodes (data, proxy, hardware, zero_shot, supernet, model, search, final,
    quantize, trainer, paths) are filled by the groups; those with a schema of their own
    (``<group>/_schema`` in Hydra's ConfigStore) are typed by it.
    """

    seed: int = 0
    stages: list[str] = field(default_factory=lambda: ["zero_shot", "supernet", "search", "final"])
    threads: int | str = "auto"
    progress: str = "auto"
    progress_interval_s: int | float = 30
    constraints: ConstraintsConfig = field(default_factory=ConstraintsConfig)
    data: Any = None
    proxy: Any = None
    hardware: Any = None
    zero_shot: Any = None
    supernet: Any = None
    model: Any = None
    search: Any = None
    final: Any = None
    quantize: Any = None
    trainer: Any = None
    paths: Any = None

    def validate(self) -> None:
        """ValueError for the first top-level value out of range, then each group's
        ``validate()`` and the checks across groups."""
        check_int("seed", self.seed)
        stages = list(self.stages)
        if not stages or any(s not in STAGES for s in stages):
            raise ValueError(f"stages={stages}: use a non-empty subset of {list(STAGES)}")
        if stages != [s for s in STAGES if s in stages]:
            raise ValueError(f"stages={stages} must keep the order {list(STAGES)}")
        if self.threads != "auto" and (not is_int(self.threads) or self.threads < 1):
            raise ValueError(f"threads={self.threads!r}: use auto or an integer >= 1")
        if self.progress not in PROGRESS:
            raise ValueError(f"progress={self.progress!r}: choose one of {list(PROGRESS)}")
        check_number(
            "progress_interval_s", self.progress_interval_s, 0.0, "give the seconds between lines"
        )
        self.constraints.validate()
        for name in ("zero_shot", "supernet", "search", "final", "quantize", "trainer", "paths"):
            node = getattr(self, name)
            if hasattr(node, "validate"):
                node.validate()
        supernet, search = self.supernet, self.search
        if getattr(supernet, "pool_within_cap", False) and (
            getattr(search, "max_latency_ratio", 0.6) is None
        ):
            raise ValueError(
                "supernet.pool_within_cap=true needs search.max_latency_ratio (the cap the pool "
                "keeps to): set a ratio or pool_within_cap=false"
            )
