"""Data modules: real-image CIFAR-10 fixture, Debian Fashion-MNIST, synthetic data."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hwnas.data import DATAMODULES, build_datamodule
from hwnas.domains.image.data.cifar10 import CIFAR10DataModule
from hwnas.domains.image.data.fashion_mnist import DEBIAN_DIR, FashionMNISTDataModule, read_idx
from hwnas.domains.image.data.synthetic import SyntheticDataModule

FIXTURE = Path(__file__).parent / "fixtures" / "cifar10"
MEAN = torch.tensor(CIFAR10DataModule.mean).view(3, 1, 1)
STD = torch.tensor(CIFAR10DataModule.std).view(3, 1, 1)


def _pngs() -> list[tuple[torch.Tensor, int]]:
    """(image (3, 32, 32) uint8, label from the file name) for the fixture PNGs, in order."""
    out = []
    for path in sorted((FIXTURE / "png").glob("cifar10_*.png")):
        label = int(re.fullmatch(r"cifar10_\d+_(\d)\.png", path.name).group(1))
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
        out.append((torch.from_numpy(pixels.copy()).permute(2, 0, 1), label))
    assert len(out) == 20, "tests/fixtures/cifar10/png must hold the 20 sample PNGs"
    return out


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """Undo the CIFAR-10 normalisation: (..., 3, 32, 32) float -> uint8."""
    return (x * STD + MEAN).mul(255).round().clamp(0, 255).to(torch.uint8)


def _cifar(**kw) -> CIFAR10DataModule:
    args = dict(data_dir=str(FIXTURE), verify=False, val_size=4, batch_size=4, eval_batch_size=8)
    dm = CIFAR10DataModule(**{**args, **kw})
    dm.setup("fit")
    return dm


def _epochs(loader, n: int = 2) -> list[torch.Tensor]:
    """The inputs of ``n`` passes over ``loader``, one (N, ...) tensor per pass."""
    return [torch.cat([x for x, _ in loader]) for _ in range(n)]


def test_cifar10_fixture_test_split_matches_pngs():
    dm = _cifar()
    xs, ys = zip(*dm.test_dataloader(), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 and dm.input_shape == (3, 32, 32)
    pngs = _pngs()
    assert y.tolist() == [label for _, label in pngs]
    raw = torch.stack([img for img, _ in pngs])
    # normalisation applied: exactly (pixel / 255 - mean) / std, not raw [0, 1] values
    assert torch.allclose(x, (raw.float() / 255 - MEAN) / STD, atol=1e-5)
    assert torch.equal(_pixels(x), raw)
    assert x.min() < -1.0 and x.max() > 1.0


def test_cifar10_split_sizes_and_disjoint_train_val():
    dm = _cifar(augment=False)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (16, 4, 20)
    seen = {}
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for x, y in loader:
            for img, label in zip(_pixels(x), y.tolist(), strict=True):
                key = img.numpy().tobytes()
                assert key not in seen, "an image is in both train and val (or twice)"
                seen[key] = label
    assert seen == {img.numpy().tobytes(): label for img, label in _pngs()}
    limited = _cifar(train_limit=5, test_limit=7)
    assert (len(limited.data_train), len(limited.data_test)) == (5, 7)
    assert set(limited.data_train.indices.tolist()) <= set(dm.data_train.indices.tolist())
    assert torch.equal(_cifar(train_limit=5).data_train.indices, limited.data_train.indices)


def test_cifar10_batches_deterministic_per_seed_and_augmented():
    a = _epochs(_cifar(seed=3).train_dataloader())
    b = _epochs(_cifar(seed=3).train_dataloader())
    c = _epochs(_cifar(seed=4).train_dataloader())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])  # epochs differ
    assert torch.equal(a[0], _epochs(_cifar(seed=3, batch_size=8).train_dataloader(), 1)[0])
    clean = {img.numpy().tobytes() for img, _ in _pngs()}
    augmented = [img.numpy().tobytes() not in clean for img in _pixels(a[0])]
    assert sum(augmented) >= len(augmented) // 2  # crops/flips move most images
    plain = _pixels(_epochs(_cifar(augment=False).train_dataloader(), 1)[0])
    assert all(img.numpy().tobytes() in clean for img in plain)


def test_cifar10_workers_do_not_change_batches():
    zero = _epochs(_cifar(seed=5).train_dataloader(), 1)[0]
    two = _epochs(_cifar(seed=5, num_workers=2).train_dataloader(), 1)[0]
    assert torch.equal(zero, two)


def test_cifar10_missing_offline_raises_one_line_and_creates_nothing(tmp_path):
    where = tmp_path / "nowhere"
    dm = CIFAR10DataModule(data_dir=str(where))
    dm.prepare_data()
    with pytest.raises(FileNotFoundError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "\n" not in msg and "data.download=true" in msg and "cifar-10-batches-py" in msg
    assert str(where) in msg and not where.exists()


def test_cifar10_md5_check_rejects_hand_built_copy():
    with pytest.raises(RuntimeError, match="data.verify=false"):
        CIFAR10DataModule(data_dir=str(FIXTURE), val_size=4).setup()


def test_calibration_loader_fixed_and_unaugmented():
    dm = _cifar(augment=True, seed=1)
    first = torch.cat([x for x, _ in dm.calibration_loader(10, batch_size=3)])
    again = torch.cat([x for x, _ in dm.calibration_loader(10, batch_size=5)])
    assert first.shape == (10, 3, 32, 32) and torch.equal(first, again)
    train_clean = {
        _pixels(dm.data_train.without_augment()[i][0]).numpy().tobytes() for i in range(16)
    }
    assert all(img.numpy().tobytes() in train_clean for img in _pixels(first))
    assert len({img.numpy().tobytes() for img in _pixels(first)}) == 10  # no repeats
    assert sum(len(y) for _, y in dm.calibration_loader(100)) == 16  # capped at the train size


def test_proxy_batch_seeded_and_unaugmented():
    dm = _cifar(augment=True)
    x, y = dm.proxy_batch(6, seed=0)
    x2, y2 = dm.proxy_batch(6, seed=0)
    x3, _ = dm.proxy_batch(6, seed=1)
    assert x.shape == (6, 3, 32, 32) and y.shape == (6,) and y.dtype == torch.long
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    labelled = {img.numpy().tobytes(): label for img, label in _pngs()}
    val = {_pixels(dm.data_val[i][0]).numpy().tobytes() for i in range(4)}
    for img, label in zip(_pixels(x), y.tolist(), strict=True):
        key = img.numpy().tobytes()
        assert labelled.get(key) == label and key not in val  # clean train images only
    with pytest.raises(ValueError, match="train split size"):
        dm.proxy_batch(17, seed=0)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def test_fashion_mnist_reads_idx_from_data_dir_first(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    gen = np.random.default_rng(0)
    imgs = {
        s: gen.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for s, n in (("train", 30), ("t10k", 9))
    }
    labs = {s: gen.integers(0, 10, len(imgs[s]), dtype=np.uint8) for s in imgs}
    for s in imgs:
        _write_idx(raw / f"{s}-images-idx3-ubyte.gz", imgs[s])
        _write_idx(raw / f"{s}-labels-idx1-ubyte", labs[s])  # uncompressed works too
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=6, augment=False)
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (24, 6, 9)
    x, y = next(iter(dm.test_dataloader()))
    assert y.tolist() == labs["t10k"].tolist()
    expected = (torch.from_numpy(imgs["t10k"]).float().unsqueeze(1) / 255 - 0.2860) / 0.3530
    assert torch.allclose(x, expected, atol=1e-5)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(str(raw / "t10k-labels-idx1-ubyte"))


def test_fashion_mnist_image_size_pads_with_background(tmp_path):
    gen = np.random.default_rng(1)
    imgs = {
        s: gen.integers(1, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 8), ("t10k", 4))
    }
    for s in imgs:
        _write_idx(tmp_path / f"{s}-images-idx3-ubyte", imgs[s])
        _write_idx(tmp_path / f"{s}-labels-idx1-ubyte", np.arange(len(imgs[s])) % 10)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=2, augment=False, image_size=33)
    assert dm.input_shape == (1, 33, 33) and dm.task().input_shape == (1, 33, 33)
    dm.setup()
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 1, 33, 33)
    background = (0 - 0.2860) / 0.3530
    inner = (torch.from_numpy(imgs["t10k"]).float().unsqueeze(1) / 255 - 0.2860) / 0.3530
    assert torch.allclose(x[:, :, 2:30, 2:30], inner, atol=1e-5)  # 5 extra: 2 before, 3 after
    border = torch.ones(33, 33, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.allclose(x[:, 0][:, border], torch.tensor(background), atol=1e-6)
    with pytest.raises(ValueError, match="image_size=20 is below"):
        FashionMNISTDataModule(data_dir=str(tmp_path), image_size=20)


def test_fashion_mnist_missing_offline_names_both_fixes(tmp_path):
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), system_dir=None)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "data.download=true" in msg and list(tmp_path.iterdir()) == []


def test_fashion_mnist_debian_package(tmp_path):
    if not os.path.isfile(os.path.join(DEBIAN_DIR, "train-images-idx3-ubyte.gz")):
        pytest.fail(f"{DEBIAN_DIR} is missing: run `apt-get install dataset-fashion-mnist`")
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=5000, train_limit=None)
    dm.setup()
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (55000, 5000, 10000)
    train_images = dm.data_train.images
    assert train_images.shape == (60000, 1, 28, 28) and train_images.dtype == torch.uint8
    assert torch.bincount(dm.data_test.labels, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(dm.data_train.labels, minlength=10).tolist() == [6000] * 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 1, 28, 28) and 0 <= y.min() and y.max() <= 9
    scaled = (train_images.float() / 255 - 0.2860) / 0.3530
    assert abs(scaled.mean().item()) < 0.01 and abs(scaled.std().item() - 1) < 0.01


def test_synthetic_deterministic_and_seed_dependent():
    a, b = SyntheticDataModule(seed=2), SyntheticDataModule(seed=2)
    c = SyntheticDataModule(seed=3)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.data_train.images, b.data_train.images)
    assert not torch.equal(a.data_train.images, c.data_train.images)
    assert (len(a.data_train), len(a.data_val), len(a.data_test)) == (512, 128, 128)
    assert a.data_train.images.shape[1:] == (1, 16, 16)
    batches = [[y for _, y in dm.train_dataloader()] for dm in (a, b)]
    assert all(torch.equal(p, q) for p, q in zip(*batches, strict=True))
    odd = SyntheticDataModule(
        shape=[3, 8, 12], num_classes=4, train_size=40, val_size=8, test_size=8
    )
    x, y = odd.proxy_batch(5, seed=0)
    assert odd.input_shape == (3, 8, 12) and x.shape == (5, 3, 8, 12) and int(y.max()) < 4


def test_synthetic_is_learnable_quickly():
    dm = SyntheticDataModule(seed=0)
    dm.setup()
    gen = torch.Generator().manual_seed(0)
    model = nn.Linear(16 * 16, dm.num_classes)
    with torch.no_grad():
        model.weight.copy_(torch.randn(model.weight.shape, generator=gen) * 0.01)
        model.bias.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for step, (x, y) in enumerate(dm.train_dataloader()):
        if step >= 4:
            break
        opt.zero_grad()
        nn.functional.cross_entropy(model(x.flatten(1)), y).backward()
        opt.step()
    x, y = next(iter(dm.test_dataloader()))
    accuracy = (model(x.flatten(1)).argmax(1) == y).float().mean().item()
    assert accuracy > 0.6, f"linear model reached only {accuracy:.2f} (chance 0.10)"


class _Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(16 * 16, 10)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append(y.clone())
        return nn.functional.cross_entropy(self.net(x.flatten(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_trainer_sees_the_seeded_epoch_orders():
    dm = SyntheticDataModule(seed=0, train_size=96, val_size=32, batch_size=32)
    model = _Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    loader = dm.train_dataloader()
    expected = [y for _ in range(2) for _, y in loader]
    assert len(model.seen) == 6 and len(expected) == 6
    assert all(torch.equal(p, q) for p, q in zip(model.seen, expected, strict=True))


def test_build_datamodule_by_name_and_errors(tmp_path):
    dm = build_datamodule({"name": "synthetic", "data_dir": str(tmp_path), "train_size": 64})
    assert isinstance(dm, SyntheticDataModule) and dm.train_size == 64
    with pytest.raises(ValueError, match="unknown data.name 'imagenet'") as err:
        build_datamodule({"name": "imagenet", "data_dir": str(tmp_path)})
    assert all(name in str(err.value) for name in DATAMODULES)
    with pytest.raises(TypeError, match="batchsize"):
        build_datamodule({"name": "cifar10", "data_dir": str(tmp_path), "batchsize": 3})
    with pytest.raises(ValueError, match="lower data.val_size"):
        _cifar(val_size=20)
