"""Searches shared by several worker processes through one Optuna storage (#14)."""

from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna
import pytest

from hwnas.domains.image.models.cnn import ElasticCNN
from hwnas.search.base import build_strategy
from hwnas.search.optuna.codec import GeneCodec
from hwnas.search.optuna.distributed import (
    ALIVE,
    METRICS,
    WORKER,
    SharedStudy,
    StudyMismatchError,
    open_storage,
)
from hwnas.spaces.base import Arch
from tests.test_mo_search import TINY, ParamsObjective, _problem

BUDGET = 30
SETTINGS = {
    "tpe": {"trials": BUDGET, "n_startup_trials": 8, "top_k": 5},
    "nsga2": {"trials": BUDGET, "population_size": 8, "top_k": 5},
}
HEADER = {"search": "test", "seed": 0}


class SlowParams(ParamsObjective):
    """:class:`ParamsObjective` taking ``delay`` seconds per arch, recording what it
    measured; ``forbid`` makes any measurement an error (a replay must measure nothing)."""

    def __init__(self, cost, delay: float = 0.0, forbid: bool = False):
        super().__init__(cost)
        self.delay, self.forbid, self.archs = delay, forbid, []

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        if self.forbid:
            raise AssertionError(f"measured {archs} in a replay")
        time.sleep(self.delay * len(archs))
        self.archs += [a.to_str() for a in archs]
        return super().measure(archs)


def _search(storage: str, name: str, worker: int | None, delay: float, forbid: bool = False):
    problem = _problem(ElasticCNN(**TINY))
    problem.objective = SlowParams(problem.cost_model, delay, forbid)
    strategy = build_strategy(name, **SETTINGS[name])
    strategy.shared = SharedStudy(storage, "study", HEADER, worker=worker)
    result = strategy.run(problem)
    return {
        "measured": problem.objective.archs,
        "stats": dict(strategy.shared.stats),
        "result": json.dumps(result.to_json(), sort_keys=True),
        "history": json.dumps([e.row() for e in result.history], sort_keys=True),
    }


def _worker(storage, name, worker, barrier, queue) -> None:
    barrier.wait()  # both workers are up before either asks for a trial
    queue.put((worker, _search(storage, name, worker, delay=0.03)))


