"""The correlation harness beyond NAS-Bench-201: NAS-Bench-BERT's JSON lines (built from
the paper's layers, scored after a token embedding) and subnets of any hwnas space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from hwnas.app.config import CONFIG_DIR, ConfigError
from hwnas.app.correlate import run_correlation
from hwnas.app.correlate_io import load_table
from hwnas.spaces.parsing import get_arch_parser

# 8 records of NAS-Bench-BERT (Serianni & Kalita, ACL 2023; data CC-BY-4.0) covering
# every layer type, 2 and 4 layers, hidden 128 and 256
FIXTURE = Path(__file__).parent / "fixtures" / "nasbench_bert_small.jsonl"
CHEAP = ["params", "synflow", "naswot"]

pytestmark = pytest.mark.usefixtures("one_thread")


def compose_cfg(out: Path, *overrides: str):
    base = ["bootstrap=20", "plots=false", "batch_size=4", f"output_dir={out}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("correlate", overrides=[*base, *overrides])


def test_jsonl_table_gets_arch_strings_from_the_space():
    parser = get_arch_parser("nasbench_bert")
    table = load_table(FIXTURE, "arch", "glue", from_record=parser.from_record)
    assert len(table) == 8 and "scores.cola" in table.columns
    first = json.loads(FIXTURE.read_text().splitlines()[0])
    arch = parser.parse(table["arch"][0])
    assert arch["hidden_size"] == first["hidden_size"]
    assert len(arch["encoder_layers"]) == len(first["encoder_layers"])


def test_jsonl_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"hidden_size": 128, "encoder_layers": [], "glue": 60}\n{oops\n')
    parser = get_arch_parser("nasbench_bert")
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        load_table(bad, "arch", "glue", from_record=parser.from_record)
    bad.write_text('{"hidden_size": 100, "encoder_layers": [], "glue": 60}\n')
    with pytest.raises(ValueError, match=r"record 1: .*hidden_size"):
        load_table(bad, "arch", "glue", from_record=parser.from_record)


def test_nasbench_bert_harness_scores_and_resumes(tmp_path):
    over = [f"csv_path={FIXTURE}", "space=nasbench_bert", "accuracy_column=glue",
            "num_classes=2", "input_shape=[16,128]", "descore=false",
            f"proxies=[{','.join(CHEAP)}]"]  # fmt: skip
    metrics = run_correlation(compose_cfg(tmp_path, *over))
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert len(scores) == 8 and np.isfinite(scores[CHEAP].to_numpy()).all()
    assert np.isfinite(metrics["spearman/params"])
    # bigger encoders have more parameters: 4 layers of 256 beat 2 layers of 128
    archs = [json.loads(a) for a in scores["arch"]]
    size = [a["hidden_size"] * len(a["encoder_layers"]) for a in archs]
    assert scores["params"][int(np.argmax(size))] > scores["params"][int(np.argmin(size))]
    record = json.loads((tmp_path / "scores.jsonl").read_text().splitlines()[0])
    assert record["settings"]["source"] == "space"  # token ids through an embedding
    lines = len((tmp_path / "scores.jsonl").read_text().splitlines())
    run_correlation(compose_cfg(tmp_path, *over))  # resumed: nothing scored again
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == lines


def _vit_overrides():
    return ["model=elastic_vit", "data=synthetic", "data.shape=[1,16,16]",
            "data.train_size=16", "data.val_size=8", "data.test_size=8",
            "model.patch_size=4", "model.embed_choices=[16,32]", "model.depth_choices=[1,2]",
            "model.max_depth=2", "model.head_choices=[1,2]", "model.head_dim=8",
            "model.mlp_ratio_choices=[1,2]"]  # fmt: skip


def test_hwnas_space_scores_subnets_of_a_model(tmp_path):
    from hwnas.app.correlate_hwnas import register_hwnas_space

    cfg = compose_cfg(tmp_path, "space=hwnas", *_vit_overrides())
    register_hwnas_space(cfg)
    space = get_arch_parser("hwnas")
    import hwnas.elastic as elastic

    model = elastic.build_model(cfg.model, (1, 16, 16), 10)
    archs = [model.space.min_arch(), model.space.max_arch()]
    table = pd.DataFrame({"arch": [a.to_str() for a in archs], "acc": [0.3, 0.6]})
    csv = tmp_path / "subnets.csv"
    table.to_csv(csv, index=False)
    assert space.parse(archs[0].to_str()) == archs[0]
    out = tmp_path / "run"
    over = ["space=hwnas", *_vit_overrides(), f"csv_path={csv}", "accuracy_column=acc",
            "descore=false", f"proxies=[{','.join(CHEAP)}]"]  # fmt: skip
    run_correlation(compose_cfg(out, *over))
    scores = pd.read_csv(out / "scores.csv")
    assert scores["params"][1] > scores["params"][0]  # the largest subnet has more
    with pytest.raises(ConfigError, match="model=<name>"):
        run_correlation(compose_cfg(tmp_path / "x", "space=hwnas", f"csv_path={csv}"))
    with pytest.raises(ConfigError, match="hwnas.run_dir"):
        run_correlation(compose_cfg(tmp_path / "y", *over, "hwnas.weights=inherited"))


def _fake_run(tmp_path: Path, scale: float) -> Path:
    """A run folder as the pipeline leaves it: the recorded config and a supernet."""
    import torch
    from omegaconf import OmegaConf

    import hwnas.elastic as elastic
    from hwnas.app.config import compose_config

    run = tmp_path / "run"
    (run / "supernet").mkdir(parents=True)
    cfg = compose_config(["experiment=vit_synthetic_tiny", f"paths.output_dir={run}"])
    OmegaConf.save(cfg, run / "hwnas_config.yaml")
    torch.manual_seed(1)
    model = elastic.build_model(cfg.model, tuple(cfg.data.shape), 10)
    state = {k: v * scale if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, run / "supernet" / "supernet.pt")
    return run


def test_hwnas_space_inherits_a_runs_supernet(tmp_path):
    import torch

    run = _fake_run(tmp_path, scale=3.0)
    import hwnas.elastic as elastic
    from hwnas.app.config import load_run_config

    model = elastic.build_model(load_run_config(run).model, (1, 16, 16), 10)
    archs = [model.space.min_arch(), model.space.max_arch()]
    csv = tmp_path / "subnets.csv"
    pd.DataFrame({"arch": [a.to_str() for a in archs], "acc": [0.3, 0.6]}).to_csv(csv, index=False)
    over = ["space=hwnas", f"hwnas.run_dir={run}", f"csv_path={csv}", "accuracy_column=acc",
            "descore=false", "proxies=[params,weight_spectrum]"]  # fmt: skip
    run_correlation(compose_cfg(tmp_path / "inh", *over, "hwnas.weights=inherited"))
    run_correlation(compose_cfg(tmp_path / "init", *over))
    inh, init = (pd.read_csv(tmp_path / d / "scores.csv") for d in ("inh", "init"))
    assert np.allclose(inh["params"], init["params"])  # same archs
    assert (inh["weight_spectrum"] > init["weight_spectrum"]).all()  # 3x larger weights
    state = torch.load(run / "supernet" / "supernet.pt", weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] * float("nan")
    torch.save(state, run / "supernet" / "supernet.pt")
    with pytest.raises(Exception, match="supernet.pt"):
        run_correlation(compose_cfg(tmp_path / "nan", *over, "hwnas.weights=inherited"))
    with pytest.raises(ConfigError, match="hwnas.run_dir"):
        run_correlation(compose_cfg(tmp_path / "none", *over[:1], "hwnas.run_dir=/no/such/run",
                                    f"csv_path={csv}"))  # fmt: skip


def test_cli_input_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "hwnas.correlate", "space=hwnas", f"csv_path={tmp_path}/x.csv",
           f"hydra.run.dir={tmp_path}/out"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: space=hwnas needs the model and data")
    assert "Traceback" not in proc.stderr


def test_every_proxy_runs_on_every_nasbench_bert_layer_type():
    import hwnas.proxies as P

    layers = [{"operation_type": t, "operation_parameter": p, "num_operation_heads": 2,
               "feed_forward_dimension": 512, "num_feed_forward": n}
              for t, p, n in [("SA", "SDP", 1), ("SA", "WMA", 3), ("LT", "DFT", 1),
                              ("LT", "DCT", 3), ("DSC", 5, 1), ("DSC", 9, 1)]]  # fmt: skip
    parser = get_arch_parser("nasbench_bert")
    x = parser.data_free_input(4, (16, 128), 0)
    for four in (layers[:4], layers[2:]):  # the space holds 2 or 4 layers
        arch = parser.parse(json.dumps({"hidden_size": 128, "encoder_layers": four}))
        model = parser.build(arch, 2, seed=0)
        inputs = P.ProxyInputs(x, None, 2)
        report = P.score_proxies_report(P.list_proxies(), model, inputs, seed=0)
        assert report.failures == {} and not report.not_applicable
        assert all(np.isfinite(v) for v in report.scores.values())
    fourier = [dict(layer) for layer in layers[2:4]]  # no attention at all
    text = json.dumps({"hidden_size": 128, "encoder_layers": fourier})
    only_lt = parser.build(parser.parse(text), 2, seed=0)
    report = P.score_proxies_report(P.list_proxies(), only_lt, P.ProxyInputs(x, None, 2), seed=0)
    assert set(report.failures) == {"softmax_confidence"} == report.not_applicable
