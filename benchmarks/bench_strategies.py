"""Search strategies side by side: same space, cost model, constraints and budget.

Space: the default CNN (``conf/model/elastic_cnn.yaml`` on 1x28x28, 10 classes); cost
model: ``conf/hardware/<hw>.yaml`` (latency table by default, cached in
``outputs/cache``); constraints: latency and parameters at most halfway between the
smallest and the largest arch. Objective: the train-free DE-Score
(``ZeroShotObjective`` with ``DEScore.default()`` on Gaussian inputs), or with
``--objective synflow`` a cheaper DE-Score of saliency and latency only.

Every strategy runs once per search seed (``--seeds``, default 5: seeds
``--seed .. --seed + seeds - 1``); the objective (its inputs and proxy seed) stays the
same, so only the search differs. The DE-Score is population-relative, so each run's
own fitness values are not comparable; all feasible archs evaluated by any run are
pooled and re-scored together, and every run's hypervolume (pooled score up, latency
down; reference: lowest pooled score, latency limit) and best score are computed on
that common scale. Per strategy the table gives mean ± std (sample std) and min/max
over the seeds: differences smaller than the spread are not a ranking. The objective's
cache is shared, so later runs are faster where they revisit archs; compare
evaluations, not wall time::

    python benchmarks/bench_strategies.py [--budget 40] [--seeds 5] \
        [--objective descore|synflow] [--strategies evolution,random,nsga2,tpe]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from hwnas.app.config import CONFIG_DIR
from hwnas.elastic import build_model
from hwnas.hardware.constraints import Constraints
from hwnas.hardware.factory import build_cost_model
from hwnas.proxies import gaussian_inputs
from hwnas.proxies.descore import DEScore
from hwnas.search.base import SearchProblem, build_strategy
from hwnas.search.objectives import ZeroShotObjective
from hwnas.search.result import SearchResult, hypervolume_2d, pareto_front

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("evolution", "random", "nsga2", "tpe")
COLUMNS = ("hypervolume", "best score", "its ms", "front", "evals", "rejected", "wall s")


def strategy_kwargs(budget: int) -> dict[str, dict]:
    quarter, eighth = max(4, budget // 4), max(2, budget // 8)
    return {
        "evolution": {"iterations": budget, "population": quarter, "top_k": eighth,
                      "mutations": eighth, "crossovers": eighth},
        "random": {"samples": budget},
        "nsga2": {"trials": budget, "population_size": quarter},
        "tpe": {"trials": budget, "n_startup_trials": quarter},
    }  # fmt: skip


def spread(values: list[float]) -> str:
    """``mean ± std [min, max]`` (sample std; 0 for one value)."""
    v = np.asarray(values, dtype=float)
    std = v.std(ddof=1) if v.size > 1 else 0.0
    return f"{v.mean():.4f} ± {std:.4f} [{v.min():.4f}, {v.max():.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=40, help="evaluations per strategy")
    parser.add_argument("--seeds", type=int, default=5, help="search seeds per strategy")
    parser.add_argument("--objective", choices=["descore", "synflow"], default="descore")
    parser.add_argument("--hardware", default="cpu", help="conf/hardware/<name>.yaml")
    parser.add_argument("--batch", type=int, default=16, help="proxy batch size")
    parser.add_argument("--seed", type=int, default=0, help="first search seed; proxy seed")
    parser.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="comma-separated subset to run"
    )
    args = parser.parse_args()
    if args.budget < 1 or args.seeds < 1:
        parser.error("--budget and --seeds must be >= 1")
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    unknown = sorted(set(names) - set(STRATEGIES))
    if unknown or not names:
        parser.error(f"--strategies: unknown {unknown}; choose from {list(STRATEGIES)}")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    cfg_path = CONFIG_DIR / "model" / "elastic_cnn.yaml"
    model_cfg = OmegaConf.to_container(OmegaConf.load(cfg_path)) if cfg_path.is_file() else {}
    model = build_model({"name": "elastic_cnn", **model_cfg}, (1, 28, 28), 10)
    hw = OmegaConf.to_container(
        OmegaConf.load(CONFIG_DIR / "hardware" / f"{args.hardware}.yaml")
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
    seeds = list(range(args.seed, args.seed + args.seeds))
    print(f"cost model: {cost.describe()}")
    print(
        f"constraints: {constraints.describe()}; objective: {descore}; budget {args.budget}; "
        f"search seeds {seeds}\n"
    )

    runs: dict[tuple[str, int], tuple[SearchResult, float]] = {}
    for seed in seeds:
        for name in names:
            problem = SearchProblem(model.space, objective, cost, constraints, seed=seed)
            start = time.perf_counter()
            strategy = build_strategy(name, **strategy_kwargs(args.budget)[name])
            result = strategy.run(problem, budget=args.budget)
            runs[name, seed] = result, time.perf_counter() - start
            print(f"  {name:<9} seed {seed}: done in {runs[name, seed][1]:6.1f} s")

    pool = {}
    for result, _ in runs.values():
        for e in result.history:
            if e.feasible:
                pool.setdefault(e.arch, e.metrics)
    archs = list(pool)
    scores = dict(zip(archs, objective.fitness([pool[a] for a in archs]), strict=True))
    ref = (min(scores.values()) - 1e-6, limits["latency_ms"])
    print(
        f"\n{len(archs)} distinct feasible archs pooled over {len(seeds)} seeds; hypervolume "
        f"reference {ref[0]:.3f} score, {ref[1]:.3f} ms"
    )
    rows = {name: {k: [] for k in COLUMNS} for name in names}
    for (name, _), (result, seconds) in runs.items():
        feasible = [e for e in result.unique() if e.feasible]
        points = [(scores[e.arch], e.costs["latency_ms"]) for e in feasible]
        best = max(feasible, key=lambda e: (scores[e.arch], -e.costs["latency_ms"]))
        row = rows[name]
        row["evals"].append(len(feasible))
        row["rejected"].append(sum(1 for e in result.history if not e.feasible))
        row["front"].append(
            len(pareto_front(feasible, lambda e: scores[e.arch], lambda e: e.costs["latency_ms"]))
        )
        row["hypervolume"].append(hypervolume_2d(points, ref))
        row["best score"].append(scores[best.arch])
        row["its ms"].append(best.costs["latency_ms"])
        row["wall s"].append(seconds)
    print(f"\nmean ± std [min, max] over {len(seeds)} seeds")
    for key in COLUMNS:
        print(f"\n{key}")
        for name in names:
            print(f"  {name:<10}{spread(rows[name][key])}")
    print("\nranking by mean hypervolume (a difference below the std is noise):")
    by_hv = sorted(names, key=lambda n: -np.mean(rows[n]["hypervolume"]))
    for i, name in enumerate(by_hv, 1):
        hv = rows[name]["hypervolume"]
        print(f"  {i}. {name:<10}{spread(hv)}")


if __name__ == "__main__":
    main()
