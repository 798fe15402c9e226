"""Beam-search decoding of the RNN-T: greedy at width 1, exact scores without pruning,
better transcripts than greedy, valid labels, config checks and export."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest
import torch
from omegaconf import OmegaConf

from hwnas.app.config import CONFIG_DIR
from hwnas.domains.asr.models.rnnt import BLANK, ElasticRNNT, StaticRNNT
from hwnas.elastic import build_model
from tests.test_rnnt import TINY

CONF = CONFIG_DIR


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs single-threaded (tests/conftest.py)."""


def tiny_model(seed: int, vocab_size: int, **kw) -> ElasticRNNT:
    """A random tiny RNN-T (eval mode) whose joiner is sharpened (output weights x2,
    encoder projection x3) so that the encoder matters and greedy emits labels."""
    torch.manual_seed(seed)
    model = ElasticRNNT(n_mels=12, vocab_size=vocab_size, **{**TINY, **kw}).eval()
    with torch.no_grad():
        model.joiner.out.weight.mul_(2.0)
        model.joiner.enc_proj.weight.mul_(3.0)
    return model


def features(seed: int, frames: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian features (B, max(frames), 12) and their lengths."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(len(frames), max(frames), 12, generator=gen), torch.tensor(frames)


def log_likelihoods(
    model: ElasticRNNT, feats: torch.Tensor, lengths: torch.Tensor, seqs: list[list[int]]
) -> list[float]:
    """Exact log P(y | x) of each label sequence of one utterance (``feats`` (1, T, F)):
    minus ``torchaudio.functional.rnnt_loss`` (a sum over every alignment)."""
    import torchaudio.functional as AF

    seqs = [*seqs, [1]]  # the model needs one label column even if every sequence is empty
    tokens = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    token_lengths = torch.tensor([len(s) for s in seqs])
    n = len(seqs)
    with torch.no_grad():
        out = model(feats.expand(n, -1, -1), lengths.expand(n), tokens, token_lengths)
        loss = AF.rnnt_loss(
            out["logits"], tokens.int(), out["lengths"].int(), token_lengths.int(),
            blank=BLANK, reduction="none",
        )  # fmt: skip
    return (-loss[:-1]).tolist()


def all_sequences(vocab_size: int, max_len: int) -> list[list[int]]:
    """Every label sequence (no blank) of at most ``max_len`` labels."""
    labels = range(1, vocab_size)
    return [list(s) for n in range(max_len + 1) for s in itertools.product(labels, repeat=n)]


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_beam_of_one_is_the_greedy_search(max_symbols):
    emitted = 0
    for seed in range(6):
        model = tiny_model(seed, 6, max_symbols=max_symbols)
        feats, lengths = features(seed, [40, 23, 9])
        enc, enc_lengths = model.encode(feats, lengths)
        greedy = model.greedy_decode(enc, enc_lengths)
        assert model.beam_decode(enc, enc_lengths, 1) == greedy
        emitted += sum(len(h) for h in greedy)
    assert emitted > 0  # the comparison covered label emissions, not only blanks


def test_unpruned_beam_scores_are_exact_log_likelihoods():
    """A beam wider than every candidate prunes nothing: each sequence of at most
    ``max_symbols`` labels scores its exact log P(y | x) (merged over alignments);
    longer ones lose the alignments with more than ``max_symbols`` labels in a frame.
    The predictor runs once per distinct label prefix."""
    rows: list[int] = []  # label sequences the predictor's LSTM stepped, per call
    for seed in range(3):
        model = tiny_model(seed, 3, max_symbols=3)
        feats, lengths = features(seed, [8])  # 2 encoder frames
        enc, enc_lengths = model.encode(feats, lengths)
        assert enc_lengths.tolist() == [2]
        rows.clear()
        hook = model.predictor.register_forward_hook(lambda m, a, o: rows.append(len(a[0])))
        (nbest,) = model.beam_search(enc, enc_lengths, 10_000)
        hook.remove()
        assert sum(rows) == 127  # once per distinct prefix: the start and 126 sequences
        seqs = [s for s, _ in nbest]
        assert sorted(map(tuple, seqs)) == sorted(map(tuple, all_sequences(3, 6)))  # 127
        scores = [v for _, v in nbest]
        assert scores == sorted(scores, reverse=True)
        exact = log_likelihoods(model, feats, lengths, seqs)
        for s, v, ref in zip(seqs, scores, exact):
            if len(s) <= 3:
                assert v == pytest.approx(ref, abs=1e-4), s
            else:
                assert v <= ref + 1e-4, s


def test_beam_finds_more_likely_transcripts_than_greedy():
    """Exact log-likelihoods (torchaudio's rnnt_loss) of every sequence of up to 6 labels
    over 3 encoder frames: the beam's choice scores at least greedy's (not a theorem of
    pruned beam search, checked on these seeds) and at most the best; the beam's own
    scores are lower bounds (sums over the alignments it kept)."""
    better = 0
    for seed in range(8):
        model = tiny_model(seed, 4, max_symbols=2)
        feats, lengths = features(seed, [12])
        enc, enc_lengths = model.encode(feats, lengths)
        assert enc_lengths.tolist() == [3]
        seqs = all_sequences(4, 3 * 2)
        exact = dict(zip(map(tuple, seqs), log_likelihoods(model, feats, lengths, seqs)))
        (greedy,) = model.greedy_decode(enc, enc_lengths)
        (nbest,) = model.beam_search(enc, enc_lengths, 4)
        beam = nbest[0][0]
        assert exact[tuple(beam)] >= exact[tuple(greedy)] - 1e-5
        assert exact[tuple(beam)] <= max(exact.values()) + 1e-5
        for s, v in nbest:
            assert v <= exact[tuple(s)] + 1e-5
        better += exact[tuple(beam)] > exact[tuple(greedy)] + 1e-3
    assert better >= 4


def counting(joint: Callable, sizes: list[int]) -> Callable:
    """``joint`` that appends the number of predictor rows of each call to ``sizes``."""

    def wrapped(e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        sizes.append(p.shape[0])
        return joint(e, p)

    return wrapped


@pytest.mark.parametrize("beam_size", [2, 5])
def test_beam_keeps_at_most_beam_size_hypotheses(beam_size):
    live: list[int] = []  # hypotheses still in a frame at each step (all at its start)
    for seed in range(4):
        model = tiny_model(seed, 8, max_symbols=3)
        feats, lengths = features(seed, [40, 17])
        enc, enc_lengths = model.encode(feats, lengths)
        model.joiner.joint = counting(model.joiner.joint, live)
        for nbest in model.beam_search(enc, enc_lengths, beam_size):
            assert 1 <= len(nbest) <= beam_size
    assert max(live) == beam_size


def test_beam_hypotheses_are_valid_distinct_labels():
    model = tiny_model(0, 30, max_symbols=2, decoding="beam", beam_size=3)
    feats, lengths = features(1, [40, 31, 6])
    enc, enc_lengths = model.encode(feats, lengths)
    results = model.beam_search(enc, enc_lengths, 3)
    for nbest, frames in zip(results, enc_lengths.tolist()):
        assert 1 <= len(nbest) <= 3
        assert len({tuple(s) for s, _ in nbest}) == len(nbest)
        scores = [v for _, v in nbest]
        assert scores == sorted(scores, reverse=True) and all(v < 0 for v in scores)
        for s, _ in nbest:
            assert all(isinstance(i, int) and 1 <= i < 30 for i in s)
            assert len(s) <= 2 * frames
    hyps = model.transcribe(feats, lengths)
    assert hyps == [nbest[0][0] for nbest in results] and any(hyps)
    tokens, token_lengths = torch.ones(3, 2, dtype=torch.long), torch.full((3,), 2)
    # validation while training decodes greedily; the search scores greedy subnets
    out = model(feats, lengths, tokens, token_lengths)["hypotheses"]
    assert out == model.greedy_decode(enc, enc_lengths)
    searched = model.search_module(model.export(model.space.max_arch()))
    assert searched.decoding == "greedy" and model.decoding == "beam"
    # an empty utterance decodes to nothing
    assert model.beam_decode(enc, torch.tensor([enc.shape[1], 0, 1]), 3)[1] == []


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("decoding", "viterbi", r"model\.decoding='viterbi': choose one of \['greedy', 'beam'\]"),
        ("decoding", "Beam", r"model\.decoding='Beam'"),
        ("beam_size", 0, r"model\.beam_size=0: give an integer >= 1"),
        ("beam_size", -2, r"model\.beam_size=-2"),
        ("beam_size", 2.5, r"model\.beam_size=2\.5"),
    ],
)
def test_bad_decoding_config_raises_a_one_line_error(key, value, match):
    cfg = {"name": "elastic_rnnt", **TINY, key: value}
    with pytest.raises(ValueError, match=match) as err:
        build_model(cfg, (12,), 30)
    assert "\n" not in str(err.value)
    model = tiny_model(0, 30)
    enc, enc_lengths = model.encode(*features(0, [8]))
    with pytest.raises(ValueError, match="model.beam_size=0"):
        model.beam_decode(enc, enc_lengths, 0)
    setattr(model, key, value)  # set after construction: caught when decoding
    with pytest.raises(ValueError, match=match):
        model.transcribe(*features(0, [8]))


