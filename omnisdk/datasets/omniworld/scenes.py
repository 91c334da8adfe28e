"""Scenes: PNG pictures of one to three coloured shapes, each captioned exactly.

An object is a (colour, shape, size, position). Positions name where the object's centre lies:
left/right are the middle-row cells of a 3x3 grid's outer columns, top/bottom the middle-column
cells of its outer rows, center the middle cell. Objects never overlap, so every centre shows
its object's colour.

Compositional split: a few (colour, shape) pairs, chosen from the seed, never appear in train;
every dev and test scene holds at least one of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from omnisdk.datasets.omniworld.common import DomainSettings, Sample, held_out_pairs, relpath, write_each
from omnisdk.datasets.omniworld.draw import COLOURS, SHAPES, add_noise, make_background, render

DOMAIN = "scenes"
IMAGE_SIZE = 128
HELD_OUT = 4  # of the 24 (colour, shape) pairs
POSITIONS: dict[str, tuple[float, float]] = {  # anchor of each position, as fractions of width and height
    "left": (0.19, 0.5),
    "right": (0.81, 0.5),
    "top": (0.5, 0.19),
    "bottom": (0.5, 0.81),
    "center": (0.5, 0.5),
}
RADIUS = {"small": 0.075, "large": 0.14}  # outer radius as a fraction of the width: areas differ ~3.5x
JITTER = 0.04  # the centre moves at most this fraction from its anchor: it stays in its grid cell
POSITION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top",
                  "bottom": "at the bottom", "center": "in the center"}
POSITION_SYNONYMS = {"left": "on the left side", "right": "on the right side", "top": "near the top",
                     "bottom": "near the bottom", "center": "in the middle"}
SIZE_SYNONYMS = {"small": "little", "large": "big"}
NUMBER_WORDS = {1: "one shape", 2: "two shapes", 3: "three shapes"}


def scene_held_out(settings: DomainSettings) -> list[tuple[str, str]]:
    """The (colour, shape) pairs kept out of train: distinct colours, distinct shapes."""
    return held_out_pairs(settings.rng(f"{DOMAIN}:held-out"), tuple(COLOURS), SHAPES, HELD_OUT)


def generate(root: Path, settings: DomainSettings, *, size: int = IMAGE_SIZE) -> list[Sample]:
    """Write scenes/<split>/<id>.png for every split in `settings.counts`; samples sorted by id."""
    held = scene_held_out(settings)

    def write_one(split: str, index: int, folder: Path) -> Sample:
        spec = scene_spec(settings, split, index, held=held, size=size)
        path = folder / f"{spec['id']}.png"
        Image.fromarray(spec["pixels"]).save(path, format="PNG")
        return _sample(spec, split, relpath(path, root))

    return write_each(root, settings, DOMAIN, "img", write_one)


def scene_spec(settings: DomainSettings, split: str, index: int, *, held: list[tuple[str, str]] | None = None,
               size: int = IMAGE_SIZE, salt: str = DOMAIN) -> dict[str, Any]:
    """Everything about one scene: id, objects (with pixel centres and radii), background, captions, pixels.

    Each scene has its own generator (salted by split and index), so a scene does not change when
    the counts of other splits do, and tests can rebuild the geometry of any file. Another domain
    drawing scenes (documents' figures) passes its own `salt`, so its pictures are not copies of these.
    """
    held = scene_held_out(settings) if held is None else held
    rng = settings.rng(f"{salt}:{split}:{index}")
    objects = _choose_objects(rng, split, held)
    _place(rng, objects, size)
    background, background_attrs = make_background(rng, size, size)
    pixels = add_noise(render(background, objects), rng, float(rng.uniform(2.0, 7.0)))
    return {
        "id": f"{DOMAIN}-{split}-{index:05d}",
        "objects": objects,
        "background": background_attrs,
        "captions": captions_for(objects, rng),
        "pixels": pixels,
    }


def _choose_objects(rng: np.random.Generator, split: str, held: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """1-3 objects at distinct positions with distinct (colour, shape); dev/test lead with a held-out pair."""
    all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
    seen_pairs = [p for p in all_pairs if p not in held]
    count = int(rng.integers(1, 4))
    positions = [str(p) for p in rng.choice(list(POSITIONS), size=count, replace=False)]
    pairs: list[tuple[str, str]] = []
    if split != "train":
        pairs.append(held[int(rng.integers(len(held)))])
    pool = seen_pairs if split == "train" else all_pairs
    while len(pairs) < count:
        pair = pool[int(rng.integers(len(pool)))]
        if pair not in pairs:
            pairs.append(pair)
    objects = [{"colour": c, "shape": s, "size": str(rng.choice(list(RADIUS))), "position": p}
               for (c, s), p in zip(pairs, positions)]
    order = list(POSITIONS)
    return sorted(objects, key=lambda o: order.index(o["position"]))  # one canonical caption per layout


def _place(rng: np.random.Generator, objects: list[dict[str, Any]], size: int) -> None:
    """Give each object a pixel centre near its anchor and a radius, retrying jitter until none overlap."""
    for obj in objects:
        obj["r"] = RADIUS[obj["size"]] * size
    for attempt in range(20):
        jitter = JITTER if attempt < 19 else 0.0  # the bare anchors never overlap: a guaranteed last resort
        for obj in objects:
            fx, fy = POSITIONS[obj["position"]]
            obj["x"] = (fx + rng.uniform(-jitter, jitter)) * size
            obj["y"] = (fy + rng.uniform(-jitter, jitter)) * size
        if not _overlapping(objects, margin=0.02 * size):
            return


def _overlapping(objects: list[dict[str, Any]], margin: float) -> bool:
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            if np.hypot(a["x"] - b["x"], a["y"] - b["y"]) < a["r"] + b["r"] + margin:
                return True
    return False


def _join(phrases: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _phrase(obj: dict[str, Any], synonyms: bool = False) -> str:
    size = SIZE_SYNONYMS[obj["size"]] if synonyms else obj["size"]
    where = (POSITION_SYNONYMS if synonyms else POSITION_WORDS)[obj["position"]]
    return f"a {size} {obj['colour']} {obj['shape']} {where}"


def captions_for(objects: list[dict[str, Any]], rng: np.random.Generator) -> list[str]:
    """The canonical caption, then 2-4 paraphrases from other templates in a seeded order."""
    canonical = _join([_phrase(o) for o in objects])
    paraphrases = [
        "a picture with " + _join([_phrase(o, synonyms=True) for o in objects]),
        "; ".join(f"{POSITION_WORDS[o['position']]}, a {o['size']} {o['colour']} {o['shape']}" for o in objects),
        (_join([_phrase(o) for o in reversed(objects)]) if len(objects) > 1
         else "a single " + _phrase(objects[0]).removeprefix("a ")),
        f"{NUMBER_WORDS[len(objects)]}: {canonical}",
    ]
    order = rng.permutation(len(paraphrases))
    keep = int(rng.integers(2, len(paraphrases) + 1))
    return [canonical] + [paraphrases[i] for i in order[:keep]]


def _sample(spec: dict[str, Any], split: str, path: str) -> Sample:
    objects = [{k: o[k] for k in ("colour", "shape", "size", "position")} for o in spec["objects"]]
    return Sample(id=spec["id"], domain=DOMAIN, split=split, modality="image", path=path,
                  captions=spec["captions"], attributes={"objects": objects, "background": spec["background"]})
