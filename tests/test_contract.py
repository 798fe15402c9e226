"""The domain contract, checked for every registered model and data module (as timm's
tests loop over its registry): a model built tiny runs forward, its exported subnet
gives the supernet's outputs, the proxies score it, the cost model costs it and a saved
subnet loads back to the same outputs. A new model or data module is tested here for
free once it has a tiny experiment in ``TINY``."""

from __future__ import annotations

import math

import pytest
import torch

from hwnas.app.config import compose_config
from hwnas.app.context import build_context
from hwnas.app.subnet_io import load_subnet, save_subnet
from hwnas.core.types import Network
from hwnas.data import DATAMODULES, DataModule
from hwnas.elastic import MODELS, ElasticModel
from hwnas.search.objectives import ZeroShotObjective
from hwnas.tasks.base import Task

# registered model -> the tiny experiment that builds it
TINY = {
    "elastic_cnn": "synthetic_tiny",
    "elastic_vit": "vit_synthetic_tiny",
    "elastic_bert": "squad_tiny",
    "elastic_rnnt": "asr_tiny",
    "bootstrap": "bootstrap_tiny",
}


def test_every_registered_model_has_a_tiny_experiment():
    assert set(MODELS.names()) == set(TINY), "add the new model's tiny experiment to TINY"


@pytest.mark.parametrize("name", DATAMODULES.names())
def test_every_data_module_keeps_the_contract(name):
    cls = DATAMODULES.get(name)
    assert issubclass(cls, DataModule) and cls.name == name
    for hook in ("task", "proxy_batch", "calibration_loader", "setup"):
        assert getattr(cls, hook) is not getattr(DataModule, hook, None), (name, hook)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    built = {}

    def build(model: str):
        if model not in built:
            out = tmp_path_factory.mktemp(model)
            cfg = compose_config([
                f"experiment={TINY[model]}", f"paths.output_dir={out}",
                f"paths.cache_dir={out / 'cache'}", f"paths.data_dir={out / 'data'}",
                "hardware=analytic",
            ])  # fmt: skip
            built[model] = build_context(cfg)
        return built[model]

    return build


def _outputs(module: torch.nn.Module, inputs: tuple) -> list[torch.Tensor]:
    out = module(*inputs)
    if isinstance(out, dict):
        out = [v for v in out.values() if isinstance(v, torch.Tensor)]
    elif isinstance(out, tuple | list):
        out = [v for v in out if isinstance(v, torch.Tensor)]
    else:
        out = [out]
    return [o.float() for o in out]


@pytest.mark.parametrize("model", sorted(TINY))
def test_every_model_keeps_the_contract(model, contexts, tmp_path, one_thread):
    ctx = contexts(model)
    net = ctx.model
    assert isinstance(net, ElasticModel) and isinstance(net, Network)
    assert isinstance(ctx.task, Task) and isinstance(ctx.dm, DataModule)
    space = net.space
    archs = [space.max_arch(), space.min_arch()]
    inputs = ctx.task.example_inputs(2, torch.Generator().manual_seed(0))
    net.eval()
    for arch in archs:
        with torch.no_grad(), net.active(arch):
            want = _outputs(net, inputs)
            sub = net.export(arch).eval()
            got = _outputs(sub, inputs)
        assert len(got) == len(want) > 0
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
        costs = ctx.cost_model(arch)
        assert costs and all(math.isfinite(v) for v in costs.values()), costs
    # the proxies score the smallest and the largest (the DE-Score's raw terms)
    objective = ZeroShotObjective(net, ctx.descore, ctx.inputs, ctx.cost_model, 0)
    for row in objective.measure(archs):
        assert row and all(math.isfinite(v) for v in row.values()), row
    assert not objective.failures, dict(objective.failures)
    # a saved subnet loads back to the same outputs
    arch = archs[1]
    sub = net.export(arch).eval()
    save_subnet(tmp_path, sub, arch, ctx, onnx=False)
    back = load_subnet(tmp_path)
    with torch.no_grad():
        for g, w in zip(_outputs(back, inputs), _outputs(sub, inputs), strict=True):
            torch.testing.assert_close(g, w)
    # the hooks generic code calls answer with the declared types
    assert isinstance(net.hidden_layers(), list) and isinstance(net.importance_units(), list)
    assert isinstance(sub.proxy_blocks() if isinstance(sub, Network) else [], list | type(None))
