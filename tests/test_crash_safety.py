"""Crash safety (#14): a run killed with SIGKILL at any moment resumes with the same
command and ends with the uninterrupted run's results; damaged files give one clear
error line naming them.

- the atomic writers (a kill between write and rename leaves the old file) and readers;
- the search journal: every strategy, resumed from a cut journal, measures only what is
  not journaled and returns the uninterrupted result;
- in-process, the supernet and final trainings resumed from mid-epoch and epoch-end
  checkpoints give bit-identical weights, summaries and ``metrics.csv`` logs;
- ``python -m hwnas`` killed with SIGKILL during the zero-shot search, during supernet
  training (after mid-training checkpoints) and during the on-supernet search, resumed
  each time, against an uninterrupted run of the same seed (equal, one thread);
- truncated ``DONE.json``, ``supernet.pt``, ``last.ckpt`` and journals.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.app.pipeline import run
from hwnas.core import atomic
from hwnas.search.base import Objective, SearchProblem, build_strategy
from hwnas.search.journal import JournaledObjective, journal_header
from hwnas.spaces.base import Arch
from tests.conftest import compose_config, tiny_cnn
from tests.test_search import ExactCost

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ atomic files
def test_atomic_writes_replace_whole_files(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic.write_json(path, {"x": 1})
    assert atomic.read_json(path) == {"x": 1}
    atomic.write_text(path, '{"x": 2}')
    assert atomic.read_json(path) == {"x": 2}
    atomic.torch_save({"w": torch.arange(3)}, tmp_path / "w.pt")
    assert torch.equal(atomic.torch_load(tmp_path / "w.pt")["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "sub", "w.pt"]


def test_kill_between_write_and_replace_leaves_the_old_file(tmp_path):
    """A child process killed inside the write (before the rename) leaves the old
    file whole; the next process to write there (here: this one's first write in the
    folder, as a resumed run's) replaces it and removes the stale temporary file."""
    path = tmp_path / "DONE.json"
    path.write_text('{"old": true}')
    pid = os.fork()
    if pid == 0:  # the child dies half-way through writing the new file
        try:
            with atomic.atomic_open(path, "w") as fh:
                fh.write('{"new": tr')
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert atomic.read_json(path) == {"old": True}
    (stale,) = tmp_path.glob(".DONE.json.*.tmp")
    assert stale.read_text() == '{"new": tr' and stale.name.endswith(f"-{pid}.tmp")
    atomic.write_json(path, {"new": True})
    assert atomic.read_json(path) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DONE.json"]


def test_processes_writing_one_file_at_once_never_share_a_temporary_file(tmp_path):
    """The ranks of a torchrun job fill the same cache file at once: each stages its
    own temporary file, so neither renames away the other's (the CI failure of stop 26:
    'No such file or directory: .<name>.tmp -> <name>'), and a live writer's temporary
    file is not taken for a stale one."""
    path = tmp_path / "cache.json"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other writer: opens its temporary file, waits, then renames
        try:
            with atomic.atomic_open(path, "w") as fh:
                fh.write('{"rank": 1}')
                os.read(read, 1)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(f".cache.json.*-{pid}.tmp")):
            assert time.monotonic() < deadline, "the other writer's temporary file"
            time.sleep(0.01)
        atomic.write_json(path, {"rank": 0})  # renames while the other is mid-write
        assert atomic.read_json(path) == {"rank": 0}
        assert list(tmp_path.glob(f".cache.json.*-{pid}.tmp"))  # not removed: it lives
    finally:
        os.write(write, b"x")
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert atomic.read_json(path) == {"rank": 1}  # its rename found its own file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]


def test_an_error_inside_the_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.txt"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError), atomic.atomic_open(path) as fh:
        fh.write("new")
        raise RuntimeError("boom")
    assert path.read_text() == "old" and not atomic.temporary_path(path).exists()


