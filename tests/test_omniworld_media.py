"""OmniWorld's media domains (clips, sounds, spoken digits): byte-identical per seed, readable by the
real decoders, and true to what their attributes and captions say."""
from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from omnisdk.datasets.omniworld import clips, sounds, spoken
from omnisdk.datasets.omniworld.common import SPLITS, DomainSettings, Sample

SEED = 11
HAS_ESPEAK = shutil.which("espeak-ng") is not None


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _generate_twice(module, tmp_path_factory, counts: dict[str, int]) -> tuple[Path, list[Sample], dict, dict]:
    settings = DomainSettings(counts=counts, seed=SEED)
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    samples = module.generate(first, settings)
    again = module.generate(second, settings)
    assert samples == again
    return first, samples, _hashes(first), _hashes(second)


def _check_listing(root: Path, samples: list[Sample], domain: str, suffix: str, counts: dict[str, int]) -> None:
    assert [s.id for s in samples] == sorted(s.id for s in samples)
    assert {split: sum(s.split == split for s in samples) for split in SPLITS} == counts
    for s in samples:
        assert s.domain == domain and s.path == f"{domain}/{s.split}/{s.id}{suffix}" and (root / s.path).is_file()
        assert len(s.captions) >= 3 and len(set(s.captions)) == len(s.captions)


# -- clips --------------------------------------------------------------------------------------------
CLIP_COUNTS = {"train": 4, "dev": 2, "test": 2}


@pytest.fixture(scope="module")
def clip_set(tmp_path_factory):
    return _generate_twice(clips, tmp_path_factory, CLIP_COUNTS)


def test_clips_are_byte_identical_per_seed(clip_set):
    root, samples, first, second = clip_set
    assert first == second and len(first) == len(samples)
    _check_listing(root, samples, "clips", ".mp4", CLIP_COUNTS)
    for s in samples:
        data = (root / s.path).read_bytes()
        mvhd = data.index(b"mvhd")
        assert data[mvhd + 8:mvhd + 16] == bytes(8)  # creation and modification time: zero, not now


def test_clips_decode_with_the_video_plugin(clip_set):
    import av

    from omnisdk.plugins.video import VideoConfig, decode_pyav, probe_video, read_frames

    root, samples, _, _ = clip_set
    for s in samples:
        path = root / s.path
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert sum(1 for _ in container.decode(stream)) == clips.FRAMES >= 16
        frames = read_frames(path, None, VideoConfig(num_frames=16))  # decord when installed
        assert len(frames) == 16 and frames[0].size == (clips.FRAME_SIZE, clips.FRAME_SIZE)
        fallback = decode_pyav(path, None, 16, max_pixels=10**6, max_decode_frames=100)
        assert [np.asarray(f).shape for f in fallback] == [(clips.FRAME_SIZE, clips.FRAME_SIZE, 3)] * 16
        assert probe_video(path).duration == pytest.approx(clips.FRAMES / clips.FPS)


def _centroid(frame: np.ndarray, colour: str) -> tuple[float, float, int]:
    from omnisdk.datasets.omniworld.draw import COLOURS

    distance = np.sqrt(((frame.astype(np.float32) - np.asarray(COLOURS[colour], np.float32)) ** 2).sum(-1))
    ys, xs = np.nonzero(distance < 50)
    assert len(xs), f"no pixel of {colour} found"
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5, len(xs)  # pixel centres


