"""Clips: short MP4 videos of one or two coloured shapes, each moving one way, captioned exactly.

An object is a (colour, shape, motion). A mover crosses the frame's centre line: an object moving
left starts right of the centre and ends left of it, and so on for right, up and down; a growing or
shrinking object stays put while its radius changes about fourfold. Two objects get a lane each
(top and bottom halves when either moves sideways, left and right halves when either moves up or
down), so they never overlap; a sideways mover and an up/down mover therefore never share a clip.

Compositional split: a few (shape, motion) pairs, chosen from the seed, never appear in train;
every dev and test clip holds at least one of them.

Files are byte-identical for a seed on one machine: RGB is converted to YUV here (not by swscale),
libx264 runs on one thread, and the MP4 muxer is bitexact, with no creation time.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from omnisdk.datasets.omniworld.common import DomainSettings, Sample, held_out_pairs, relpath, write_each
from omnisdk.datasets.omniworld.draw import COLOURS, SHAPES, make_background, render

DOMAIN = "clips"
FRAME_SIZE = 96  # even, as yuv420p needs
FRAMES = 16
FPS = 8
HELD_OUT = 4  # of the 24 (shape, motion) pairs
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "growing", "shrinking")
SIDEWAYS, UPDOWN = ("left", "right"), ("up", "down")
# Unit step of each mover, in image coordinates (y grows downward).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOVER_RADIUS = (0.09, 0.12)  # fractions of the frame side
TRAVEL = (0.18, 0.28)  # how far from the centre line a mover starts, and ends on the other side
SMALL_RADIUS, LARGE_RADIUS = (0.04, 0.06), (0.17, 0.20)  # a grower's first and last radius
MARGIN = 0.03  # kept free between an object and its lane's edge
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
# x264 settings fixed here rather than left to defaults. MB-tree rate control is off: on clips this
# short it made the bitstream differ between runs of the same input (measured here, even on one thread).
X264_OPTIONS = {"preset": "medium", "crf": "23", "threads": "1", "x264-params": "mbtree=0"}

MOTION_WORDS = {"left": "moving to the left", "right": "moving to the right", "up": "moving up",
                "down": "moving down", "growing": "growing", "shrinking": "shrinking"}
MOTION_VERBS = {"left": "slides left", "right": "slides right", "up": "rises", "down": "sinks",
                "growing": "gets bigger", "shrinking": "gets smaller"}
MOTION_ALT = {"left": "moving left", "right": "moving right", "up": "moving upward", "down": "moving downward",
              "growing": "growing larger", "shrinking": "shrinking in size"}
MOTION_THIRD = {"left": "moves to the left", "right": "moves to the right", "up": "moves up",
                "down": "moves down", "growing": "grows", "shrinking": "shrinks"}


def clip_held_out(settings: DomainSettings) -> list[tuple[str, str]]:
    """The (shape, motion) pairs kept out of train: distinct shapes, distinct motions."""
    return held_out_pairs(settings.rng(f"{DOMAIN}:held-out"), SHAPES, MOTIONS, HELD_OUT)


def generate(root: Path, settings: DomainSettings, *, size: int = FRAME_SIZE, frames: int = FRAMES) -> list[Sample]:
    """Write clips/<split>/<id>.mp4 for every split in `settings.counts`; samples sorted by id."""
    held = clip_held_out(settings)
    codec = _codec()

    def write_one(split: str, index: int, folder: Path) -> Sample:
        spec = clip_spec(settings, split, index, held=held, size=size)
        path = folder / f"{spec['id']}.mp4"
        write_mp4(path, render_frames(spec, frames), codec=codec)
        return _sample(spec, split, relpath(path, root))

    return write_each(root, settings, DOMAIN, "clip", write_one)


def clip_spec(settings: DomainSettings, split: str, index: int, *, held: list[tuple[str, str]] | None = None,
              size: int = FRAME_SIZE) -> dict[str, Any]:
    """Everything about one clip but its pixels: id, objects with start/end geometry, background, captions.

    Each clip has its own generator (salted by split and index), so a clip does not change when the
    counts of other splits do, and tests can rebuild where every object is in any frame.
    """
    held = clip_held_out(settings) if held is None else held
    rng = settings.rng(f"{DOMAIN}:{split}:{index}")
    objects = _choose_objects(rng, split, held)
    _place(rng, objects, size)
    background, background_attrs = make_background(rng, size, size)
    return {
        "id": f"{DOMAIN}-{split}-{index:05d}",
        "objects": objects,
        "background": background_attrs,
        "background_pixels": background,
        "captions": captions_for(objects, rng),
    }


def _choose_objects(rng: np.random.Generator, split: str, held: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One or two objects of distinct colours; dev/test lead with a held-out (shape, motion) pair."""
    all_pairs = [(s, m) for s in SHAPES for m in MOTIONS]
    pool = [p for p in all_pairs if p not in held] if split == "train" else all_pairs
    first = held[int(rng.integers(len(held)))] if split != "train" else pool[int(rng.integers(len(pool)))]
    pairs = [first]
    if rng.random() < 0.5:
        partners = [p for p in pool if _compatible(first[1], p[1])]
        pairs.append(partners[int(rng.integers(len(partners)))])
    colours = [str(c) for c in rng.choice(list(COLOURS), size=len(pairs), replace=False)]
    objects = [{"colour": c, "shape": s, "motion": m} for c, (s, m) in zip(colours, pairs)]
    order = list(COLOURS)
    return sorted(objects, key=lambda o: order.index(o["colour"]))  # one canonical caption per clip