def test_config_file_defaults_and_export_keep_the_decoding():
    cfg = OmegaConf.load(CONF / "model" / "elastic_rnnt.yaml")
    assert cfg.decoding == "greedy" and cfg.beam_size == 4
    default = build_model({**OmegaConf.to_container(cfg), **TINY}, (12,), 30)
    assert (default.decoding, default.beam_size) == ("greedy", 4)
    assert default.export(default.space.min_arch()).decoding == "greedy"

    differs = False
    for seed in range(4):
        model = tiny_model(seed, 6, decoding="beam", beam_size=3)
        arch = model.space.min_arch()
        model.set_active(arch)
        sub = model.export(arch).eval()
        assert isinstance(sub, StaticRNNT)
        assert (sub.decoding, sub.beam_size, sub.max_symbols) == ("beam", 3, 5)
        feats, lengths = features(seed, [40, 23])
        enc, enc_lengths = sub.encode(feats, lengths)
        hyps = sub.transcribe(feats, lengths)
        assert hyps == sub.beam_decode(enc, enc_lengths, 3) == model.transcribe(feats, lengths)
        differs |= hyps != sub.greedy_decode(enc, enc_lengths)
    assert differs  # transcribe really ran the beam search


def test_search_scores_greedy_while_the_final_subnet_keeps_the_beam():
    from hwnas.training.evaluate import SubnetEvaluator

    class Spy:  # a task recording how each evaluated net decodes
        seen: list[str] = []

        def evaluate(self, net, val, device):
            self.seen.append(net.decoding)
            return {"wer": 0.5}

    model = tiny_model(0, 30, decoding="beam", beam_size=3)
    spy = Spy()
    ev = SubnetEvaluator(model, spy, [], [], calib_samples=1)
    arch = model.space.max_arch()
    assert ev(arch) == {"wer": 0.5} and spy.seen == ["greedy"]
    assert ev.subnet(arch).decoding == "beam" and model.decoding == "beam"
