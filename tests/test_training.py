"""Supernet training pieces: sandwich rule, pools, phases, BN recalibration, subnet fit."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from hwnas.tasks.base import distill_loss
from hwnas.training.bn import recalibrate_bn
from hwnas.training.subnet import SubnetModule
from hwnas.training.supernet import Phase, SupernetModule
from tests.conftest import tiny_cnn

PHASES = [
    Phase("largest", (), 1, 0.1),
    Phase("kernel", ("kernel",), 1, 0.03),
    Phase("all", ("kernel", "depth", "width"), 2, 0.03),
]


def test_sandwich_rule_and_pool_sampling():
    module = SupernetModule(tiny_cnn(), PHASES, num_random=3, seed=0)
    space = module.phase_space(2)
    archs = module.subnets_for_step(2)
    assert archs[0] == space.max_arch() and archs[1] == space.min_arch()
    assert len(archs) == len(set(archs)) and len(archs) >= 3
    pool = [space.sample(module.rng) for _ in range(2)]
    module.pools[2] = pool
    for _ in range(10):
        assert all(a in pool for a in module.subnets_for_step(2)[2:])
    # phase 0 has one arch: largest == smallest, deduplicated
    assert module.subnets_for_step(0) == [module.phase_space(0).max_arch()]


def test_sandwich_without_the_smallest():
    module = SupernetModule(tiny_cnn(), PHASES, num_random=2, seed=0, smallest=False)
    space = module.phase_space(2)
    pool = [a for a in (space.sample(module.rng) for _ in range(20)) if a != space.min_arch()]
    module.pools[2] = pool[:3]
    for _ in range(10):
        archs = module.subnets_for_step(2)
        assert archs[0] == space.max_arch() and space.min_arch() not in archs
        assert all(a in pool[:3] for a in archs[1:]) and len(archs) >= 2
    with pytest.raises(ValueError, match="num_random >= 1"):
        SupernetModule(tiny_cnn(), PHASES, num_random=0, smallest=False)


def test_validation_runs_once_when_largest_is_smallest():
    module = SupernetModule(tiny_cnn(), PHASES)
    state = torch.get_rng_state()
    module.on_validation_epoch_start()  # epoch 0: phase "largest", one arch
    assert module._val_nets["smallest"] is module._val_nets["largest"]
    # the exports' weight initialisation does not move the training's RNG
    assert torch.equal(state, torch.get_rng_state())


def test_phase_schedule():
    module = SupernetModule(tiny_cnn(), PHASES)
    assert [module.phase_index(e) for e in range(5)] == [0, 1, 2, 2, 2]
    assert module.total_epochs == 4 and module.phase_start(2) == 2


def test_unknown_elastic_group_is_rejected():
    with pytest.raises(ValueError):
        SupernetModule(tiny_cnn(), [Phase("x", ("colour",), 1, 0.1)])


def test_width_phase_reorders_channels_once():
    model = tiny_cnn()
    module = SupernetModule(model, PHASES)
    calls = []
    model.reorganize_by_importance = lambda saliency=None: calls.append(saliency)
    module.enter_phase(1)
    assert calls == []
    module.enter_phase(2)
    module.enter_phase(2)
    assert calls == [None]  # by weight magnitude: no loss saliency


def test_recalibrate_bn_is_exact():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    data = torch.randn(40, 1, 8, 8) * 3 + 1
    batches = [(data[i : i + 8], torch.zeros(8)) for i in range(0, 40, 8)]
    recalibrate_bn(net, batches, num_samples=40)
    feats = net[0](data)
    torch.testing.assert_close(net[1].running_mean, feats.mean(dim=(0, 2, 3)))
    assert not net.training
    assert net[1].momentum == 0.1  # restored


def test_distill_loss_is_zero_for_identical_logits():
    t = torch.randn(5, 10)
    assert distill_loss(t, t, 2.0).abs().item() < 1e-6
    assert distill_loss(torch.randn(5, 10), t, 2.0).item() > 0


def _loaders(n=96):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 16, 16, generator=g) + (2.0 * y - 1.0).view(n, 1, 1, 1)
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=32), DataLoader(ds, batch_size=48)


def _trainer(epochs):
    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )


def test_supernet_trains_through_phases_and_logs_both_ends():
    L.seed_everything(0)
    train, val = _loaders()
    model = tiny_cnn()
    module = SupernetModule(
        model, PHASES, num_random=1, calibration=lambda: train, calib_samples=64
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer(module.total_epochs)
    trainer.fit(module, train, val)
    metrics = trainer.callback_metrics
    assert "val/acc_largest" in metrics and "val/acc_smallest" in metrics
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("transforms" in k for k in changed)  # kernel phase trained the transforms


def test_subnet_module_fits_and_tests():
    L.seed_everything(0)
    train, val = _loaders(512)
    net = tiny_cnn().export(tiny_cnn().space.min_arch()).eval()
    module = SubnetModule(net, epochs=3, lr=0.05)
    trainer = _trainer(3)
    trainer.fit(module, train, val)
    (res,) = trainer.test(module, val, verbose=False)
    assert res["test/acc"] > 0.9


def test_frozen_teacher_is_the_largest_after_phase_zero_and_never_trains(tmp_path, monkeypatch):
    L.seed_everything(0)
    train, val = _loaders()
    model = tiny_cnn()
    path = tmp_path / "teacher.pt"
    module = SupernetModule(model, PHASES[:2], num_random=1, calibration=lambda: train,
                            calib_samples=64, teacher="frozen", teacher_path=path)  # fmt: skip
    snapshots = {}
    real = module.freeze_teacher

    def spy():  # the largest subnet's weights at the moment it is frozen
        if not module._teacher:
            snapshots["at_freeze"] = model.export(model.space.max_arch()).state_dict()
        return real()

    monkeypatch.setattr(module, "freeze_teacher", spy)
    targets, produced = [], []  # what the smaller subnets distil from, what the teacher gave
    distill = module.task.distill_loss

    def spy_distill(out, target, temperature):
        targets.append(target.data_ptr())
        if module._teacher and not module._teacher[0]._forward_hooks:
            module._teacher[0].register_forward_hook(lambda m, i, o: produced.append(o.data_ptr()))
        return distill(out, target, temperature)

    monkeypatch.setattr(module.task, "distill_loss", spy_distill)
    _trainer(module.total_epochs).fit(module, train, val)
    assert produced and set(targets[-len(produced) :]) <= set(produced)
    teacher = module._teacher[0]
    saved = torch.load(path, weights_only=True)
    assert saved.keys() == snapshots["at_freeze"].keys()
    assert all(torch.equal(saved[k], snapshots["at_freeze"][k]) for k in saved)
    assert all(torch.equal(v, saved[k]) for k, v in teacher.state_dict().items())
    after = model.export(model.space.max_arch()).state_dict()  # phase 1 trained on
    assert any(not torch.equal(after[k], saved[k]) for k in saved)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert "teacher" not in "".join(module.state_dict())  # not part of the checkpoint
    # a resumed run reads the same teacher back instead of freezing the trained largest
    again = SupernetModule(model, PHASES[:2], teacher="frozen", teacher_path=path)
    restored = again.freeze_teacher().state_dict()
    assert all(torch.equal(restored[k], saved[k]) for k in saved)
    with pytest.raises(ValueError, match="supernet.teacher"):
        SupernetModule(model, PHASES, teacher="oracle")


def test_supernet_phases_warm_up_then_decay():
    """``supernet.warmup_fraction``: each phase's LR rises linearly to its peak over
    that fraction of the phase's steps, then follows the cosine to zero; 0 keeps the
    plain cosine from the peak."""
    from types import SimpleNamespace

    from hwnas.domains.image.models.cnn import ElasticCNN
    from hwnas.training.supernet import Phase, SupernetModule
    from tests.test_mo_search import TINY

    phases = [Phase("largest", (), 2, 0.1), Phase("kernel", ("kernel",), 1, 0.05)]

    def lrs(warmup: float) -> list[float]:
        module = SupernetModule(ElasticCNN(**TINY), phases, warmup_fraction=warmup)
        opt = torch.optim.SGD(module.parameters(), lr=1.0)
        out = []
        for epoch in range(3):
            trainer = SimpleNamespace(num_training_batches=10, optimizers=[opt],
                                      current_epoch=epoch)  # fmt: skip
            module._trainer = trainer
            out += [module._set_lr(b) for b in range(10)]
        return out

    plain, warm = lrs(0.0), lrs(0.25)
    assert plain[0] == pytest.approx(0.1) and plain[20] == pytest.approx(0.05)
    assert warm[0] == pytest.approx(0.1 / 5)  # 1 of the 5 warm-up steps of phase 0
    assert warm[4] == pytest.approx(0.1) and warm[:5] == sorted(warm[:5])
    assert all(b <= a for a, b in zip(warm[4:20], warm[5:20]))  # then decays
    assert warm[20] < warm[21] < warm[22] and warm[22] == pytest.approx(0.05)  # phase 1
    assert max(warm) == pytest.approx(0.1)
