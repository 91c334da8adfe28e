"""Shapes, colours and backgrounds shared by the scenes (still) and clips (video) generators.

Everything is drawn with Pillow at a 2x supersampled size and reduced, so edges are smooth but an
object's interior keeps its exact colour (the tests read it back at the object's centre).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

# Saturated colours, far from each other and from the light backgrounds below.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 150, 50),
    "blue": (35, 70, 215),
    "yellow": (235, 200, 20),
    "purple": (135, 45, 175),
    "orange": (245, 125, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
# Light, low-saturation tints: every object colour stands out on every one of them.
TINTS: dict[str, tuple[int, int, int]] = {
    "white": (246, 246, 246),
    "cream": (245, 238, 220),
    "grey": (218, 218, 218),
    "pale blue": (222, 233, 246),
    "pale green": (226, 242, 226),
    "pale pink": (246, 228, 234),
}
PATTERNS: tuple[str, ...] = ("plain", "vertical gradient", "horizontal gradient", "stripes", "checker", "speckled")
SUPERSAMPLE = 2


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a square, triangle or star whose centre is (cx, cy) and outer radius about r."""
    if shape == "square":
        h = r * 0.85  # a square of half-side r would look much bigger than a circle of radius r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # Equilateral, pointing up, with its centroid (not its bounding box centre) at (cx, cy).
        angles = [-90.0, 30.0, 150.0]
        return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for a in angles]
    if shape == "star":
        points = []
        for k in range(10):  # five outer tips alternating with five inner corners
            radius = r if k % 2 == 0 else r * 0.45
            angle = math.radians(-90.0 + 36.0 * k)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    raise ValueError(f"unknown shape '{shape}'")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour: str) -> None:
    """Draw one filled shape; coordinates are in the drawing's own pixels."""
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(shape_polygon(shape, cx, cy, r), fill=fill)


def render(background: np.ndarray, objects: list[dict[str, Any]]) -> np.ndarray:
    """Draw `objects` ({"colour", "shape", "x", "y", "r"} in output pixels) on a copy of `background`.

    The background (H, W, 3 uint8) is upscaled, the shapes drawn at the larger size, and the whole
    reduced with a box filter: smooth edges at little cost.
    """
    height, width = background.shape[:2]
    s = SUPERSAMPLE
    canvas = Image.fromarray(background).resize((width * s, height * s), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        draw_shape(draw, obj["shape"], obj["x"] * s, obj["y"] * s, obj["r"] * s, obj["colour"])
    return np.asarray(canvas.resize((width, height), Image.Resampling.BOX))


def make_background(rng: np.random.Generator, width: int, height: int,
                    patterns: tuple[str, ...] = PATTERNS) -> tuple[np.ndarray, dict[str, str]]:
    """A light background (H, W, 3 uint8) and its description {"pattern", "tint"}."""
    tint_name = str(rng.choice(list(TINTS)))
    pattern = str(rng.choice(list(patterns)))
    base = np.array(TINTS[tint_name], dtype=np.float32)
    out = np.broadcast_to(base, (height, width, 3)).copy()
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if pattern in ("vertical gradient", "horizontal gradient"):
        along = ys / max(height - 1, 1) if pattern == "vertical gradient" else xs / max(width - 1, 1)
        depth = float(rng.uniform(20, 40))  # darkens toward one edge, never below the light range
        out -= (along if rng.random() < 0.5 else 1 - along)[..., None] * depth
    elif pattern == "stripes":
        period = int(rng.integers(6, 14))
        coord = xs + ys if rng.random() < 0.5 else xs - ys  # diagonal stripes, either direction
        out -= ((coord // period) % 2 == 0)[..., None] * 18.0
    elif pattern == "checker":
        cell = int(rng.integers(8, 20))
        out -= (((xs // cell) + (ys // cell)) % 2 == 0)[..., None] * 16.0
    elif pattern == "speckled":
        out -= rng.random((height, width, 1)).astype(np.float32) * 30.0
    return np.clip(out, 0, 255).astype(np.uint8), {"pattern": pattern, "tint": tint_name}


def add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian pixel noise, clipped to the 8-bit range."""
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def nearest_colour(rgb: np.ndarray | tuple[float, float, float]) -> str:
    """The colour name (object colours and tints alike, tints prefixed 'tint:') closest to `rgb`."""
    rgb = np.asarray(rgb, dtype=np.float32)
    palette = {**COLOURS, **{f"tint:{k}": v for k, v in TINTS.items()}}
    return min(palette, key=lambda name: float(np.sum((np.asarray(palette[name], np.float32) - rgb) ** 2)))
