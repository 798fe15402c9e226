"""Search strategies side by side: same space, cost model, constraints and budget.

Space: the default CNN (``conf/model/elastic_cnn.yaml`` on 1x28x28, 10 classes); cost
model: ``conf/hardware/<hw>.yaml`` (latency table by default, cached in
``outputs/cache``); constraints: latency and parameters at most halfway between the
smallest and the largest arch. Objective: the train-free DE-Score
(``ZeroShotObjective`` with ``DEScore.default()`` on Gaussian inputs), or with
``--objective synflow`` a cheaper DE-Score of saliency and latency only.

The DE-Score is population-relative, so each strategy's own fitness values are not
comparable; all feasible archs evaluated by any strategy are pooled and re-scored
together, and every strategy's hypervolume (pooled score up, latency down; reference:
lowest pooled score, latency limit) and best score are computed on that common
scale. The objective's cache is shared, so later strategies run faster where they
revisit archs; compare evaluations, not wall time::

    python benchmarks/bench_strategies.py [--budget 40] [--objective descore|synflow]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from hwnas.elastic import build_model
from hwnas.hardware import Constraints, build_cost_model
from hwnas.proxies import DEScore, gaussian_inputs
from hwnas.search import SearchProblem, build_strategy
from hwnas.search.base import hypervolume_2d, pareto_front
from hwnas.search.objectives import ZeroShotObjective

ROOT = Path(__file__).resolve().parents[1]


def strategy_kwargs(budget: int) -> dict[str, dict]:
    quarter, eighth = max(4, budget // 4), max(2, budget // 8)
    return {
        "evolution": {"iterations": budget, "population": quarter, "top_k": eighth,
                      "mutations": eighth, "crossovers": eighth},
        "random": {"samples": budget},
        "nsga2": {"trials": budget, "population_size": quarter},
        "tpe": {"trials": budget, "n_startup_trials": quarter},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=40, help="evaluations per strategy")
    parser.add_argument("--objective", choices=["descore", "synflow"], default="descore")
    parser.add_argument("--hardware", default="cpu", help="conf/hardware/<name>.yaml")
    parser.add_argument("--batch", type=int, default=16, help="proxy batch size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    cfg_path = ROOT / "conf" / "model" / "elastic_cnn.yaml"
    model_cfg = OmegaConf.to_container(OmegaConf.load(cfg_path)) if cfg_path.is_file() else {}
    model = build_model({"name": "elastic_cnn", **model_cfg}, (1, 28, 28), 10)
    hw = OmegaConf.to_container(
        OmegaConf.load(ROOT / "conf" / "hardware" / f"{args.hardware}.yaml")
    )
    cost = build_cost_model(hw, model, ROOT / "outputs" / "cache")
    lo, hi = cost(model.space.min_arch()), cost(model.space.max_arch())
    limits = {k: lo[k] + 0.5 * (hi[k] - lo[k]) for k in ("latency_ms", "params_m")}
    constraints = Constraints({k: (None, v) for k, v in limits.items()})
    if args.objective == "descore":
        descore = DEScore.default()
    else:
        descore = DEScore({"saliency": 1.0, "latency": 1.0})
    inputs = gaussian_inputs(model.input_shape, args.batch, model.num_classes, args.seed)
    objective = ZeroShotObjective(model, descore, inputs, cost, args.seed)
    print(f"cost model: {cost.describe()}")
    print(f"constraints: {constraints.describe()}; objective: {descore}; budget {args.budget}\n")

    results, seconds = {}, {}
    for name, kwargs in strategy_kwargs(args.budget).items():
        problem = SearchProblem(model.space, objective, cost, constraints, seed=args.seed)
        start = time.perf_counter()
        results[name] = build_strategy(name, **kwargs).run(problem, budget=args.budget)
        seconds[name] = time.perf_counter() - start
        print(f"  {name:<9} done in {seconds[name]:6.1f} s")

    pool = {}
    for result in results.values():
        for e in result.history:
            if e.feasible:
                pool.setdefault(e.arch, e.metrics)
    archs = list(pool)
    scores = dict(zip(archs, objective.fitness([pool[a] for a in archs]), strict=True))
    ref = (min(scores.values()) - 1e-6, limits["latency_ms"])
    print(
        f"\n{len(archs)} distinct feasible archs pooled; hypervolume reference {ref[0]:.3f} "
        f"score, {ref[1]:.3f} ms"
    )
    header = f"{'strategy':<10}{'evals':>6}{'rejected':>9}{'front':>6}{'hypervolume':>13}"
    print(header + f"{'best score':>12}{'its ms':>8}{'its Mparams':>12}{'wall s':>8}")
    for name, result in results.items():
        feasible = [e for e in result.unique() if e.feasible]
        points = [(scores[e.arch], e.costs["latency_ms"]) for e in feasible]
        best = max(feasible, key=lambda e: scores[e.arch])
        rejected = sum(1 for e in result.history if not e.feasible)
        front = len(
            pareto_front(feasible, lambda e: scores[e.arch], lambda e: e.costs["latency_ms"])
        )
        print(
            f"{name:<10}{len(feasible):>6}{rejected:>9}{front:>6}"
            f"{hypervolume_2d(points, ref):>13.4f}{scores[best.arch]:>12.3f}"
            f"{best.costs['latency_ms']:>8.3f}{best.costs['params_m']:>12.3f}"
            f"{seconds[name]:>8.1f}"
        )


if __name__ == "__main__":
    main()
