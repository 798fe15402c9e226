"""``hwnas reproduce RUN_DIR [hydra.run.dir=NEW] [threads=N] [KEY=VALUE ...]``: rerun a
finished run from its record, with the same hardware model, in a folder of its own, and
compare the two runs.

The rerun is ``python -m hwnas`` itself (so the packaged ``conf/hydra`` settings hold:
``hwnas.log`` in its folder) with the overrides the run was started with
(``<RUN_DIR>/.hydra/overrides.yaml``), started from the directory the run was started
from (relative paths mean the same), plus:

- the latency model the run recorded: ``hardware.table=<RUN_DIR>/latency_table.json``
  (``latency=table`` or ``flops``) or ``hardware.table=<RUN_DIR>/measured_latency.json``
  (``latency=measured``: the latencies it measured are replayed, not timed again);
- ``hydra.run.dir``: a new folder, by default ``<RUN_DIR>-reproduce-<n>`` beside the run;
  an existing folder that is not empty is refused (a reproduction never overwrites);
- ``stages=[...]`` when a resume added stages to those the run was started with;
- the command line's own ``KEY=VALUE`` overrides (``threads=N``...), last.

It ends by comparing the runs (:mod:`hwnas.app.run_diff`) and writes the comparison to
``<NEW>/reproduction.json``. Exit codes: 0 equal; 1 they differ (a table of what differs
is printed) or the rerun failed; 2 input to fix, in one ``error:`` line (not a run
folder, an unfinished run, an amended run: ``--compare-anyway`` reruns it with the
settings it ended with and compares anyway).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hwnas.app.run_diff import compare_runs, format_differences
from hwnas.app.schema.run import STAGES
from hwnas.core import atomic
from hwnas.hardware.records import MEASURED_NAME, RECORD_NAME

__all__ = ["ANYWAY", "USAGE", "Plan", "main", "plan"]

USAGE = (
    "usage: hwnas reproduce RUN_DIR [hydra.run.dir=NEW] [threads=N] [KEY=VALUE ...] "
    "[--compare-anyway]"
)
ANYWAY = "--compare-anyway"
CONFIG_FILE = "hwnas_config.yaml"  # hwnas.app.pipeline.CONFIG_FILE (not imported: no torch)
AMENDMENTS_FILE = "amendments.jsonl"
RESULT_FILE = "reproduction.json"
# overrides of the record the reproduction sets itself
_OWN_KEYS = ("hardware.table", "paths.output_dir", "hydra.run.dir")
_PLAIN = re.compile(r"[\w./@+-]+")


@dataclass
class Plan:
    """What ``hwnas reproduce`` runs: ``python -m hwnas overrides`` in ``cwd``."""

    run_dir: Path
    out: Path
    overrides: list[str]
    cwd: Path
    latency: str  # how the latency model is reused, in words
    threads: Any  # the thread count the rerun asks for
    amended: dict[str, Any] = field(default_factory=dict)


def main(argv: Sequence[str]) -> int:
    """The command; returns its exit code."""
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        p = plan(argv)
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("HWNAS_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"reproducing {p.run_dir} in {p.out}; {p.latency}", flush=True)
    code = rerun(p)
    if code == 2:  # the rerun refused its input and said why in one line
        return 2
    if code != 0:
        print(f"error: the reproduction stopped (exit {code}); its log: {p.out / 'hwnas.log'}",
              file=sys.stderr)  # fmt: skip
        return 1
    files, diffs = compare_runs(p.run_dir, p.out)
    atomic.write_json(
        p.out / RESULT_FILE,
        {"recorded": str(p.run_dir), "now": str(p.out), "equal": not diffs,
         "files": files, "overrides": p.overrides, "amended": p.amended,
         "differences": [d.to_dict() for d in diffs]},
    )  # fmt: skip
    print(format_differences(files, diffs))
    if diffs and p.threads != 1:
        print(f"note: ran with threads={p.threads}; results are bit-exact only at threads=1")
    return 1 if diffs else 0


def plan(argv: Sequence[str]) -> Plan:
    """Check the command line and the run folder; the rerun to start. Input to fix
    raises a one-line ``ValueError`` / ``FileNotFoundError``."""
    flags = [a for a in argv if a.startswith("-")]
    unknown = [f for f in flags if f != ANYWAY]
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; {USAGE}")
    positional = [a for a in argv if not a.startswith("-") and "=" not in a]
    if len(positional) != 1:
        what = "no RUN_DIR given" if not positional else f"one RUN_DIR, got {positional}"
        raise ValueError(f"{what}; {USAGE}")
    given = [a for a in argv if not a.startswith("-") and "=" in a]
    mine = {_key(o): o.split("=", 1)[1] for o in given}
    if "paths.output_dir" in mine:
        raise ValueError("paths.output_dir: choose the reproduction's folder with hydra.run.dir")
    run_dir = Path(positional[0]).expanduser().resolve()
    cfg, recorded = _read_run(run_dir)
    amended = _amendments(run_dir, anyway=ANYWAY in flags)
    out = _new_folder(run_dir, mine.get("hydra.run.dir"))
    latency, record = _latency_record(run_dir, cfg, "hardware.table" in mine)
    stages = None if "stages" in mine else _stages_run(run_dir, cfg)
    resumed = {"stages": stages} if stages is not None else {}
    drop = set(_OWN_KEYS) | set(mine) | set(amended) | set(resumed)
    overrides = [o for o in recorded if _key(o) not in drop]
    overrides += [o for o in hydra_overrides(run_dir) if _key(o) not in drop]
    overrides += [f"{k}={_value(v)}" for k, v in {**resumed, **amended}.items()]
    overrides += [o for o in given if _key(o) != "hydra.run.dir"]
    if record is not None:
        overrides.append(f"hardware.table={_value(str(record))}")
    overrides.append(f"hydra.run.dir={_value(str(out))}")
    threads = _threads(mine.get("threads", cfg.get("threads")))
    return Plan(run_dir, out, overrides, _started_in(run_dir), latency, threads, amended)


def rerun(p: Plan) -> int:
    """``python -m hwnas`` with the plan's overrides, from the run's start directory; its
    exit code (its output goes to this process's stdout and stderr)."""
    src = str(Path(__file__).resolve().parents[2])  # the folder holding hwnas
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [src, *(x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x)]
    )
    cmd = [sys.executable, "-m", "hwnas", *p.overrides]
    return subprocess.run(cmd, cwd=p.cwd, env=env, check=False).returncode


