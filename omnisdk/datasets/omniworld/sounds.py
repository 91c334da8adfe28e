"""Sounds: 16 kHz mono WAV files of one to four beeps, each captioned exactly.

A sound is a (count, pitch, timbre, pattern). Tones are sine (pure), band-limited square (buzzy) or
band-limited sawtooth (bright) waves that hold their pitch (steady) or glide up (rising) or down
(falling) through a factor of 1.44 (about a tritone) around their centre. A noise burst is
band-pass filtered noise centred on the pitch: it has no waveform, so its timbre is "noise" and no
tone timbre is ever claimed for it. Tone fundamentals stay apart even after jitter and glides:
low 177-345 Hz, medium 496-966 Hz, high 1417-2760 Hz (`PITCH_BANDS` adds room for the noise
bands). Beeps have 10 ms raised-cosine fades and seeded gaps, over a little background noise; a
sound lasts 1 to 2.5 s.

Classes (`label`, for sound_cls): pattern and timbre, "rising buzzy tones" or "noise bursts": ten
classes, dealt out in seeded blocks of ten so every class appears in every split of ten or more.

Compositional split: one (pitch, timbre) pair per timbre, chosen from the seed, never appears in
train; every dev and test sound is one of them (its class fixes the timbre, the pair the pitch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from omnisdk.datasets.omniworld.common import DomainSettings, Sample, held_out_pairs, relpath, write_each

DOMAIN = "sounds"
SAMPLE_RATE = 16_000
PITCHES: tuple[str, ...] = ("low", "medium", "high")
TONE_TIMBRES: tuple[str, ...] = ("pure", "buzzy", "bright")
TIMBRES: tuple[str, ...] = TONE_TIMBRES + ("noise",)
PATTERNS: tuple[str, ...] = ("steady", "rising", "falling", "noise burst")
CENTRES = {"low": 250.0, "medium": 700.0, "high": 2000.0}  # Hz; jittered by CENTRE_JITTER
CENTRE_JITTER = 0.15
GLIDE = 1.2  # a rising beep goes from centre / GLIDE to centre * GLIDE
# Where each pitch's energy can lie (jitter and glide included): the test reads the peak back.
PITCH_BANDS = {"low": (150.0, 420.0), "medium": (420.0, 1200.0), "high": (1200.0, 3400.0)}
NOISE_WIDTH = 0.25  # a noise burst's band: a Gaussian in log-frequency with this sigma (natural log)
FADE_S = 0.010
MIN_SECONDS, MAX_SECONDS = 1.0, 2.5
HARMONIC_CEILING = 0.9 * SAMPLE_RATE / 2  # harmonics stop below this: no aliasing
CLASSES: tuple[str, ...] = tuple(f"{p} {t} tones" for p in PATTERNS[:3] for t in TONE_TIMBRES) + ("noise bursts",)

COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
PITCH_WORDS = {"low": "low-pitched", "medium": "medium-pitched", "high": "high-pitched"}
PITCH_PLAIN = {"low": "low", "medium": "mid", "high": "high"}
TIMBRE_ALT = {"pure": "sine-wave", "buzzy": "square-wave", "bright": "sawtooth"}
PATTERN_CLAUSE = {"steady": "holding a steady pitch", "rising": "rising in pitch", "falling": "falling in pitch"}
PATTERN_ALT = {"steady": "constant", "rising": "upward-sweeping", "falling": "downward-sweeping"}
PATTERN_GERUND = {"steady": "holding steady", "rising": "sweeping up", "falling": "sweeping down"}
NOISE_WORDS = {"low": "rumbling", "medium": "whooshing", "high": "hissing"}


def sound_held_out(settings: DomainSettings) -> list[tuple[str, str]]:
    """The (pitch, timbre) pairs kept out of train: one per timbre, distinct pitches among the tones."""
    rng = settings.rng(f"{DOMAIN}:held-out")
    tones = held_out_pairs(rng, PITCHES, TONE_TIMBRES, len(TONE_TIMBRES))
    return sorted(tones + [(str(rng.choice(PITCHES)), "noise")])


def generate(root: Path, settings: DomainSettings) -> list[Sample]:
    """Write sounds/<split>/<id>.wav for every split in `settings.counts`; samples sorted by id."""
    held = sound_held_out(settings)

    def write_one(split: str, index: int, folder: Path) -> Sample:
        spec = sound_spec(settings, split, index, held=held)
        path = folder / f"{spec['id']}.wav"
        sf.write(path, spec["samples"], SAMPLE_RATE, subtype="PCM_16", format="WAV")
        return _sample(spec, split, relpath(path, root))

    return write_each(root, settings, DOMAIN, "sound", write_one)


def class_of(settings: DomainSettings, split: str, index: int) -> str:
    """The class of item `index`: each block of ten consecutive items holds every class once."""
    block = settings.rng(f"{DOMAIN}:{split}:block:{index // len(CLASSES)}").permutation(len(CLASSES))
    return CLASSES[int(block[index % len(CLASSES)])]


def sound_spec(settings: DomainSettings, split: str, index: int, *,
               held: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Everything about one sound: id, attributes, beep timings, captions and int16 samples.

    Each sound has its own generator (salted by split and index), so a sound does not change when
    the counts of other splits do.
    """
    held = sound_held_out(settings) if held is None else held
    rng = settings.rng(f"{DOMAIN}:{split}:{index}")
    label = class_of(settings, split, index)
    pattern, timbre = ("noise burst", "noise") if label == "noise bursts" else tuple(label.split()[:2])
    held_pitch = dict((t, p) for p, t in held)[timbre]
    pitches = [p for p in PITCHES if p != held_pitch] if split == "train" else [held_pitch]
    attrs = {"count": int(rng.integers(1, 5)), "pitch": str(rng.choice(pitches)), "timbre": timbre, "pattern": pattern}
    samples, beeps = synthesize(rng, attrs)
    return {"id": f"{DOMAIN}-{split}-{index:05d}", "attributes": attrs, "label": label, "beeps": beeps,
            "captions": captions_for(attrs, rng), "samples": samples}


