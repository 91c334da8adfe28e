"""Spoken digits: the words "zero" to "nine" said by espeak-ng, as 16 kHz mono WAV files.

Each item picks a seeded voice (British or American English, one of several male and female
variants), speed and pitch; espeak-ng's 22.05 kHz output is trimmed of its own silence, resampled
here (a windowed-sinc resampler in plain numpy, so no torchcodec or FFmpeg is needed), set to a
seeded level, padded with seeded silence and given a little background noise.

`label` is the word ("seven"), the same label the digits domain gives its handwritten sevens, so
the a2i task can pair them. Digits are dealt out in seeded blocks of ten: every split of ten or
more items holds every digit.

espeak-ng is a system package (apt-get install espeak-ng). Without it this domain warns and makes
no items. Its output is byte-identical between runs for the same arguments (checked here for every
voice in VARIANTS), and so are these files.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from omnisdk.datasets.omniworld.common import DomainSettings, Sample, relpath, write_each
from omnisdk.errors import OmniError

DOMAIN = "spoken"
SAMPLE_RATE = 16_000
WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LANGUAGES: tuple[str, ...] = ("en", "en-us")
# Variants that ship with espeak-ng 1.51 (`espeak-ng --voices=variant`). An unknown variant would
# silently fall back to the default voice, so the list is fixed rather than discovered.
VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4")
SPEED = (130, 190)  # words per minute
PITCH = (25, 75)  # espeak-ng's 0-99 scale
ESPEAK_TIMEOUT_S = 30
TRIM_LEVEL = 0.01  # espeak-ng's leading and trailing samples below this peak fraction are silence
PAD_S = (0.05, 0.30)  # seeded silence before and after the word
MISSING = "espeak-ng not found: spoken digits skipped; install it with apt-get install espeak-ng"


def generate(root: Path, settings: DomainSettings) -> list[Sample]:
    """Write spoken/<split>/<id>.wav for every split in `settings.counts`; samples sorted by id."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        warnings.warn(MISSING, stacklevel=2)
        return []
    with tempfile.TemporaryDirectory(prefix="omniworld-spoken-") as scratch:

        def write_one(split: str, index: int, folder: Path) -> Sample:
            spec = spoken_spec(settings, split, index)
            speech, rate = speak(espeak, spec["attributes"], Path(scratch) / "word.wav")
            path = folder / f"{spec['id']}.wav"
            sf.write(path, finish(speech, rate, settings.rng(f"{DOMAIN}:{split}:{index}:audio")),
                     SAMPLE_RATE, subtype="PCM_16", format="WAV")
            return _sample(spec, split, relpath(path, root))

        return write_each(root, settings, DOMAIN, "word", write_one)


def digit_of(settings: DomainSettings, split: str, index: int) -> int:
    """The digit of item `index`: each block of ten consecutive items holds every digit once."""
    block = settings.rng(f"{DOMAIN}:{split}:block:{index // len(WORDS)}").permutation(len(WORDS))
    return int(block[index % len(WORDS)])


def spoken_spec(settings: DomainSettings, split: str, index: int) -> dict[str, Any]:
    """id, word and voice settings of one item; its own generator, salted by split and index."""
    rng = settings.rng(f"{DOMAIN}:{split}:{index}")
    word = WORDS[digit_of(settings, split, index)]
    attrs = {
        "digit": WORDS.index(word),
        "word": word,
        "voice": f"{rng.choice(LANGUAGES)}+{rng.choice(VARIANTS)}",
        "speed": int(rng.integers(SPEED[0], SPEED[1] + 1)),
        "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1)),
    }
    return {"id": f"{DOMAIN}-{split}-{index:05d}", "attributes": attrs, "label": word,
            "captions": captions_for(word, rng)}