def _key(override: str) -> str:
    """The key an override sets: ``+a.b@pkg=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def _value(value: Any) -> str:
    """``value`` written as Hydra reads it back (strings quoted unless plain)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and not _other_type(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _other_type(text: str) -> bool:
    """Whether Hydra would read the plain ``text`` as something else than a string."""
    if text.lower() in ("null", "true", "false", "nan", "inf", "-inf", "+inf"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _threads(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _read_run(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The resolved config and the recorded overrides of a finished run folder."""
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir}: no such folder; give a run folder (outputs/runs/<time>)"
        )
    config = run_dir / CONFIG_FILE
    if not config.is_file():
        raise ValueError(
            f"{run_dir} is not a run folder (it has no {CONFIG_FILE}); give the folder a "
            "run wrote (outputs/runs/<time>)"
        )
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise ValueError(
            f"{run_dir} has no .hydra/overrides.yaml (a run started from Python, not by the "
            "hwnas command): its command line is unknown, so it cannot be rerun from its record"
        )
    try:
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
        recorded = yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{run_dir}: its record is unreadable ({type(err).__name__}); "
                         "restore it from a copy") from None  # fmt: skip
    if not isinstance(cfg, dict) or not isinstance(recorded, list):
        raise ValueError(f"{run_dir}: {CONFIG_FILE} or .hydra/overrides.yaml is damaged")
    stages = [str(s) for s in cfg.get("stages") or []]
    unfinished = [s for s in stages if not (run_dir / s / "DONE.json").is_file()]
    if unfinished:
        raise ValueError(
            f"{run_dir} is an unfinished run (stages {unfinished} have no DONE.json): finish "
            f"it first (hwnas hydra.run.dir={run_dir} resumes it), then reproduce it"
        )
    return cfg, [str(o) for o in recorded]


def _stages_run(run_dir: Path, cfg: dict[str, Any]) -> list[str] | None:
    """The stages the run finished when a resume added some to those it was started with
    (its record keeps the first start's ``stages``), else None. ``quantize`` counts only
    when recorded (``python -m hwnas.quantize`` finishes it outside the pipeline)."""
    recorded = [str(s) for s in cfg.get("stages") or []]
    done = [s for s in STAGES if s in recorded or (
        s != "quantize" and (run_dir / s / "DONE.json").is_file())]  # fmt: skip
    return done if done != recorded else None


def _amendments(run_dir: Path, anyway: bool) -> dict[str, Any]:
    """The settings an amended run ended with (``{key: value}``, later amendments win);
    refused without ``--compare-anyway``."""
    path = run_dir / AMENDMENTS_FILE
    if not path.is_file():
        return {}
    records = atomic.read_jsonl(path, repair=False)
    changed: dict[str, Any] = {}
    for rec in records:
        for key, (_, now) in (rec.get("changed") or {}).items():
            changed[key] = now
    if not anyway:
        keys = sorted(changed) or ["settings"]
        raise ValueError(
            f"{run_dir} was amended on resume ({', '.join(keys)} changed part-way, see "
            f"{AMENDMENTS_FILE}): it cannot be reproduced exactly; add {ANYWAY} to rerun it "
            "with the settings it ended with and compare anyway"
        )
    return changed


def _new_folder(run_dir: Path, given: str | None) -> Path:
    """The reproduction's folder: ``given`` (must not hold anything) or the first free
    ``<run_dir>-reproduce-<n>``."""
    if given is not None:
        out = Path(given).expanduser().resolve()
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(
                f"hydra.run.dir={given}: {out} exists and is not empty; a reproduction never "
                "overwrites: choose a new folder or leave hydra.run.dir out"
            )
        return out
    n = 1
    while (run_dir.parent / f"{run_dir.name}-reproduce-{n}").exists():
        n += 1
    return run_dir.parent / f"{run_dir.name}-reproduce-{n}"


def _latency_record(run_dir: Path, cfg: dict[str, Any], given: bool) -> tuple[str, Path | None]:
    """How the run's latency model is reused (in words) and the record to pass as
    ``hardware.table`` (None: none, or the command line gives one)."""
    hw = cfg.get("hardware") or {}
    method = hw.get("latency")
    if given:
        return "latency model: the hardware.table given", None
    name = MEASURED_NAME if method == "measured" else RECORD_NAME
    record = run_dir / name
    if record.is_file():
        how = "replayed" if method == "measured" else "reused"
        return f"latency model: {name} of the run {how} (latency={method})", record
    if method == "measured":
        return (
            f"warning: the run recorded no {MEASURED_NAME} (made by an older hwnas): every "
            "latency is timed again, so the searches may differ", None
        )  # fmt: skip
    return f"no latency model recorded (latency={method}: none estimated)", None


# Hydra-level overrides of the run that change what composes (a user's own config folder)
_COMPOSING_HYDRA_KEYS = ("hydra.searchpath",)


def hydra_overrides(run_dir: Path) -> list[str]:
    """The run's Hydra-level overrides that decide its composition (``hydra.searchpath``
    for a user's own experiment files), from ``.hydra/hydra.yaml``."""
    try:
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text(encoding="utf-8"))
        given = hydra["hydra"]["overrides"]["hydra"] or []
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    return [str(o) for o in given if _key(str(o)) in _COMPOSING_HYDRA_KEYS]


def _started_in(run_dir: Path) -> Path:
    """The directory the run was started from (``hydra.runtime.cwd`` of its record), so
    its relative paths mean the same; this one when that is gone."""
    try:
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text(encoding="utf-8"))
        cwd = Path(hydra["hydra"]["runtime"]["cwd"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return Path.cwd()
    return cwd if cwd.is_dir() else Path.cwd()
