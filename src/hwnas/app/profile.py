"""Build a latency lookup table for a search space on this machine::

    python -m hwnas.profile                          # conf/profile.yaml: cpu, elastic_cnn
    python -m hwnas.profile experiment=synthetic_tiny
    python -m hwnas.profile data=cifar10 hardware.threads=2 output=table.json

``conf/profile.yaml`` extends the main config, so the groups and experiments of a run
compose the same way here. The model (search space) comes from the ``model`` group,
its input shape and class count from the ``data`` group (nothing is loaded), the
measurement settings from the ``hardware`` group; other keys of the main config are
ignored. The table JSON goes to ``output`` (default: the Hydra run dir)
and, with ``install_in_cache``, also to ``paths.cache_dir`` under the name
:func:`hwnas.hardware.build_cost_model` looks up, so later runs reuse it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from scipy.stats import spearmanr

from hwnas.app.config import config_dir
from hwnas.core.types import to_plain
from hwnas.elastic import build_model
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.factory import HardwareConfig, build_table, table_cache_name
from hwnas.hardware.table import LatencyTable

log = logging.getLogger(__name__)

_REQUIRED = ("hardware", "model", "data")


def model_from_config(cfg: DictConfig | Mapping[str, Any]) -> ElasticModel:
    """The elastic model of ``cfg.model`` for the image shape and classes of ``cfg.data``."""
    from hwnas.app.data import build_data

    dm = build_data(cfg["data"])
    model_cfg = to_plain(cfg["model"])
    return build_model(model_cfg, tuple(dm.input_shape), int(dm.num_classes))


def run_profile(cfg: DictConfig | Mapping[str, Any]) -> dict[str, float]:
    """Build, save and summarise the table; returns its headline figures."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(
            f"profile config lacks {missing}; compose conf/profile.yaml (python -m hwnas.profile)"
        )
    hw = HardwareConfig.from_mapping(cfg.hardware)
    if hw.latency != "table":
        log.info(
            "hardware.latency=%s: the table is built anyway; use it with "
            "hardware.latency=table hardware.table=<output>",
            hw.latency,
        )
    model = model_from_config(cfg)
    out = Path(cfg.get("output") or "latency_table.json")
    with _progress_bar(bool(cfg.get("progress", True))) as progress:
        table = build_table(model, hw, progress, int(cfg.get("seed", 0)), int(cfg.get("rounds", 3)))
    table.save(out)
    print(f"latency table written to {out.resolve()}")
    if cfg.get("install_in_cache", True):
        cache_dir = Path(cfg.paths.cache_dir)
        cached = table.save(cache_dir / table_cache_name(model, hw))
        print(f"installed in the cache as {cached}")
    return summarize(table, model)


def summarize(table: LatencyTable, model: ElasticModel) -> dict[str, float]:
    """Print the table's metadata and fit quality; return the figures as a dict."""
    meta, corr = table.meta, table.correction
    small = table.predict(model, model.space.min_arch())
    large = table.predict(model, model.space.max_arch())
    figures = {
        "units": float(len(table.units)),
        "build_seconds": float(meta["build_seconds"]),
        "loo_mape": float(corr.loo_mape),
        "min_arch_ms": small,
        "max_arch_ms": large,
    }
    lines = [
        f"space         {meta['space_name']} (id {meta['space_id']}, input {meta['input_shape']})",
        f"device        {meta['device_name']}",
        f"setting       {table.setting()}, warm-up {meta['warmup']}, repeats {meta['repeats']}, "
        f"rounds {meta['rounds']}",
        f"versions      torch {meta['torch_version']}, onnxruntime {meta['onnxruntime_version']}"
        + (f", openvino {meta['openvino_version']}" if meta.get("openvino_version") else ""),
        f"units         {len(table.units)} profiled in {meta['build_seconds']:.1f} s",
        f"predicted     {small:.3f} ms (smallest arch) .. {large:.3f} ms (largest arch)",
    ]
    if corr.samples:
        measured = np.array([s["measured_ms"] for s in corr.samples])
        pred = np.array([corr.apply(s["table_ms"], s["units"]) for s in corr.samples])
        rho = float(spearmanr(pred, measured)[0]) if len(measured) > 2 else float("nan")
        figures["fit_spearman"] = rho
        lines.append(
            f"correction    {corr.kind}: {corr.formula()} with a={corr.scale:.4g}, "
            f"c={corr.per_unit:.4g}, b={corr.offset:.4g} ms; on {len(measured)} networks "
            f"leave-one-out MAPE {100 * corr.loo_mape:.1f}%, Spearman {rho:.3f}"
        )
    else:
        lines.append("correction    none (correction_samples=0): plain sum of units")
    print("\n".join(lines))
    return figures


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[int, int, str], None]]:
    if not enabled:
        yield _log_progress
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("profiling {task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield update


def _log_progress(done: int, total: int, what: str) -> None:
    if done == total or done % max(1, total // 10) == 0:
        log.info("profiled %d/%d (%s)", done, total, what)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="profile")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the correction's leave-one-out MAPE."""
    if not cfg.get("output"):
        from hydra.core.hydra_config import HydraConfig

        OmegaConf.set_struct(cfg, False)
        cfg.output = str(Path(HydraConfig.get().runtime.output_dir) / "latency_table.json")
    return float(run_profile(cfg)["loo_mape"])


if __name__ == "__main__":
    main()


# the benchmarks' models: the default config's CNN, or the ViT of vit_fashion_mnist
BENCH_MODELS = {"elastic_cnn": [], "elastic_vit": ["experiment=vit_fashion_mnist"]}


def model_overrides(model: str, patch_size: int = 7) -> list[str]:
    """Hydra overrides selecting ``model`` for the benchmarks: the default config's CNN,
    or the ViT of ``experiment=vit_fashion_mnist`` with the given patch size."""
    if model not in BENCH_MODELS:
        raise ValueError(f"model {model!r}: choose one of {list(BENCH_MODELS)}")
    patch = [f"model.patch_size={patch_size}"] if BENCH_MODELS[model] else []
    return [*BENCH_MODELS[model], *patch]
