"""Objectives: train-free DE-Score on subnets, and accuracy with inherited weights."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from hwnas.core.types import ProxyInputs
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.base import CostModel
from hwnas.proxies.descore import DEScore
from hwnas.search.base import Objective
from hwnas.spaces.base import Arch
from hwnas.tasks.base import Task

log = logging.getLogger(__name__)


def analytic_proxies(costs: Mapping[str, float]) -> dict[str, float]:
    """The ``flops`` proxy value the cost model already gives (``flops_m``, the same
    count in millions: equal to the proxy's own on the proxy module of the elastic CNN,
    ViT and BERT, tested), so the DE-Score does not count FLOPs again. (``params_m``
    is not used: the proxy counts only the proxy module, e.g. BERT without embeddings.)"""
    flops = costs.get("flops_m")
    return {} if flops is None else {"flops": float(flops) * 1e6}


class ZeroShotObjective(Objective):
    """DE-Score of each arch's subnet (exported from the supernet, so the supernet is
    never touched); components are raw per arch, normalised across the ranked set."""

    name = "descore"

    def __init__(
        self,
        model: ElasticModel,
        descore: DEScore,
        inputs: ProxyInputs,
        cost_model: CostModel | None = None,
        seed: int = 0,
    ):
        self.model, self.descore, self.inputs = model, descore, inputs
        self.cost_model, self.seed = cost_model, seed
        self._cache: dict[Arch, dict[str, float]] = {}
        self.failures: Counter[str] = Counter()  # proxy -> candidates it failed on

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            if arch not in self._cache:
                costs = self.cost_model(arch) if self.cost_model else {}
                sub = self.model.proxy_module(self.model.export(arch)).to(self.inputs.x.device)
                failed: dict[str, str] = {}
                self._cache[arch] = self.descore.components(
                    sub, self.inputs, self.seed, costs.get("latency_ms"), failures=failed,
                    known=analytic_proxies(costs), owned=True,
                )  # fmt: skip
                for name, error in failed.items():
                    if not self.failures[name]:
                        log.warning(
                            "proxy %s failed on %s (%s); such candidates rank last on its "
                            "term and the search goes on",
                            name,
                            arch.to_str(),
                            error,
                        )
                    self.failures[name] += 1
            out.append(dict(self._cache[arch]))
        return out

    @property
    def cost_terms(self) -> frozenset[str]:  # type: ignore[override]
        """``{"latency_ms"}`` when the DE-Score weights latency (its penalty term)."""
        return frozenset({"latency_ms"}) if "latency" in self.descore.weights else frozenset()

    def fitness(self, metrics: Sequence[dict[str, float]]) -> np.ndarray:
        return np.asarray(self.descore.combine(metrics), dtype=float)

    def stable_fitness(
        self,
        reference: Sequence[dict[str, float]],
        metrics: Sequence[dict[str, float]],
        exclude_costs: Collection[str] = (),
    ) -> np.ndarray:
        """DE-Scores normalised against the fixed ``reference``
        (:meth:`DEScore.combine_against`); ``"latency_ms"`` in ``exclude_costs`` leaves
        the latency penalty term out (a latency limit still applies)."""
        drop = ("latency",) if "latency_ms" in exclude_costs else ()
        return np.asarray(self.descore.combine_against(list(reference), metrics, drop), dtype=float)


class TaskObjective(Objective):
    """The task's validation metrics of a subnet with inherited weights after exact BN
    recalibration (``evaluate(arch) -> {metric: value}`` is injected by the caller);
    fitness is the task's primary metric, oriented so higher is better."""

    relative = False

    def __init__(self, evaluate: Callable[[Arch], Mapping[str, float]], task: Task):
        self._evaluate, self.task = evaluate, task
        self.name = task.primary_metric
        self._cache: dict[Arch, dict[str, float]] = {}

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        for arch in archs:
            if arch not in self._cache:
                self._cache[arch] = {k: float(v) for k, v in self._evaluate(arch).items()}
        return [dict(self._cache[a]) for a in archs]

    def fitness(self, metrics: Sequence[dict[str, float]]) -> np.ndarray:
        return np.asarray([self.task.fitness(m) for m in metrics], dtype=float)