def _pg_bin(tool: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return found[-1] if found else shutil.which(tool)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a local socket (Debian's ``postgresql``
    package, installed by ``make test``); yields its SQLAlchemy URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    missing = "no PostgreSQL server here: make data-postgres installs it"
    if initdb is None or pg_ctl is None:
        if os.environ.get("HWNAS_REQUIRE_POSTGRES"):  # CI: must run, not skip
            pytest.fail(missing)
        pytest.skip(missing)
    if os.environ.get("HWNAS_REQUIRE_POSTGRES"):
        import psycopg2  # noqa: F401
    pytest.importorskip("psycopg2", reason="pip install psycopg2-binary (hwnas[dev])")
    # not under pytest's tmp folder: that is private to this user, the server's is not
    root = Path(tempfile.mkdtemp(prefix="hwnas-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the package's user
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        root.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]

    def pg(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{cmd[0]} failed: {done.stderr.strip()}"

    pg(initdb, "-D", str(data), "-A", "trust", "-U", "hwnas")
    opts = f"-k {sock} -c listen_addresses='' -c fsync=off"
    pg(pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
    version = subprocess.run([pg_ctl, "--version"], capture_output=True, text=True).stdout
    print(f"throwaway PostgreSQL cluster: {version.strip()}, socket {sock}")
    try:
        yield f"postgresql+psycopg2://hwnas@/postgres?host={sock}"
    finally:
        pg(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_two_workers_split_the_budget_and_agree(tmp_path, name):
    _two_workers(str(tmp_path / "study.journal"), name)


def test_two_workers_on_postgresql(postgres):
    """The same check against a real PostgreSQL server (Optuna's RDB storage)."""
    _two_workers(postgres, "tpe")


def _two_workers(storage: str, name: str) -> None:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(storage, name, i, barrier, queue)) for i in (0, 1)]
    for p in procs:
        p.start()
    outs: dict = {}
    deadline = time.monotonic() + 240
    while len(outs) < len(procs):
        crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        assert not crashed and time.monotonic() < deadline, f"worker exit codes {crashed}"
        try:
            worker, out = queue.get(timeout=1)
        except Exception:  # queue.Empty: still working
            continue
        outs[worker] = out
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    a, b = outs[0], outs[1]
    # disjoint candidates, together exactly the budget, both workers contributed
    assert a["measured"] and b["measured"], (a["stats"], b["stats"])
    assert not set(a["measured"]) & set(b["measured"])
    assert len(a["measured"]) + len(b["measured"]) == BUDGET
    assert len(set(a["measured"] + b["measured"])) == BUDGET
    # every worker returns the same result, formed from all evaluations
    assert a["result"] == b["result"] and a["history"] == b["history"]
    history = json.loads(a["history"])
    measured = {r["arch"] for r in history if r["feasible"]}
    assert measured == set(a["measured"]) | set(b["measured"])
    # a single process replaying the finished study measures nothing, finds the same
    replay = _search(storage, name, worker=None, delay=0.0, forbid=True)
    assert replay["result"] == a["result"] and replay["history"] == a["history"]
    # every measured arch has exactly one trial holding its metrics
    study = optuna.load_study(study_name="study", storage=open_storage(storage))
    holders = [t for t in study.get_trials(deepcopy=False) if METRICS in t.user_attrs]
    assert len(holders) == BUDGET


def test_one_worker_alone_meets_the_budget(tmp_path):
    out = _search(str(tmp_path / "s.journal"), "tpe", worker=0, delay=0.0)
    assert len(out["measured"]) == len(set(out["measured"])) == BUDGET
    assert out["stats"]["measured"] == BUDGET
    result = json.loads(out["result"])
    assert result["evaluations"] >= BUDGET


def test_a_study_of_another_search_is_refused(tmp_path):
    storage = str(tmp_path / "s.journal")
    _search(storage, "tpe", worker=0, delay=0.0)
    assert Path(storage).is_file()
    problem = _problem(ElasticCNN(**TINY))
    strategy = build_strategy("tpe", **SETTINGS["tpe"])
    strategy.shared = SharedStudy(storage, "study", {**HEADER, "seed": 1}, worker=0)
    with pytest.raises(StudyMismatchError, match="belongs to another search"):
        strategy.run(problem)


def test_a_stale_trial_is_failed_and_its_slot_searched_again(tmp_path):
    """A worker that died mid-measurement (its trial running, silent) does not block
    the others: its trial is failed once stale and the budget is still met."""
    storage = str(tmp_path / "s.journal")
    problem = _problem(ElasticCNN(**TINY))
    strategy = build_strategy("tpe", **SETTINGS["tpe"])
    dead = SharedStudy(storage, "study", HEADER, worker=7)
    study = optuna.create_study(storage=open_storage(storage), study_name="study")
    study.set_user_attr("hwnas.header", HEADER)
    codec = GeneCodec(problem.space)
    arch = problem.sample_feasible(random.Random(0))
    study.enqueue_trial(codec.encode(arch))
    ghost = study.ask(codec.distributions)
    ghost.set_user_attr("hwnas.worker", dead.tag)
    ghost.set_user_attr(ALIVE, time.time() - 3600)  # last heard of an hour ago
    problem.objective = SlowParams(problem.cost_model)
    strategy.shared = SharedStudy(storage, "study", HEADER, worker=0, stale_s=0.5)
    result = strategy.run(problem)
    assert strategy.shared.stats["stale_failed"] == 1
    assert len(problem.objective.archs) == BUDGET
    assert study.trials[ghost.number].state == optuna.trial.TrialState.FAIL
    assert sum(e.feasible for e in result.history) == BUDGET


def test_an_rdb_url_is_a_storage_too(tmp_path):
    """The RDB path of Optuna (here SQLite; PostgreSQL in .ci/run) shares a study."""
    out = _search(f"sqlite:///{tmp_path / 'study.db'}", "nsga2", worker=0, delay=0.0)
    assert len(out["measured"]) == BUDGET
    replay = _search(f"sqlite:///{tmp_path / 'study.db'}", "nsga2", None, 0.0, forbid=True)
    assert replay["result"] == out["result"]


def test_pipeline_stages_share_their_searches_with_worker_processes(tmp_path):
    """``zero_shot.workers=2`` / ``search.workers=2``: the stage starts a second worker
    (``python -m hwnas.app.search_worker``) on a journal in the stage folder; the stage's
    result holds each arch once, measured by exactly one of the workers."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hwnas", "experiment=synthetic_tiny", "threads=1",
           "progress=log", "stages=[zero_shot,supernet,search]", f"hydra.run.dir={out}",
           f"paths.cache_dir={tmp_path / 'cache'}", "data.val_size=256",
           "zero_shot/strategy=nsga2", "zero_shot.budget=120", "zero_shot.workers=2",
           "search/strategy=nsga2", "search.budget=30", "search.workers=2",
           "search.val_samples=256"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage, budget in (("zero_shot", 120), ("search", 30)):
        log = (out / stage / "worker1.log").read_text()
        assert "worker done" in log, log[-2000:]
        study = optuna.load_study(
            study_name=None, storage=open_storage(str(out / stage / "study.journal"))
        )
        holders = [t for t in study.get_trials(deepcopy=False) if METRICS in t.user_attrs]
        archs = [json.dumps(t.params, sort_keys=True) for t in holders]
        assert len(holders) == len(set(archs)) == budget
        tags = {t.user_attrs[WORKER].rsplit(":", 1)[1] for t in holders}
        assert tags <= {"0", "1"}
        history = json.loads((out / stage / "result.json").read_text())
        assert history["evaluations"] >= budget
    # a finished run resumes as done; the same folder with another worker count is the
    # same run (how many processes share a search is not part of its identity)
    again = subprocess.run([*cmd, "zero_shot.workers=1"], env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already done" in again.stdout + again.stderr


def test_the_worker_command_names_bad_arguments(tmp_path, capsys):
    from hwnas.app.search_worker import main

    for argv, message in (
        (["foo=1"], "unknown argument 'foo=1'"),
        ([f"run_dir={tmp_path}"], "missing ['stage']"),
        ([f"run_dir={tmp_path}", "stage=final"], "workers join zero_shot or search"),
        ([f"run_dir={tmp_path}", "stage=search", "worker=x"], "worker='x'"),
        ([f"run_dir={tmp_path}", "stage=search"], "hwnas_config.yaml not found"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
