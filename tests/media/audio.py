"""Real audio files for tests, written with soundfile: tones, ramps, and broken files of known kinds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine beep [frames]."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def tone_item(amplitude: float, seconds: float = 1.0, freq: float = 440.0, rate: int = 16_000):
    """An audio Item holding a sine beep as an in-memory waveform."""
    from omnisdk.items import Item
    from omnisdk.plugins.audio import Waveform

    return Item(modality="audio", data=Waveform(tone(seconds, rate, freq, amplitude), rate))


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16_000, freq: float = 440.0, amplitude: float = 0.5) -> Path:
    """A mono 16-bit PCM WAV of a sine beep."""
    import soundfile

    soundfile.write(str(path), tone(seconds, rate, freq, amplitude), rate, subtype="PCM_16")
    return path


def write_stereo_flac(path: Path, seconds: float = 1.5, rate: int = 44_100, freq: float = 440.0) -> Path:
    """A stereo FLAC whose right channel is the left at half amplitude: its mono mix peaks at 0.75 x 0.5."""
    import soundfile

    left = tone(seconds, rate, freq, 0.5)
    soundfile.write(str(path), np.stack([left, 0.5 * left], axis=1), rate)
    return path


def write_ramp(path: Path, seconds: float = 25.0, rate: int = 16_000) -> Path:
    """A mono float WAV whose sample at time t seconds is t / 100: any slice tells where it came from."""
    import soundfile

    samples = (np.arange(round(seconds * rate)) / rate / 100.0).astype(np.float32)
    soundfile.write(str(path), samples, rate, subtype="FLOAT")
    return path


def write_silence(path: Path, seconds: float = 1.0, rate: int = 16_000) -> Path:
    import soundfile

    soundfile.write(str(path), np.zeros(round(seconds * rate), dtype=np.float32), rate)
    return path


def write_empty(path: Path) -> Path:
    """A zero-byte file."""
    path.write_bytes(b"")
    return path


def write_truncated(path: Path, keep: int = 30) -> Path:
    """A real WAV cut to its first `keep` bytes: the header ends before the data chunk."""
    write_wav(path)
    path.write_bytes(path.read_bytes()[:keep])
    return path


def write_text_as_audio(path: Path) -> Path:
    """A text file with an audio extension."""
    path.write_text("this is not audio, only text with a .wav name\n")
    return path


def add_tone_pairs(data: Path) -> None:
    """Append text -> WAV pairs: 'a low tone' / 'a high tone' at a few pitches."""
    import soundfile as sf

    (data / "tones").mkdir()
    rows = []
    for i, freq in enumerate([220, 260, 300, 1800, 2000, 2400, 600, 700]):
        path = data / "tones" / f"t{i}.wav"
        sf.write(path, tone(0.5, 16_000, freq), 16_000, subtype="PCM_16")
        word = "low" if freq < 500 else "high" if freq > 1000 else "medium"
        rows.append({"query": {"modality": "text", "text": f"a {word} tone"},
                     "positive": {"modality": "audio", "path": f"tones/t{i}.wav"}, "negatives": [], "task": "t2a"})
    with open(data / "train.jsonl", "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