def test_truncated_files_raise_one_line_naming_them(tmp_path):
    path = tmp_path / "DONE.json"
    path.write_text('{"metrics": {"a": 1')
    with pytest.raises(atomic.CorruptFileError, match=f"{path} is truncated or corrupt") as err:
        atomic.read_json(path)
    assert "\n" not in str(err.value) and "delete" in str(err.value)
    weights = tmp_path / "supernet.pt"
    atomic.torch_save({"w": torch.ones(1000), "b": torch.zeros(10)}, weights)
    whole = weights.read_bytes()
    for cut in range(1, 20):  # wherever the file ends, one error naming it
        weights.write_bytes(whole[: len(whole) * cut // 20])
        with pytest.raises(atomic.CorruptFileError, match="supernet.pt is truncated") as err:
            atomic.torch_load(weights, fix="redo it")
        assert str(err.value).endswith(": redo it")
    weights.write_bytes(b"")
    with pytest.raises(atomic.CorruptFileError, match="empty file"):
        atomic.torch_load(weights)


def test_jsonl_drops_a_cut_last_line_and_refuses_a_damaged_one(tmp_path, caplog):
    path = tmp_path / "j.jsonl"
    for i in range(3):
        atomic.append_jsonl(path, {"i": i})
    with open(path, "a") as fh:
        fh.write('{"i": 3, "cut')
    with caplog.at_level(logging.WARNING):
        assert atomic.read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert "j.jsonl" in caplog.text and "cut off" in caplog.text
    atomic.append_jsonl(path, {"i": 3})  # the cut line was removed: a clean append
    assert atomic.read_jsonl(path) == [{"i": i} for i in range(4)]
    path.write_text('{"i": 0}\n{"i": oops}\n{"i": 2}\n')
    with pytest.raises(atomic.CorruptFileError, match="j.jsonl is truncated or corrupt .line 2"):
        atomic.read_jsonl(path)


# --------------------------------------------------------------- search journal
class _Relative(Objective):
    """A population-relative fitness (like the DE-Score) that counts measurements."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        self.calls += len(archs)
        return [{"size": self.model.cost_of(a)["params_m"] * 1.1} for a in archs]

    def fitness(self, metrics):
        sizes = np.asarray([m["size"] for m in metrics])
        return (sizes - sizes.mean()) / (sizes.std() + 1e-9)


STRATEGIES = {
    "evolution": dict(iterations=3, population=6, top_k=3, mutations=3, crossovers=3),
    "random": dict(samples=12),
    "nsga2": dict(trials=14, population_size=4),
    "tpe": dict(trials=14, n_startup_trials=4),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_resumed_search_replays_the_journal_and_ends_the_same(tmp_path, name, one_thread):
    model = tiny_cnn()
    cost = ExactCost(model)

    def search(path: Path):
        inner = _Relative(model)
        header = journal_header("test search", 3, model.space)
        objective = JournaledObjective(inner, path, header, cost)
        problem = SearchProblem(model.space, objective, cost, seed=3)
        result = build_strategy(name, **STRATEGIES[name]).run(problem)
        return result, inner.calls

    def summary(result):
        return (
            [(e.arch, e.fitness, e.feasible) for e in result.history],
            result.best.arch,
            [e.arch for e in result.top],
        )

    first, calls = search(tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == calls + 1  # a header, then one line per measured arch
    kept = calls // 2  # killed half-way, in the middle of writing the next line
    (tmp_path / "b.jsonl").write_text("".join(lines[: 1 + kept]) + lines[1 + kept][:17])
    again, measured = search(tmp_path / "b.jsonl")
    assert summary(again) == summary(first)
    assert measured == calls - kept
    assert (tmp_path / "b.jsonl").read_text() == "".join(lines)
    replay, none = search(tmp_path / "b.jsonl")  # all journaled: nothing measured
    assert summary(replay) == summary(first) and none == 0


def test_journal_of_another_search_is_set_aside(tmp_path):
    model = tiny_cnn()
    path = tmp_path / "evaluations.jsonl"
    arch = model.space.max_arch()
    unused = JournaledObjective(_Relative(model), path, journal_header("a", 0, model.space))
    assert not path.exists()  # nothing is written until the first evaluation
    unused.measure([arch])
    second = JournaledObjective(_Relative(model), path, journal_header("a", 1, model.space))
    assert (tmp_path / "evaluations.jsonl.stale").is_file() and not path.exists()
    second.measure([arch])
    assert atomic.read_jsonl(path)[0] == journal_header("a", 1, model.space)
    assert len(atomic.read_jsonl(path)) == 2


# ------------------------------------------------------------- resumable data
class _Buckets:
    """A batch sampler with an order of its own per epoch (like length buckets)."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch))
        return iter(order.view(-1, 4).tolist())

    def __len__(self) -> int:
        return self.n // 4


@pytest.mark.parametrize("kind", ["sampler", "batch_sampler"])
def test_resumable_loader_continues_the_epoch_where_it_stopped(kind):
    from torch.utils.data import DataLoader

    from hwnas.data.base import EpochSampler
    from hwnas.training.callbacks import ResumableLoader

    class Items(torch.utils.data.Dataset):  # what EpochSampler feeds: (index, aug seed)
        def __getitem__(self, key):
            return key[0] if isinstance(key, tuple) else key

        def __len__(self) -> int:
            return 32

    data = Items()
    if kind == "sampler":
        make = lambda: DataLoader(data, batch_size=4, sampler=EpochSampler(32, seed=1))  # noqa: E731
    else:
        make = lambda: DataLoader(data, batch_sampler=_Buckets(32))  # noqa: E731
    epoch = [2]
    whole = ResumableLoader(make(), lambda: epoch[0])
    if kind == "sampler":
        whole.sampler.set_epoch(2)  # what Lightning does before each epoch
    expected = [b.tolist() for b in whole]
    taken = ResumableLoader(make(), lambda: epoch[0])
    if kind == "sampler":
        taken.sampler.set_epoch(2)
    it = iter(taken)
    head = [next(it).tolist() for _ in range(3)]
    state = taken.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    resumed = ResumableLoader(make(), lambda: epoch[0])
    resumed.load_state_dict(state)
    if kind == "sampler":
        resumed.sampler.set_epoch(2)
    assert head + [b.tolist() for b in resumed] == expected
    epoch[0] = 3  # the next epoch is whole again
    if kind == "sampler":
        resumed.sampler.set_epoch(3)
    assert len(list(resumed)) == 8 and resumed.state_dict() == {"epoch": 3, "batches": 8}


# --------------------------------------------- in-process resume from checkpoints
TINY = ["experiment=synthetic_tiny", "threads=1", "progress=log", "final.onnx=false",
        "supernet.limit_train_batches=1.0", "final.limit_train_batches=1.0",
        "data.train_size=512", "trainer.checkpoint_every_n_steps=1",
        "trainer.log_every_n_steps=3"]  # fmt: skip


def _weights_equal(a: Path, b: Path) -> bool:
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_trainings_resume_exactly_from_mid_epoch_and_epoch_end_checkpoints(
    tmp_path, monkeypatch, one_thread
):
    """Snapshots of the run folder taken right after chosen checkpoint writes (a kill
    at that instant) resume to the same supernet weights, summaries and CSV logs, and
    the same fine-tuned test accuracy, as the run they were taken from."""
    cache = tmp_path / "cache"
    ref = tmp_path / "ref"
    writes: dict[str, list] = {}
    wanted = {("last.ckpt", 11), ("last.ckpt", 16), ("last_subnet.ckpt", 5)}
    snaps: list[tuple[str, int, Path]] = []
    real = atomic.torch_save

    def spy(obj, path):
        out = real(obj, path)
        name = Path(path).name
        if name.endswith(".ckpt"):
            writes.setdefault(name, []).append((obj["global_step"], obj["epoch"]))
            if (name, obj["global_step"]) in wanted:
                snap = tmp_path / f"{name}-{obj['global_step']}"
                shutil.copytree(ref, snap)
                snaps.append((name, obj["global_step"], snap))
        return out

    monkeypatch.setattr(atomic, "torch_save", spy)
    overrides = [*TINY, f"paths.cache_dir={cache}"]
    run(compose_config([*overrides, f"paths.output_dir={ref}"]))
    monkeypatch.setattr(atomic, "torch_save", real)
    # 8 batches per epoch: mid-epoch saves every step but on logging steps (3, 6, ...)
    # and on the last batch; the epoch-end save after it
    assert [s for s, _ in writes["last.ckpt"][:6]] == [1, 2, 4, 5, 7, 8]
    assert writes["last.ckpt"][5] == (8, 0)  # epoch 0's end
    assert len(snaps) == 3
    for name, step, snap in snaps:
        final = name != "last.ckpt"
        stages = [] if final else ["stages=[zero_shot,supernet]"]  # the rest is tested below
        run(compose_config([*overrides, f"paths.output_dir={snap}", *stages]))
        rels = ["supernet/logs/metrics.csv", "supernet/phase3_width/result.json"]
        if final:
            rels += ["final/logs_subnet/metrics.csv", "final/logs_largest/metrics.csv"]
        for rel in rels:
            assert (snap / rel).read_text() == (ref / rel).read_text(), (name, step, rel)
        assert _weights_equal(snap / "supernet/supernet.pt", ref / "supernet/supernet.pt")
        supernet = [atomic.read_json(d / "supernet/DONE.json") for d in (snap, ref)]
        assert supernet[0] == supernet[1]
        if final:
            assert _weights_equal(snap / "final/subnet.pt", ref / "final/subnet.pt")
            done = [atomic.read_json(d / "final/DONE.json")["metrics"] for d in (snap, ref)]
            for key in ("final/test_acc", "final/largest_test_acc"):
                assert done[0][key] == done[1][key], (name, step, key)


# ---------------------------------------------------- kill -9 during real runs
# Bigger searches than synthetic_tiny's, so each moment lasts long enough to be hit.
CLI = ["experiment=synthetic_tiny", "threads=1", "progress=log", "final.onnx=false",
       "zero_shot.budget=40", "supernet.limit_train_batches=1.0", "data.val_size=256",
       "trainer.checkpoint_every_n_steps=3", "search.budget=30",
       "search.val_samples=256"]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("HWNAS_DEBUG", None)


def _start(out: Path, cache: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hwnas", *CLI, f"hydra.run.dir={out}",
           f"paths.cache_dir={cache}", *extra]  # fmt: skip
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=fh, stderr=subprocess.STDOUT)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        time.sleep(0.003)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _writes(path: Path) -> Callable[[], int]:
    """How many times ``path`` has been (re)written since the call, by polling."""
    seen: set[tuple[int, int]] = set()

    def count() -> int:
        try:
            st = path.stat()
        except FileNotFoundError:
            return len(seen)
        seen.add((st.st_ino, st.st_mtime_ns))
        return len(seen)

    return count


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_done_json(out: Path) -> None:
    _truncate(out / "zero_shot/DONE.json")


def _damage_supernet_pt(out: Path) -> None:
    (out / "search/DONE.json").unlink()
    _truncate(out / "supernet/supernet.pt")


def _damage_last_ckpt(out: Path) -> None:
    (out / "supernet/DONE.json").unlink()
    _truncate(out / "supernet/checkpoints/last.ckpt")


def _damage_journal_middle(out: Path) -> None:
    (out / "search/DONE.json").unlink()
    path = out / "search/evaluations.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:2], lines[2][:30] + "\n", *lines[3:]]))


# name: (damage, the file the one-line error names)
DAMAGES = {
    "done_json": (_damage_done_json, "zero_shot/DONE.json"),
    "supernet_pt": (_damage_supernet_pt, "supernet/supernet.pt"),
    "last_ckpt": (_damage_last_ckpt, "supernet/checkpoints/last.ckpt"),
    "journal_middle": (_damage_journal_middle, "search/evaluations.jsonl"),
}
# one plain run on a damaged folder; the others as one multirun over their folders (a
# failing job is reported and the sweep goes on), to save process start-ups
SINGLE = "done_json"


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """An uninterrupted run; the same command killed with SIGKILL three times (zero-shot
    search, supernet training, on-supernet search) and resumed each time; and, started
    as soon as the uninterrupted run is done (in parallel, to save time), runs on
    damaged copies of its folder (:data:`DAMAGES`)."""
    tmp = tmp_path_factory.mktemp("kill9")
    cache, ref, out, log = tmp / "cache", tmp / "ref", tmp / "run", tmp / "run.log"
    whole = _start(ref, cache, tmp / "ref.log")
    # the latency line is fitted once into the cache, then shared
    deadline = time.monotonic() + 300
    while not (ref / "zero_shot/evaluations.jsonl").exists() and time.monotonic() < deadline:
        assert whole.poll() is None, (tmp / "ref.log").read_text()[-3000:]
        time.sleep(0.05)
    moments = {}
    journal = out / "zero_shot/evaluations.jsonl"
    _kill_when(_start(out, cache, log), lambda: _lines(journal) >= 6, "zero-shot scored 5")
    moments["zero_shot"] = _lines(journal) - 1
    assert not (out / "zero_shot/DONE.json").exists()

    ckpt = out / "supernet/checkpoints/last.ckpt"
    written = _writes(ckpt)
    _kill_when(_start(out, cache, log), lambda: written() >= 3, "3 supernet checkpoints")
    assert (out / "zero_shot/DONE.json").is_file() and not (out / "supernet/DONE.json").exists()
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    moments["supernet"] = (state["global_step"], state["epoch"])

    assert whole.wait(timeout=600) == 0, (tmp / "ref.log").read_text()[-3000:]
    folders = {}
    for name, (damage, _) in DAMAGES.items():
        folders[name] = tmp / name
        shutil.copytree(ref, folders[name])
        damage(folders[name])
    swept = ",".join(str(folders[n]) for n in DAMAGES if n != SINGLE)
    runs = {
        SINGLE: [f"hydra.run.dir={folders[SINGLE]}"],
        "sweep": [f"hydra.sweep.dir={tmp / 'sweep'}", f"paths.output_dir={swept}"],
    }
    damaged = {}
    for key, args in runs.items():
        flags = ["--multirun"] if key == "sweep" else []
        cmd = [sys.executable, "-m", "hwnas", *flags, *CLI, f"paths.cache_dir={cache}", *args]
        damaged[key] = subprocess.Popen(
            cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    journal = out / "search/evaluations.jsonl"
    _kill_when(_start(out, cache, log), lambda: _lines(journal) >= 4, "search measured 3")
    assert (out / "supernet/DONE.json").is_file() and not (out / "search/DONE.json").exists()
    moments["search"] = _lines(journal) - 1

    last = _start(out, cache, log)
    assert last.wait(timeout=600) == 0, log.read_text()[-3000:]
    outcomes = {}
    for key, proc in damaged.items():
        stdout, stderr = proc.communicate(timeout=600)
        outcomes[key] = (proc.returncode, stdout, stderr)
    return ref, out, log.read_text(), moments, (folders, outcomes)


def test_kill9_moments_were_hit(killed_and_resumed):
    _, _, text, moments, _ = killed_and_resumed
    assert 5 <= moments["zero_shot"] < 40  # budget 40: killed mid-search
    step, epoch = moments["supernet"]
    assert 0 < step < 16  # 4 epochs of 4 batches: killed mid-training
    assert 3 <= moments["search"]
    assert "zero_shot/evaluations.jsonl: " in text and "evaluations journaled, replayed" in text
    assert f"supernet/checkpoints/last.ckpt (step {step}, epoch {epoch + 1})" in text
    assert "search/evaluations.jsonl: " in text


def test_kill9_resumed_run_equals_the_uninterrupted_one(killed_and_resumed):
    ref, out, _, _, _ = killed_and_resumed
    for rel in ("zero_shot/result.json", "zero_shot/pool.json", "zero_shot/history.csv",
                "supernet/phase1_kernel/result.json", "supernet/phase3_width/pool.json",
                "supernet/DONE.json", "supernet/logs/metrics.csv", "search/result.json",
                "search/chosen.json", "search/history.csv",
                "final/logs_subnet/metrics.csv"):  # fmt: skip
        assert (out / rel).read_text() == (ref / rel).read_text(), rel
    assert _weights_equal(out / "supernet/supernet.pt", ref / "supernet/supernet.pt")
    assert _weights_equal(out / "final/subnet.pt", ref / "final/subnet.pt")
    done = [atomic.read_json(d / "final/DONE.json")["metrics"] for d in (out, ref)]
    for key in ("final/test_acc", "final/largest_test_acc", "final/drop"):
        assert done[0][key] == done[1][key], key
    # the earlier epochs' lines survived the kills: 4 epochs, each a val and a means line
    lines = (out / "supernet/logs/metrics.csv").read_text().splitlines()
    assert len([x for x in lines if x.startswith(("0,", "1,", "2,", "3,"))]) >= 8


# ------------------------------------------------------------- damaged files
@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_damaged_files_give_one_clear_error(killed_and_resumed, name):
    """Each damaged file stops its run with one ``error:`` line naming it and the fix,
    exit 2, no traceback (a plain run; the others as jobs of one multirun)."""
    folders, outcomes = killed_and_resumed[4]
    code, stdout, stderr = outcomes[SINGLE if name == SINGLE else "sweep"]
    path = folders[name] / DAMAGES[name][1]
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    lines = [x for x in stderr.splitlines() if x.startswith("error:") and str(path) in x]
    assert len(lines) == 1, stderr[-2000:]
    assert f"{path} is truncated or corrupt" in lines[0] and ": delete " in lines[0], lines[0]


def test_journal_cut_mid_line_is_a_warning_and_the_search_ends_the_same(
    killed_and_resumed, tmp_path, caplog, one_thread
):
    """A journal whose last line a kill cut off: that line is dropped with a warning
    naming the file, the arch measured again, and the search chooses as before."""
    ref = killed_and_resumed[0]
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    (out / "search/DONE.json").unlink()
    path = out / "search/evaluations.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # mid-line
    cfg = [*CLI, f"paths.output_dir={out}", f"paths.cache_dir={ref.parent / 'cache'}"]
    with caplog.at_level(logging.WARNING):
        run(compose_config(cfg))
    assert f"{path}: its last line was cut off by a crash" in caplog.text
    for rel in ("search/chosen.json", "search/result.json", "search/history.csv"):
        assert (out / rel).read_text() == (ref / rel).read_text(), rel
