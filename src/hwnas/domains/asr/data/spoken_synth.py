"""An offline spoken corpus, generated on first use with espeak-ng and cached.

Sentences of ``min_words``..``max_words`` words from a fixed vocabulary (the ten digits
spelled out and a few hundred common words) are spoken by espeak-ng with several
accents (espeak-ng voices) and voice variants, speeds and pitches, resampled from
espeak-ng's 22050 Hz to 16 kHz and stored as 16-bit FLAC with a ``manifest.json`` under
``<data_dir>/spoken_synth/<key>/`` (``key`` hashes every generation setting, the word and
voice lists and the espeak-ng version). Everything is drawn from ``seed``: the same seed
gives the same transcripts and audio. The test and validation splits have sentences and
(voice, variant) settings that training never sees; speed and pitch are drawn per
utterance. The default corpus (3500 utterances) takes minutes to generate, once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hwnas.core import atomic
from hwnas.core.seeding import derive_seed
from hwnas.domains.asr.data.features import SAMPLE_RATE
from hwnas.domains.asr.data.speech import SpeechDataModule

log = logging.getLogger(__name__)

FIX = "install it (apt-get install espeak-ng, or make data-speech)"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = DIGITS + tuple(
    """
    a about after again air all also always and animal answer any apple are arm around
    ask away baby back bad ball bank bed before begin behind bell best big bird black
    blue boat body book both box boy bread bring brother brown build bus but buy cake
    call came can car card care carry cat chair child city class clean clock close coat
    cold come cook cool corner could country cow cup cut dance dark day deep desk did
    dinner dog door down draw dream dress drink drive duck each early earth east easy
    eat egg end even every eye face fall family far farm fast father fill find fine fire
    first fish floor flower fly food foot for forest friend from front fruit full game
    garden girl give glass go gold good grass great green ground grow hair half hand happy
    hard hat have head hear heart help her here high hill him his hold home horse hot
    house how ice idea into iron island jump just keep key kind king kitchen know lake
    lamp land large last late laugh leaf learn left leg letter light like line lion
    listen little live long look love low make man many map market milk mind money moon
    more morning mother mountain mouth move much music name near need never new next
    nice night north nose not now ocean often old only open orange other our out over
    page paint paper park party people pick picture piece place plant play please pocket
    point quick quiet rain read red rest rice ride right river road rock room round run
    sad salt same sand say school sea see sell send ship shoe shop short show sing sister
    sit sky sleep slow small snow soft song soon sound south space speak spring stand
    star start stone stop story street strong summer sun table take talk tall tea teacher
    tell than that the then there they thing think this time today together tomorrow
    top town train tree true turn under up very visit voice wait walk wall warm wash
    watch water way we week well west what wheel when white who wind window winter with
    wood word work world write year yellow yes you young
    """.split()
)
# espeak-ng voices (accents) and voice variants (``espeak-ng --voices=variant``); every
# pairing is spoken as ``-v <voice>+<variant>``
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd")  # fmt: skip
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
SPEEDS = (140, 190)  # words per minute (espeak-ng -s), drawn uniformly per utterance
PITCHES = (30, 70)  # espeak-ng -p (0..99), drawn uniformly per utterance
SPLITS = ("train", "val", "test")
FORMAT = 2  # bump when the plan or the files change, so old caches are not reused


def espeak_version() -> str:
    """espeak-ng's version line; FileNotFoundError (naming the fix) when it is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError(f"espeak-ng not found: {FIX}")
    return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()


