"""Schema of ``conf/profile.yaml`` (``python -m hwnas.profile``: a latency lookup table
measured on this machine). It starts from the main config, so every group and experiment
of a run composes there too, and adds its own top-level keys: its root schema extends
the run's (:class:`~hwnas.app.schema.run.RunConfig`), and profile.yaml swaps it in with
``override schema: profile``."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.app.schema.base import check_bool, check_int
from hwnas.app.schema.run import RunConfig


@dataclass
class ProfileConfig(RunConfig):
    """The run's keys (only hardware, model, data and paths are read) and:

    - ``output``: the table's JSON path; null = ``<hydra run dir>/latency_table.json``.
    - ``install_in_cache``: also save a copy in ``paths.cache_dir`` under the name
      build_cost_model looks up.
    - ``seed``: picks the random whole networks of the correction fit (a run builds its
      own with 0).
    - ``rounds``: interleaved timing passes per piece (the smallest per-pass median is
      kept).
    - ``progress``: a rich progress bar (false: log lines only); a flag here, unlike a
      run's ``progress`` mode.
    """

    output: str | None = None
    install_in_cache: bool = True
    rounds: int = 3
    progress: bool = True  # type: ignore[assignment]  (a flag here, a mode in a run)

    def validate(self) -> None:
        """ValueError for a value out of range (the run's checks on the stages' groups do
        not apply: the profiler reads only hardware, model, data and paths)."""
        check_int("seed", self.seed)
        check_bool("install_in_cache", self.install_in_cache)
        check_int("rounds", self.rounds, 1)
        check_bool("progress", self.progress)
        if self.output is not None and (not isinstance(self.output, str) or not self.output):
            raise ValueError(f"output={self.output!r}: use null or a file path")