def synthesize(rng: np.random.Generator, attrs: dict[str, Any]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """int16 samples and each beep's (start, end) in seconds."""
    count = attrs["count"]
    beep_s = rng.uniform(0.15, 0.30, size=count)
    gap_s = rng.uniform(0.08, 0.20, size=max(count - 1, 0))
    lead = float(rng.uniform(0.05, 0.25))
    body = lead + float(beep_s.sum() + gap_s.sum())
    total = float(np.clip(body + rng.uniform(0.05, 0.3), MIN_SECONDS, MAX_SECONDS))
    out = np.zeros(round(total * SAMPLE_RATE), dtype=np.float64)
    centre = CENTRES[attrs["pitch"]] * float(rng.uniform(1 - CENTRE_JITTER, 1 + CENTRE_JITTER))
    level = float(rng.uniform(0.3, 0.6))
    beeps, start = [], lead
    for k in range(count):
        n = round(beep_s[k] * SAMPLE_RATE)
        wave = _noise_burst(rng, n, centre) if attrs["pattern"] == "noise burst" else _tone(attrs, n, centre, rng)
        first = round(start * SAMPLE_RATE)
        out[first:first + n] += level * float(rng.uniform(0.8, 1.0)) * wave * _fades(n)
        beeps.append((round(start, 4), round(start + n / SAMPLE_RATE, 4)))
        start += beep_s[k] + (gap_s[k] if k < count - 1 else 0.0)
    out += rng.normal(0.0, float(rng.uniform(0.001, 0.004)), out.shape)  # a quiet room, not digital silence
    return np.clip(np.rint(out * 32767.0), -32768, 32767).astype(np.int16), beeps


def _tone(attrs: dict[str, Any], n: int, centre: float, rng: np.random.Generator) -> np.ndarray:
    """One beep of the timbre's waveform, peak-normalised, gliding per the pattern."""
    t = np.arange(n) / n
    glide = {"steady": 0.0, "rising": 1.0, "falling": -1.0}[attrs["pattern"]]
    freq = centre * GLIDE ** (glide * (2 * t - 1))  # geometric: equal steps in musical pitch
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE + float(rng.uniform(0, 2 * np.pi))
    top = float(freq.max())
    if attrs["timbre"] == "pure":
        wave = np.sin(phase)
    elif attrs["timbre"] == "buzzy":  # square: odd harmonics at 1/k
        wave = sum(np.sin(k * phase) / k for k in range(1, int(HARMONIC_CEILING // top) + 1, 2))
    else:  # sawtooth: every harmonic at 1/k
        wave = sum((-1) ** (k + 1) * np.sin(k * phase) / k for k in range(1, int(HARMONIC_CEILING // top) + 1))
    return wave / max(float(np.abs(wave).max()), 1e-9)


def _noise_burst(rng: np.random.Generator, n: int, centre: float) -> np.ndarray:
    """White noise shaped in the frequency domain to a band around `centre`, peak-normalised."""
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    with np.errstate(divide="ignore"):
        distance = np.log(np.maximum(freqs, 1.0) / centre)
    wave = np.fft.irfft(spectrum * np.exp(-0.5 * (distance / NOISE_WIDTH) ** 2), n)
    return wave / max(float(np.abs(wave).max()), 1e-9)


def _fades(n: int) -> np.ndarray:
    """Raised-cosine fade in and out, so a beep starts and ends without a click."""
    ramp = min(round(FADE_S * SAMPLE_RATE), n // 2)
    envelope = np.ones(n)
    curve = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[:ramp], envelope[n - ramp:] = curve, curve[::-1]
    return envelope


def captions_for(attrs: dict[str, Any], rng: np.random.Generator) -> list[str]:
    """The canonical caption, then 2-4 paraphrases from other templates in a seeded order."""
    count, pitch, timbre, pattern = attrs["count"], attrs["pitch"], attrs["timbre"], attrs["pattern"]
    many = count > 1
    number = COUNT_WORDS[count]
    if pattern == "noise burst":
        bursts = "bursts" if many else "burst"
        canonical = f"{number} {PITCH_WORDS[pitch]} noise {bursts}"
        paraphrases = [
            f"{number} {bursts} of {PITCH_PLAIN[pitch]}-pitched noise",
            f"{number} {NOISE_WORDS[pitch]} noise {bursts}",
            f"the sound of {PITCH_PLAIN[pitch]}-pitched noise bursting {_times(count)}",
            f"{number} short {'blasts' if many else 'blast'} of {PITCH_PLAIN[pitch]}-frequency filtered noise",
        ]
    else:
        beeps, tones = ("beeps", "tones") if many else ("beep", "tone")
        canonical = f"{number} {pattern} {PITCH_WORDS[pitch]} {timbre} {beeps}"
        paraphrases = [
            f"{number} {timbre} {PITCH_PLAIN[pitch]} {beeps}, {'each ' if many else ''}{PATTERN_CLAUSE[pattern]}",
            f"the sound of {number} {PITCH_PLAIN[pitch]} {TIMBRE_ALT[timbre]} {tones}{', each' if many else ''} "
            f"{PATTERN_GERUND[pattern]}",
            f"a {PITCH_PLAIN[pitch]} {timbre} tone beeping {_times(count)}, {PATTERN_CLAUSE[pattern]}",
            f"{number} {PATTERN_ALT[pattern]} {TIMBRE_ALT[timbre]} {beeps} at a {PITCH_PLAIN[pitch]} pitch",
        ]
    order = rng.permutation(len(paraphrases))
    keep = int(rng.integers(2, len(paraphrases) + 1))
    return [canonical] + [paraphrases[i] for i in order[:keep]]


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{COUNT_WORDS[count]} times")


def _sample(spec: dict[str, Any], split: str, path: str) -> Sample:
    return Sample(id=spec["id"], domain=DOMAIN, split=split, modality="audio", path=path,
                  captions=spec["captions"], label=spec["label"], attributes=spec["attributes"])