def speak(text: str, voice: str, speed: int, pitch: int) -> Tensor:
    """espeak-ng's rendering of ``text`` with ``voice`` (e.g. ``en-us+m3``), ``speed``
    (words per minute) and ``pitch`` (0..99) as a (N,) float32 16 kHz waveform."""
    import soundfile as sf
    import torchaudio.functional as AF

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError(f"espeak-ng not found: {FIX}")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        subprocess.run(cmd, check=True, capture_output=True)
        data, rate = sf.read(wav, dtype="float32")
    audio = torch.from_numpy(data)
    if audio.ndim > 1:
        audio = audio.mean(1)
    return AF.resample(audio, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else audio


def plan_corpus(
    seed: int,
    sizes: dict[str, int],
    num_words: int | None,
    min_words: int,
    max_words: int,
    voice_splits: dict[str, int],
) -> list[dict[str, Any]]:
    """The utterances to speak: id, split, text, voice, variant, speed, pitch (no audio).

    Sentences are distinct across the whole corpus; each split speaks with its own
    (voice, variant) settings (``voice_splits`` gives how many go to val and test)."""
    rng = random.Random(derive_seed(seed, "spoken_synth"))
    others = [w for w in WORDS if w not in DIGITS]
    words = list(DIGITS)
    if num_words is None or num_words >= len(WORDS):
        words += others
    else:
        words += rng.sample(others, max(0, num_words - len(DIGITS)))
    total = sum(sizes.values())
    texts: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(texts) < total:
        tries += 1
        if tries > 100 * total:
            raise ValueError(
                f"data: cannot draw {total} distinct sentences from {len(words)} words of "
                f"{min_words}..{max_words}; raise data.num_words or data.max_words"
            )
        text = " ".join(rng.choice(words) for _ in range(rng.randint(min_words, max_words)))
        if text not in seen:
            seen.add(text)
            texts.append(text)
    voices = [(a, v) for a in ACCENTS for v in VARIANTS]
    rng.shuffle(voices)
    n_test, n_val = voice_splits["test"], voice_splits["val"]
    if n_test + n_val >= len(voices):
        raise ValueError(
            f"data.val_voices + data.test_voices = {n_val + n_test} leave no training voice "
            f"of the {len(voices)}: lower them"
        )
    pools = {"test": voices[:n_test], "val": voices[n_test : n_test + n_val],
             "train": voices[n_test + n_val :]}  # fmt: skip
    plan, k = [], 0
    for split in ("test", "val", "train"):  # held-out splits first: their texts never train
        for i in range(sizes[split]):
            voice, variant = rng.choice(pools[split])
            plan.append({
                "id": f"{split}-{i:05d}", "split": split, "text": texts[k],
                "voice": voice, "variant": variant, "speed": rng.randint(*SPEEDS),
                "pitch": rng.randint(*PITCHES),
            })  # fmt: skip
            k += 1
    return plan


class SpokenSynthDataModule(SpeechDataModule):
    """The espeak-ng corpus (see the module docstring) as a speech data module.

    ``train_size`` / ``val_size`` / ``test_size`` utterances of ``min_words``..``max_words``
    words from ``num_words`` words (``None`` = all built-in ones, the ten digits always
    in); ``val_voices`` and ``test_voices`` (voice, variant) pairs are held out for val
    and test; ``workers`` espeak-ng processes run at once while generating. The other
    options are :class:`SpeechDataModule`'s. Features (and a trained SentencePiece model,
    with ``vocab=sentencepiece``) are cached beside the audio."""

    name = "spoken_synth"

    def __init__(
        self,
        data_dir: str,
        train_size: int = 3000,
        val_size: int = 200,
        test_size: int = 300,
        num_words: int | None = None,
        min_words: int = 3,
        max_words: int = 7,
        val_voices: int = 6,
        test_voices: int = 8,
        workers: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)  # the options every speech corpus has
        sizes = {"train": train_size, "val": val_size, "test": test_size}
        positive = {**sizes, "min_words": min_words, "workers": workers,
                    "val_voices": val_voices, "test_voices": test_voices}  # fmt: skip
        for key, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"data.{key} must be >= 1, got {value}")
        if num_words is not None and int(num_words) < len(DIGITS):
            raise ValueError(
                f"data.num_words={num_words} must be null (all {len(WORDS)}) or at least "
                f"the {len(DIGITS)} digits"
            )
        if int(max_words) < int(min_words):
            raise ValueError(f"data.max_words={max_words} is below data.min_words={min_words}")
        self.sizes = {k: int(v) for k, v in sizes.items()}
        self.num_words = None if num_words is None else int(num_words)
        self.min_words, self.max_words = int(min_words), int(max_words)
        self.voice_splits = {"val": int(val_voices), "test": int(test_voices)}
        self.workers = int(workers)
        self._manifest: list[dict[str, Any]] | None = None
        self._folder: Path | None = None

    def settings(self) -> dict[str, Any]:
        """Every setting the corpus depends on (hashed into :meth:`cache_dir`)."""
        return {"seed": self.seed, "sizes": self.sizes, "num_words": self.num_words,
                "min_words": self.min_words, "max_words": self.max_words,
                "voice_splits": self.voice_splits, "words": WORDS, "accents": ACCENTS,
                "variants": VARIANTS, "speeds": SPEEDS, "pitches": PITCHES,
                "sample_rate": SAMPLE_RATE, "format": FORMAT}  # fmt: skip

    def cache_dir(self) -> Path:
        """``<data_dir>/spoken_synth/<key>``: ``key`` hashes :meth:`settings` and the
        espeak-ng version. Without espeak-ng, a finished corpus of the same settings (made
        by any version, e.g. copied from another machine) is used; if there is none,
        FileNotFoundError naming the fix."""
        if self._folder is None:
            root = Path(self.data_dir) / "spoken_synth"
            found = None if shutil.which("espeak-ng") else self._generated_elsewhere(root)
            if found is None:
                corpus = {"settings": self.settings(), "espeak": espeak_version()}
                text = json.dumps(corpus, sort_keys=True)
                found = root / hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
            self._folder = found
        return self._folder

    def vocab_cache_dir(self) -> Path:
        """A trained SentencePiece model is cached beside the corpus's audio and features."""
        return self.cache_dir()

    def _generated_elsewhere(self, root: Path) -> Path | None:
        """A finished corpus folder under ``root`` whose ``corpus.json`` has these settings."""
        wanted = json.dumps(self.settings(), sort_keys=True)
        for spec in sorted(root.glob("*/corpus.json")):
            try:
                corpus = json.loads(spec.read_text())
            except ValueError:
                continue
            same = json.dumps(corpus.get("settings"), sort_keys=True) == wanted
            if same and (spec.parent / "manifest.json").is_file():
                log.info("spoken_synth: espeak-ng missing; using %s (made by %s)",
                         spec.parent, corpus.get("espeak"))  # fmt: skip
                return spec.parent
        return None

    def manifest(self) -> list[dict[str, Any]]:
        """The corpus's utterances (generating the audio first if needed)."""
        if self._manifest is None:
            self._manifest = self.generate()
        return self._manifest

    def generate(self) -> list[dict[str, Any]]:
        """Speak every planned utterance that has no audio file yet; write the manifest
        last (atomically), so an interrupted generation resumes where it stopped (each
        FLAC is itself written atomically, so one that exists is complete).

        Manifest entries: id, split, text, voice, variant, speed (words per minute),
        pitch, file (the FLAC's name) and seconds (audio length)."""
        folder = self.cache_dir()
        path = folder / "manifest.json"
        if path.is_file():
            return json.loads(path.read_text())
        plan = plan_corpus(self.seed, self.sizes, self.num_words, self.min_words,
                           self.max_words, self.voice_splits)  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        corpus = {"settings": self.settings(), "espeak": espeak_version()}
        atomic.write_text(folder / "corpus.json", json.dumps(corpus, indent=1, sort_keys=True))
        log.info("spoken_synth: generating %d utterances with espeak-ng in %s", len(plan), folder)
        done = itertools.count(1)  # next() is atomic: a shared counter for the threads

        def one(utt: dict[str, Any]) -> dict[str, Any]:
            import soundfile as sf

            audio_path = folder / f"{utt['id']}.flac"
            if not audio_path.is_file():
                voice = f"{utt['voice']}+{utt['variant']}"
                audio = speak(utt["text"], voice, utt["speed"], utt["pitch"])
                with atomic.atomic_open(audio_path, "wb") as fh:
                    sf.write(fh, audio.clamp(-1, 1).numpy(), SAMPLE_RATE, format="FLAC",
                             subtype="PCM_16")  # fmt: skip
            info = sf.info(audio_path)
            n = next(done)
            if n % 500 == 0:
                log.info("spoken_synth: %d / %d utterances", n, len(plan))
            return {**utt, "file": audio_path.name, "seconds": info.frames / SAMPLE_RATE}

        with ThreadPoolExecutor(self.workers) as pool:
            manifest = list(pool.map(one, plan))
        atomic.write_json(path, manifest, indent=1)
        hours = sum(u["seconds"] for u in manifest) / 3600
        log.info("spoken_synth: %d utterances, %.2f h of audio", len(manifest), hours)
        return manifest

    def split_features(self, split: str) -> tuple[list[Tensor], list[str], list[float]]:
        """Features, transcripts and seconds of a split; the features are cached beside
        its audio (keyed by ``n_mels``)."""
        utts = self.utterances(split)
        folder = self.cache_dir()

        def waveforms() -> list[Tensor]:
            import soundfile as sf

            return [torch.from_numpy(sf.read(folder / u["file"], dtype="float32")[0]) for u in utts]

        feats = self.cached_features(folder / f"features_{split}_mel{self.n_mels}.pt", waveforms)
        return feats, [u["text"] for u in utts], [float(u["seconds"]) for u in utts]

    def utterances(self, split: str) -> list[dict[str, Any]]:
        """Manifest entries of a split (see :meth:`generate`), in id order."""
        return [u for u in self.manifest() if u["split"] == split]
