"""Digits: scikit-learn's real handwritten digits (8x8, 17 grey levels), upscaled to PNG.

These are the one domain of real data in OmniWorld. The 1,797 images are shuffled once by the
seed and cut into train, dev and test, with every digit spread evenly over the splits, so each
split holds all ten classes and no image appears in two splits.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from omnisdk.datasets.omniworld.common import SPLITS, DomainSettings, Sample, relpath
from omnisdk.errors import OmniError

DOMAIN = "digits"
IMAGE_SIZE = 64
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) float in [0, 16], targets (N,) int) from scikit-learn's bundled copy."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise OmniError("the digits domain needs scikit-learn: pip install scikit-learn") from exc
    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target)


def generate(root: Path, settings: DomainSettings, *, size: int = IMAGE_SIZE) -> list[Sample]:
    """Write digits/<split>/<id>.png; samples sorted by id."""
    images, targets = load_digit_images()
    assignment = assign_splits(targets, settings)
    total = sum(len(v) for v in assignment.values())
    samples: list[Sample] = []
    with tqdm(total=total, desc=DOMAIN, unit="img", disable=not sys.stderr.isatty(), leave=False) as bar:
        for split in SPLITS:
            folder = root / DOMAIN / split
            folder.mkdir(parents=True, exist_ok=True)
            for index, source in enumerate(assignment[split]):
                word = WORDS[int(targets[source])]
                sample_id = f"{DOMAIN}-{split}-{index:05d}"
                path = folder / f"{sample_id}.png"
                Image.fromarray(render_digit(images[source], size)).save(path, format="PNG")
                samples.append(Sample(
                    id=sample_id, domain=DOMAIN, split=split, modality="image", path=relpath(path, root),
                    captions=[f"a handwritten digit {word}", f"the number {word} written by hand",
                              f"a scanned handwritten {word}"],
                    label=word, attributes={"digit": word, "source_index": int(source)}))
                bar.update()
    return sorted(samples, key=lambda s: s.id)


def assign_splits(targets: np.ndarray, settings: DomainSettings) -> dict[str, list[int]]:
    """Source indices per split: a seeded shuffle within each class, dealt round-robin over classes.

    Dealing class by class keeps every split balanced (a split of 20 holds two of each digit).
    """
    rng = settings.rng(f"{DOMAIN}:splits")
    queues = {label: list(rng.permutation(np.flatnonzero(targets == label))) for label in range(10)}
    wanted = {split: settings.counts.get(split, 0) for split in SPLITS}
    if sum(wanted.values()) > len(targets):
        raise OmniError(f"the digits domain holds {len(targets)} images; {sum(wanted.values())} were asked for "
                        f"({wanted}); lower the counts")
    out: dict[str, list[int]] = {}
    for split in ("test", "dev", "train"):  # evaluation splits first: they must stay balanced
        picked: list[int] = []
        label = 0
        while len(picked) < wanted[split]:
            if queues[label % 10]:
                picked.append(int(queues[label % 10].pop(0)))
            elif not any(queues.values()):
                break
            label += 1
        out[split] = picked
    return out


def render_digit(image: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 [0, 16] digit as a size x size RGB image: dark ink on white, bicubic upscaling."""
    ink = np.clip(image / 16.0, 0.0, 1.0)
    grey = Image.fromarray(np.rint(255 * (1.0 - ink)).astype(np.uint8))
    padded = Image.new("L", (10, 10), 255)  # a one-pixel margin, as a scan would have
    padded.paste(grey, (1, 1))
    return np.asarray(padded.resize((size, size), Image.Resampling.BICUBIC).convert("RGB"))