def _compatible(a: str, b: str) -> bool:
    """Whether two motions fit in parallel lanes: never a sideways mover with an up/down one."""
    return not ((a in SIDEWAYS and b in UPDOWN) or (a in UPDOWN and b in SIDEWAYS))


def _lanes(rng: np.random.Generator, objects: list[dict[str, Any]], size: int) -> list[Box]:
    """A box (x0, y0, x1, y1) per object: the whole frame for one, parallel halves for two."""
    if len(objects) == 1:
        return [(0.0, 0.0, float(size), float(size))]
    motions = {o["motion"] for o in objects}
    stacked = bool(motions & set(SIDEWAYS)) or (not motions & set(UPDOWN) and rng.random() < 0.5)
    half = size / 2
    boxes = ([(0.0, 0.0, float(size), half), (0.0, half, float(size), float(size))] if stacked
             else [(0.0, 0.0, half, float(size)), (half, 0.0, float(size), float(size))])
    return [boxes[i] for i in rng.permutation(2)]


def _place(rng: np.random.Generator, objects: list[dict[str, Any]], size: int) -> None:
    """Give each object a start and end centre ("x0", "y0", "x1", "y1") and radius ("r0", "r1") in pixels.

    Movers cross the frame's centre line (lanes span the frame along their motion); size changers
    keep their centre. Every object stays inside its lane at every frame.
    """
    for obj, (bx0, by0, bx1, by1) in zip(objects, _lanes(rng, objects, size)):
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        half_w, half_h = (bx1 - bx0) / 2, (by1 - by0) / 2
        margin = MARGIN * size
        if obj["motion"] in DIRECTIONS:
            r = float(rng.uniform(*MOVER_RADIUS)) * size
            r = min(r, min(half_w, half_h) - margin)
            dx, dy = DIRECTIONS[obj["motion"]]
            start, end = (float(rng.uniform(*TRAVEL)) * size for _ in range(2))
            # Sideways: jitter the height within the lane; up/down: jitter the column.
            slack = (half_h if dx else half_w) - r - margin
            side = float(rng.uniform(-1, 1)) * min(slack, 0.15 * size)
            ox, oy = (cx, cy + side) if dx else (cx + side, cy)
            obj.update(x0=ox - dx * start, y0=oy - dy * start, x1=ox + dx * end, y1=oy + dy * end, r0=r, r1=r)
        else:
            small = float(rng.uniform(*SMALL_RADIUS)) * size
            large = min(float(rng.uniform(*LARGE_RADIUS)) * size, min(half_w, half_h) - margin)
            jx = float(rng.uniform(-1, 1)) * min(half_w - large - margin, 0.08 * size)
            jy = float(rng.uniform(-1, 1)) * min(half_h - large - margin, 0.08 * size)
            r0, r1 = (small, large) if obj["motion"] == "growing" else (large, small)
            obj.update(x0=cx + jx, y0=cy + jy, x1=cx + jx, y1=cy + jy, r0=r0, r1=r1)


