"""Helper of tests/test_ddp.py (not a test module): train a tiny supernet for two
progressive-shrinking phases with ``DEVICES`` CPU processes (DDP, gloo) at ``BATCH``
samples per process, and save every process's final weights to ``OUT/rank<r>.pt``.

    python tests/ddp_supernet.py OUT DEVICES BATCH [NAN_RANK]

With ``NAN_RANK`` the loss of that process alone turns NaN at the second step: every
process must stop there (none left waiting in the gradient all-reduce).

The data order is fixed (no shuffling), so 2 processes at batch B see, step by step,
the same samples as 1 process at batch 2B (the indices are dealt out alternately)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwnas.domains.image.models.cnn import ElasticCNN  # noqa: E402
from hwnas.training.supernet import Phase, SupernetModule  # noqa: E402
from tests.test_mo_search import TINY  # noqa: E402


def main(out: Path, devices: int, batch: int, nan_rank: int | None = None) -> None:
    # float64: this tiny net on random data amplifies rounding differences (a 1e-7
    # change of the weights moves float32 gradients by 1e-3), float64 keeps them small
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = ElasticCNN(**TINY)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 1, 16, 16, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    data = TensorDataset(x, y)

    class Data(L.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            # rank r takes samples r, r + n, r + 2n, ... in order (Lightning's own
            # distributed sampler would shuffle them)
            t = self.trainer
            order = DistributedSampler(data, t.world_size, t.global_rank, shuffle=False)
            return DataLoader(data, batch_size=batch, sampler=order)

    phases = [Phase("largest", (), 1, 0.05), Phase("kernel_depth", ("kernel", "depth"), 1, 0.05)]
    module = SupernetModule(model, phases, num_random=1, seed=3, weight_decay=0.0)
    trainer = L.Trainer(
        max_epochs=len(phases),
        accelerator="cpu",
        devices=devices,
        strategy=DDPStrategy(find_unused_parameters=True) if devices > 1 else "auto",
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        precision="64-true",
        use_distributed_sampler=False,
    )
    if nan_rank is not None:
        task_loss = module.task.loss

        def loss(outputs, targets):
            value = task_loss(outputs, targets)
            poisoned = trainer.global_rank == nan_rank and trainer.global_step == 1
            return value * float("nan") if poisoned else value

        module.task.loss = loss
    trainer.fit(module, datamodule=Data())
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, out / f"rank{trainer.global_rank}.pt")
    if trainer.global_rank == 0:
        (out / "steps.txt").write_text(str(trainer.global_step))


if __name__ == "__main__":
    torch.set_num_threads(1)
    nan_rank = int(sys.argv[4]) if len(sys.argv) > 4 else None
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), nan_rank)
