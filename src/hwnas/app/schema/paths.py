"""Schema of the ``paths`` group: where a run reads and writes. Relative paths resolve
against the directory you launch from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PathsConfig:
    """Folders (``paths.*``).

    - ``data_dir``: datasets (FashionMNIST is also found in /usr/share).
    - ``cache_dir``: latency tables, shared between runs.
    - ``output_dir``: this run's folder (every artifact goes here); by default Hydra's
      run folder (``hydra.run.dir``), an interpolation resolved only inside a Hydra run:
      give ``paths.output_dir=...`` when composing outside one. Typed optional because
      Hydra has no run folder yet under ``--cfg job --resolve`` (it resolves to null).
    """

    data_dir: str = "data"
    cache_dir: str = "outputs/cache"
    output_dir: str | None = "${hydra:runtime.output_dir}"

    def validate(self) -> None:
        """ValueError naming ``paths.<key>`` for an empty path."""
        for key in ("data_dir", "cache_dir", "output_dir"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"paths.{key}={value!r}: expected a folder; give a path")