def object_at(obj: dict[str, Any], frame: int, frames: int = FRAMES) -> dict[str, Any]:
    """The object's centre and radius in `frame` (linear in time from the first frame to the last)."""
    t = frame / max(frames - 1, 1)
    return {"colour": obj["colour"], "shape": obj["shape"], "x": obj["x0"] + (obj["x1"] - obj["x0"]) * t,
            "y": obj["y0"] + (obj["y1"] - obj["y0"]) * t, "r": obj["r0"] + (obj["r1"] - obj["r0"]) * t}


def render_frames(spec: dict[str, Any], frames: int = FRAMES) -> list[np.ndarray]:
    """The clip's RGB frames (H, W, 3 uint8)."""
    return [render(spec["background_pixels"], [object_at(o, k, frames) for o in spec["objects"]])
            for k in range(frames)]


def rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 as PyAV's (H * 3 / 2, W) yuv420p layout.

    Done here with elementwise float64 arithmetic, so the bytes do not depend on which SIMD path
    swscale would take on this CPU.
    """
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0

    def pool(plane: np.ndarray) -> np.ndarray:  # mean of each 2x2 block: chroma at half resolution
        return (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]) / 4.0

    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8).ravel() for p in (y, pool(cb), pool(cr))]
    height, width = rgb.shape[:2]
    return np.concatenate(planes).reshape(height * 3 // 2, width)


def _codec() -> str:
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # this FFmpeg build lacks it; MPEG-4 part 2 is always built in
        warnings.warn("PyAV has no libx264 encoder: OmniWorld clips are written as MPEG-4 part 2 instead of H.264",
                      stacklevel=3)
        return "mpeg4"


def write_mp4(path: Path, frames: list[np.ndarray], *, fps: int = FPS, codec: str = "libx264") -> None:
    """Encode RGB frames (even width and height) as a byte-reproducible MP4."""
    import av

    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"clip frames must have even sides for yuv420p, got {width}x{height}")
    # bitexact: no muxer version string; no metadata is set, so no creation_time is written either.
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1  # x264 picks its thread count from the CPU count, and the bitstream follows it
        context = stream.codec_context
        context.color_range, context.colorspace = 1, 6  # limited range, BT.601 (SMPTE 170M): what rgb_to_yuv420 makes
        context.color_primaries, context.color_trc = 6, 6
        if codec == "libx264":
            stream.options = dict(X264_OPTIONS)
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420(pixels), format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _phrase(obj: dict[str, Any], words: dict[str, str] = MOTION_WORDS) -> str:
    article = "an" if obj["colour"][0] in "aeiou" else "a"  # "an orange star"
    return f"{article} {obj['colour']} {obj['shape']} {words[obj['motion']]}"


def captions_for(objects: list[dict[str, Any]], rng: np.random.Generator) -> list[str]:
    """The canonical caption, then 2-4 paraphrases from other templates in a seeded order."""
    canonical = " and ".join(_phrase(o) for o in objects)
    paraphrases = [
        " while ".join(_phrase(o, MOTION_VERBS) for o in objects),
        "a video of " + " and ".join(_phrase(o, MOTION_ALT) for o in objects),
        "a clip in which " + " and ".join(_phrase(o, MOTION_THIRD) for o in objects),
        (" and ".join(_phrase(o) for o in reversed(objects)) if len(objects) > 1
         else "a single " + _phrase(objects[0]).split(" ", 1)[1]),
    ]
    order = rng.permutation(len(paraphrases))
    keep = int(rng.integers(2, len(paraphrases) + 1))
    return [canonical] + [paraphrases[i] for i in order[:keep]]


def _sample(spec: dict[str, Any], split: str, path: str) -> Sample:
    objects = [{k: o[k] for k in ("colour", "shape", "motion")} for o in spec["objects"]]
    return Sample(id=spec["id"], domain=DOMAIN, split=split, modality="video", path=path,
                  captions=spec["captions"], attributes={"objects": objects, "background": spec["background"]})
