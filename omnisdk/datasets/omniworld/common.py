"""What every OmniWorld domain generator returns, and the settings it gets.

A domain (scenes, digits, clips, documents, sounds, spoken digits) writes its files under the
dataset root and returns one `Sample` per item. The builder (build.py) turns samples into the
corpus, queries, qrels and training pairs; domains know nothing about those files.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")


@dataclass
class Sample:
    """One generated item and what is true of it."""

    id: str  # unique in the dataset, e.g. "scenes-test-0007"
    domain: str  # scenes | digits | clips | documents | sounds | spoken
    split: Split
    modality: str  # image | video | document | audio
    path: str  # relative to the dataset root, POSIX separators
    captions: list[str]  # texts that describe it; captions[0] is the canonical one (the x2t corpus text)
    locator: dict[str, Any] | None = None  # {"page": 2} for a PDF page
    queries: list[str] = field(default_factory=list)  # extra query texts (questions about a page); default: captions
    label: str | None = None  # class name for classification tasks ("seven", "rising buzzy tones")
    attributes: dict[str, Any] = field(default_factory=dict)  # what generated it: for hard negatives and held-out checks


@dataclass(frozen=True)
class DomainSettings:
    """How many items of each split a domain makes, and its seeded random generator."""

    counts: dict[str, int]  # split -> number of items
    seed: int

    def rng(self, salt: str) -> np.random.Generator:
        """A generator that depends only on the dataset seed and `salt`, never on other domains."""
        import hashlib

        digest = hashlib.sha256(f"{self.seed}:{salt}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def relpath(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def write_each(root: Path, settings: DomainSettings, domain: str, unit: str,
               write_one: Callable[[str, int, Path], Sample]) -> list[Sample]:
    """Call `write_one(split, index, folder)` for every item of every split, in a fixed order, with a
    progress bar on a terminal; returns the samples sorted by id."""
    from tqdm import tqdm

    total = sum(settings.counts.get(split, 0) for split in SPLITS)
    samples: list[Sample] = []
    with tqdm(total=total, desc=domain, unit=unit, disable=not sys.stderr.isatty(), leave=False) as bar:
        for split in SPLITS:
            folder = root / domain / split
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(settings.counts.get(split, 0)):
                samples.append(write_one(split, index, folder))
                bar.update()
    return sorted(samples, key=lambda s: s.id)


def held_out_pairs(rng: np.random.Generator, firsts: tuple[str, ...], seconds: tuple[str, ...],
                   count: int = 4) -> list[tuple[str, str]]:
    """`count` (first, second) pairs that share no first and no second value.

    Every held-out pair's parts are then still seen in training in other combinations, which is
    what makes the held-out split a test of composition rather than of unseen words.
    """
    count = min(count, len(firsts), len(seconds))
    chosen_firsts = rng.permutation(len(firsts))[:count]
    chosen_seconds = rng.permutation(len(seconds))[:count]
    return sorted((firsts[i], seconds[j]) for i, j in zip(chosen_firsts, chosen_seconds))