def test_clip_objects_move_as_captioned(clip_set):
    import av

    root, samples, _, _ = clip_set
    centre = clips.FRAME_SIZE / 2
    settings = DomainSettings(counts=CLIP_COUNTS, seed=SEED)
    for s, index in zip(samples, [int(s.id.rsplit("-", 1)[1]) for s in samples]):
        with av.open(str(root / s.path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        spec = clips.clip_spec(settings, s.split, index)
        for obj, attrs in zip(spec["objects"], s.attributes["objects"]):
            x0, y0, area0 = _centroid(frames[0], attrs["colour"])
            x1, y1, area1 = _centroid(frames[-1], attrs["colour"])
            for (x, y), k in (((x0, y0), 0), ((x1, y1), len(frames) - 1)):
                where = clips.object_at(obj, k)
                assert abs(x - where["x"]) < 2 and abs(y - where["y"]) < 2, (s.id, attrs)
            motion = attrs["motion"]
            if motion == "left":
                assert x0 > centre > x1
            elif motion == "right":
                assert x0 < centre < x1
            elif motion == "up":
                assert y0 > centre > y1
            elif motion == "down":
                assert y0 < centre < y1
            else:
                assert (area1 > 3 * area0) if motion == "growing" else (area0 > 3 * area1), (s.id, area0, area1)
        assert s.captions[0] == " and ".join(
            f"{'an' if o['colour'] == 'orange' else 'a'} {o['colour']} {o['shape']} {clips.MOTION_WORDS[o['motion']]}"
            for o in s.attributes["objects"])


def test_clip_held_out_pairs_only_in_dev_and_test():
    settings = DomainSettings(counts={}, seed=SEED)
    held = clips.clip_held_out(settings)
    assert len(held) == clips.HELD_OUT and len({s for s, _ in held}) == len({m for _, m in held}) == len(held)
    for split, count in (("train", 150), ("dev", 40), ("test", 40)):
        for index in range(count):
            pairs = {(o["shape"], o["motion"]) for o in clips.clip_spec(settings, split, index, held=held)["objects"]}
            if split == "train":
                assert not pairs & set(held)
            else:
                assert pairs & set(held)


# -- sounds -------------------------------------------------------------------------------------------
SOUND_COUNTS = {"train": 20, "dev": 10, "test": 10}


@pytest.fixture(scope="module")
def sound_set(tmp_path_factory):
    return _generate_twice(sounds, tmp_path_factory, SOUND_COUNTS)


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16_000, 1, "PCM_16", "WAV")
    samples, _ = sf.read(str(path), dtype="float64")
    return samples


def _bursts(x: np.ndarray, rate: int = 16_000) -> list[tuple[int, int]]:
    """(start, end) sample of each loud stretch: 10 ms frames over a fifth of the loudest, small dips merged."""
    n = rate // 100
    rms = np.sqrt((x[: len(x) // n * n].reshape(-1, n) ** 2).mean(axis=1))
    edges = np.flatnonzero(np.diff(np.r_[0, (rms > 0.2 * rms.max()).astype(int), 0]))
    merged: list[list[int]] = []
    for a, b in zip(edges[::2] * n, edges[1::2] * n):
        if merged and a - merged[-1][1] < 0.04 * rate:  # narrow-band noise dips for a few ms
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _power(x: np.ndarray, rate: int = 16_000) -> tuple[np.ndarray, np.ndarray]:
    return np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2, np.fft.rfftfreq(len(x), 1 / rate)


def _near(power: np.ndarray, freqs: np.ndarray, f: float, rel: float = 0.03) -> float:
    return float(power[(freqs > f * (1 - rel)) & (freqs < f * (1 + rel))].sum())


def _spread(x: np.ndarray) -> float:
    """Power-weighted spread of log-frequency within a factor 1.6 of the peak.

    About 0.01 for a steady tone, 0.1 for a glide, 0.17 for a noise burst's band.
    """
    power, freqs = _power(x)
    f0 = freqs[np.argmax(power)]
    near = (freqs > f0 / 1.6) & (freqs < f0 * 1.6)
    logf, weight = np.log(freqs[near]), power[near] / power[near].sum()
    return float(np.sqrt((((logf - (logf * weight).sum()) ** 2) * weight).sum()))


def test_sounds_are_byte_identical_and_readable(sound_set):
    root, samples, first, second = sound_set
    assert first == second and len(first) == len(samples)
    _check_listing(root, samples, "sounds", ".wav", SOUND_COUNTS)
    for s in samples:
        x = _read(root / s.path)
        assert sounds.MIN_SECONDS <= len(x) / 16_000 <= sounds.MAX_SECONDS


def test_sounds_match_their_attributes(sound_set):
    root, samples, _, _ = sound_set
    for s in samples:
        a, x = s.attributes, _read(root / s.path)
        bursts = _bursts(x)
        assert len(bursts) == a["count"], (s.id, a)
        power, freqs = _power(x)
        low, high = sounds.PITCH_BANDS[a["pitch"]]
        if a["pattern"] == "noise burst":  # where the band's energy lies on a log scale, not a noisy argmax
            used = freqs > 50
            where = float(np.exp((np.log(freqs[used]) * power[used]).sum() / power[used].sum()))
            assert _spread(x) > 0.13, f"{s.id} is a noise burst but sounds like a tone"
        else:
            where = float(freqs[np.argmax(power)])
        assert low <= where < high, (s.id, a, where)
        start, end = bursts[0]
        third = (end - start) // 3
        early, late = (float(f[np.argmax(p)]) for p, f in (_power(x[start:start + third]), _power(x[end - third:end])))
        if a["pattern"] == "rising":
            assert late > 1.15 * early, (s.id, early, late)
        elif a["pattern"] == "falling":
            assert early > 1.15 * late, (s.id, early, late)
        elif a["pattern"] == "steady":
            assert abs(late - early) < 0.05 * early and _spread(x) < 0.05
            p, f = _power(x[start:end])
            f0 = float(f[np.argmax(p)])
            second, third_h = _near(p, f, 2 * f0) / _near(p, f, f0), _near(p, f, 3 * f0) / _near(p, f, f0)
            expected = {"pure": (second < 1e-3 and third_h < 1e-3), "buzzy": (second < 1e-3 and third_h > 0.03),
                        "bright": (second > 0.1 and third_h > 0.03)}
            assert expected[a["timbre"]], (s.id, a, second, third_h)


def test_sound_classes_and_held_out_pairs():
    settings = DomainSettings(counts={}, seed=SEED)
    held = sounds.sound_held_out(settings)
    assert sorted(t for _, t in held) == sorted(sounds.TIMBRES)
    assert len({p for p, t in held if t != "noise"}) == len(sounds.TONE_TIMBRES)
    assert len(sounds.CLASSES) == 10
    for split, count in (("train", 60), ("dev", 20), ("test", 20)):
        specs = [sounds.sound_spec(settings, split, i, held=held) for i in range(count)]
        assert {s["label"] for s in specs[:10]} == set(sounds.CLASSES)  # every class in any ten
        for spec in specs:
            a = spec["attributes"]
            assert ((a["pitch"], a["timbre"]) in held) == (split != "train"), (split, a)
            assert (a["timbre"] == "noise") == (a["pattern"] == "noise burst") == (spec["label"] == "noise bursts")
            if a["timbre"] != "noise":
                assert spec["label"] == f"{a['pattern']} {a['timbre']} tones"
                assert spec["captions"][0].endswith(f"{a['pattern']} {sounds.PITCH_WORDS[a['pitch']]} {a['timbre']} "
                                                    f"{'beeps' if a['count'] > 1 else 'beep'}")
            else:
                assert not any(t in c for t in sounds.TONE_TIMBRES for c in spec["captions"])


# -- spoken digits -----------------------------------------------------------------------------------
SPOKEN_COUNTS = {"train": 10, "dev": 10, "test": 10}
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def spoken_set(tmp_path_factory):
    if not HAS_ESPEAK:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return _generate_twice(spoken, tmp_path_factory, SPOKEN_COUNTS)


@needs_espeak
def test_spoken_digits_are_byte_identical_and_readable(spoken_set):
    root, samples, first, second = spoken_set
    assert first == second and len(first) == len(samples)
    _check_listing(root, samples, "spoken", ".wav", SPOKEN_COUNTS)
    for split in SPLITS:  # every digit in every split of ten, with the labels the digits domain uses
        assert {s.label for s in samples if s.split == split} == set(spoken.WORDS)
    for s in samples:
        assert s.captions[0] == f"the spoken word {s.label}" and s.attributes["word"] == s.label
        x = _read(root / s.path)
        assert 0.3 <= len(x) / 16_000 <= 2.0
        n = 320  # 20 ms frames: speech is far louder than the noise floor and sits mostly below 4 kHz
        rms = np.sqrt((x[: len(x) // n * n].reshape(-1, n) ** 2).mean(axis=1))
        assert rms.max() > 10 * np.percentile(rms, 5), s.id
        power, freqs = _power(x)
        assert power[freqs < 4000].sum() > 0.8 * power.sum(), s.id


@needs_espeak
def test_spoken_voice_variants_exist():
    import subprocess

    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, timeout=30).stdout
    files = {line.split()[4] for line in listing.splitlines()[1:] if len(line.split()) > 4}
    missing = [v for v in spoken.VARIANTS if f"!v/{v}" not in files]
    assert not missing, f"espeak-ng lacks variants {missing}: it would silently use its default voice"


def test_spoken_digits_warn_without_espeak(tmp_path, monkeypatch):
    monkeypatch.setattr(spoken.shutil, "which", lambda name: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert spoken.generate(tmp_path, DomainSettings(counts=SPOKEN_COUNTS, seed=SEED)) == []
    assert any("apt-get install espeak-ng" in str(w.message) for w in caught)


def test_resampler_keeps_the_passband_and_removes_aliases():
    rate = 22_050
    t = np.arange(rate) / rate
    kept = spoken.resample(np.sin(2 * np.pi * 1000 * t), rate, 16_000)
    gone = spoken.resample(np.sin(2 * np.pi * 9000 * t), rate, 16_000)  # would fold to 7 kHz
    assert len(kept) == 16_000
    middle = slice(1000, 15000)
    assert np.sqrt(2 * np.mean(kept[middle] ** 2)) == pytest.approx(1.0, abs=0.01)
    assert np.sqrt(2 * np.mean(gone[middle] ** 2)) < 0.01


# -- into the builder -------------------------------------------------------------------------------
def test_media_samples_become_tasks(clip_set, sound_set):
    from omnisdk.datasets.omniworld.build import build_eval_sets

    _, queries, qrels = build_eval_sets({"clips": clip_set[1], "sounds": sound_set[1]})
    # t2x (mixed corpus, issue 16) ranks the clips and the captions; a2x needs spoken digits, absent here.
    assert {q["task"] for q in queries} == {"t2v", "v2t", "t2a", "a2t", "sound_cls", "t2x"}
    assert set(qrels) == {"dev", "test"}
