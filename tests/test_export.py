"""The Pareto set, delivered: final.export=front writes every front point with a model
card and an index; python -m hwnas.export exports any point of a finished run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hwnas.app.config import compose_config
from hwnas.app.export import FrontPoint, pick_points
from hwnas.app.export_cli import main as export_main
from hwnas.app.pipeline import run
from hwnas.app.subnet_io import load_subnet
from hwnas.spaces.base import Arch

TINY = ["experiment=synthetic_tiny", "threads=1", "final.export=front"]


@pytest.fixture(scope="module")
def front_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(compose_config([*TINY, f"paths.output_dir={out}",
                            f"paths.cache_dir={out.parent / 'cache'}"]))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return out


def _points(n: int) -> list[FrontPoint]:
    return [FrontPoint(i, Arch({"i": i}), 0.5 + 0.1 * i, {"latency_ms": 1.0 + i}) for i in range(n)]


def test_pick_names_points_of_the_front():
    pts = _points(4)
    assert [p.index for p in pick_points(pts, "all")] == [0, 1, 2, 3]
    assert pick_points(pts, "fastest")[0].index == 0
    assert pick_points(pts, "most_accurate")[0].index == 3
    assert pick_points(pts, "2")[0].index == 2
    assert pick_points(pts, "latency_ms<=2.5")[0].index == 1  # most accurate within
    for bad, text in [("9", "has 4 points"), ("latency_ms<=0.1", "the least is 1"),
                      ("flops_m<=3", "no cost 'flops_m'"), ("best", "use <k>")]:  # fmt: skip
        with pytest.raises(ValueError, match=text) as err:
            pick_points(pts, bad)
        assert "\n" not in str(err.value)


def test_front_export_writes_every_point_with_a_card(front_run):
    final = front_run / "final"
    front = [line for line in (front_run / "search" / "pareto.csv").read_text().splitlines()[1:]]
    folders = sorted(p for p in (final / "front").iterdir() if p.is_dir())
    assert len(folders) == len(front) >= 2
    index = (final / "front" / "index.md").read_text()
    assert (final / "front" / "front.png").stat().st_size > 1000 and "(chosen)" in index
    chosen = json.loads((final / "card.json").read_text())
    assert chosen["chosen"] and chosen["test"]["method"].startswith("fine-tuned")
    for folder in folders:
        card = json.loads((folder / "card.json").read_text())
        assert {"subnet.pt", "subnet.onnx"} <= set(card["size_mb"])
        assert math.isfinite(card["test"]["acc"]) and card["speed"]["latency_ms"] > 0
        assert card["params_m"] > 0 and card["flops_m"] > 0 and card["hardware"]["threads"] == 1
        assert isinstance(card["hardware"]["cpu_flags"], list)
        assert card["commands"]["export"].endswith(
            f"pick={card['point']}" + (" finetune=true" if card["chosen"] else "")
        )
        assert f"| {card['point']}" in index and (folder / "card.md").read_text().startswith("#")
        # a plain nn.Module that computes what its ONNX file computes
        net = load_subnet(folder)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(folder / "subnet.onnx"))
        x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(y, net(x).numpy(), rtol=1e-4, atol=1e-4)
    assert sum(json.loads((f / "card.json").read_text())["chosen"] for f in folders) == 1
    done = json.loads((final / "DONE.json").read_text())
    assert len(done["exported"]) == len(folders) + 1


def test_the_export_command_exports_a_point_of_a_finished_run(front_run, capsys, one_thread):
    assert export_main([f"run_dir={front_run}", "pick=most_accurate", "threads=1"]) == 0
    out = front_run / "export" / "most_accurate"
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    card = json.loads((folder / "card.json").read_text())
    assert card["test"]["method"].startswith("inherited")  # not fine-tuned unless asked
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    cases = [
        ([f"run_dir={front_run}", "pick=most_accurate"], "already holds an export"),
        ([f"run_dir={front_run}", "pick=99"], "pick=99: the front has"),
        ([f"run_dir={front_run}", "pick=best"], "use <k>"),
        ([f"run_dir={front_run}", "finetune=maybe"], "finetune='maybe'"),
        ([f"run_dir={front_run.parent}"], "hwnas_config.yaml is missing"),
        (["pick=0"], "run_dir= is missing"),
    ]
    for argv, expect in cases:
        assert export_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and expect in err[0], err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
