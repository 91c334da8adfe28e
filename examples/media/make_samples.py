"""Regenerates the small sample files the README embeds: python examples/media/make_samples.py"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def red_circle(path: Path) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(image).ellipse((8, 28, 48, 68), fill="red")
    image.save(path)


def beep(path: Path, seconds: float = 1.0, rate: int = 16000) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    envelope = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)  # three short beeps
    sf.write(path, (0.4 * envelope * np.sin(2 * np.pi * 880 * t)).astype(np.float32), rate)


def page(path: Path) -> None:
    import pymupdf

    doc = pymupdf.open()
    p = doc.new_page(width=300, height=200)
    p.insert_text((20, 40), "Retrieval report", fontsize=16)
    p.insert_textbox(pymupdf.Rect(20, 55, 280, 190), "A short page about search across images, audio and documents.", fontsize=10)
    doc.save(path)


def moving_square(path: Path, frames: int = 16, size: int = 64) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            canvas = np.full((size, size, 3), 255, np.uint8)
            x = 40 - 2 * i  # the square moves to the left
            canvas[24:40, x : x + 16] = (0, 160, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


if __name__ == "__main__":
    red_circle(HERE / "red-circle.png")
    beep(HERE / "beeps.wav")
    page(HERE / "report.pdf")
    moving_square(HERE / "green-square-moving-left.mp4")
    print("wrote", sorted(p.name for p in HERE.iterdir() if p.suffix != ".py"))