def speak(espeak: str, attrs: dict[str, Any], scratch: Path) -> tuple[np.ndarray, int]:
    """espeak-ng's rendering of the word as float64 mono samples, and its sample rate."""
    command = [espeak, "-w", str(scratch), "-v", attrs["voice"], "-s", str(attrs["speed"]),
               "-p", str(attrs["pitch"]), attrs["word"]]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=ESPEAK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise OmniError(f"espeak-ng took more than {ESPEAK_TIMEOUT_S} s to say '{attrs['word']}' "
                        f"with voice {attrs['voice']}; is the espeak-ng install broken?") from None
    if done.returncode != 0 or not scratch.is_file():
        raise OmniError(f"espeak-ng failed (exit {done.returncode}) saying '{attrs['word']}' with voice "
                        f"{attrs['voice']}: {done.stderr.strip() or 'no output file'}")
    samples, rate = sf.read(scratch, dtype="float64", always_2d=True)
    return samples.mean(axis=1), int(rate)


def finish(speech: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Trim, resample to 16 kHz, level, pad with silence and add noise: int16 samples."""
    loud = np.flatnonzero(np.abs(speech) > TRIM_LEVEL * max(float(np.abs(speech).max()), 1e-9))
    if loud.size == 0:
        raise OmniError("espeak-ng produced silence; check its voices with espeak-ng --voices=variant")
    speech = resample(speech[loud[0]:loud[-1] + 1], rate, SAMPLE_RATE)
    speech *= float(rng.uniform(0.3, 0.8)) / max(float(np.abs(speech).max()), 1e-9)
    before, after = (round(float(rng.uniform(*PAD_S)) * SAMPLE_RATE) for _ in range(2))
    out = np.concatenate([np.zeros(before), speech, np.zeros(after)])
    out += rng.normal(0.0, float(rng.uniform(0.001, 0.004)), out.shape)
    return np.clip(np.rint(out * 32767.0), -32768, 32767).astype(np.int16)


def resample(x: np.ndarray, orig: int, new: int, *, half_width: int = 16, beta: float = 8.0) -> np.ndarray:
    """Band-limited resampling with a Kaiser-windowed sinc (cut-off 95% of the lower Nyquist).

    Output sample n sits at input position n * orig / new, kept exact with integers. The sum over
    taps runs in a fixed order with elementwise numpy operations (no BLAS), so the result does not
    depend on thread counts.
    """
    if orig == new:
        return x.astype(np.float64, copy=True)
    step = math.gcd(orig, new)
    cutoff = 0.95 * min(1.0, new / orig)  # in units of the input Nyquist frequency
    reach = math.ceil(half_width / cutoff)  # input samples on each side of an output position
    count = math.ceil(len(x) * new / orig)
    position = np.arange(count, dtype=np.int64) * orig
    base, phase = position // new, (position % new) // step  # phase: which of new / step offsets
    taps = np.arange(-reach + 1, reach + 1)
    # Filter weights per (phase, tap): tau is the distance from input sample base + tap to the output.
    tau = (np.arange(new // step) * step / new)[:, None] - taps[None, :]
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (tau / reach) ** 2, 0.0, None))) / np.i0(beta)
    kernel = cutoff * np.sinc(cutoff * tau) * window
    padded = np.concatenate([np.zeros(reach), np.asarray(x, dtype=np.float64), np.zeros(reach + 1)])
    out = np.zeros(count)
    for k, tap in enumerate(taps):
        out += padded[base + tap + reach] * kernel[phase, k]
    return out


def captions_for(word: str, rng: np.random.Generator) -> list[str]:
    """The canonical caption, then 2-4 paraphrases in a seeded order."""
    paraphrases = [
        f"someone saying {word}",
        f"a voice saying the number {word}",
        f"the word {word} spoken aloud",
        f"a recording of the digit {word} being said",
        f"a synthetic voice pronouncing {word}",
    ]
    order = rng.permutation(len(paraphrases))
    keep = int(rng.integers(2, 5))
    return [f"the spoken word {word}"] + [paraphrases[i] for i in order[:keep]]


def _sample(spec: dict[str, Any], split: str, path: str) -> Sample:
    return Sample(id=spec["id"], domain=DOMAIN, split=split, modality="audio", path=path,
                  captions=spec["captions"], label=spec["label"], attributes=spec["attributes"])
