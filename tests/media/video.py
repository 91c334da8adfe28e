"""Real video files for tests, written with PyAV: every frame carries its own index.

A frame's index is drawn as a row of black/white 8x8 blocks (binary, least significant bit first),
which survives lossy compression exactly; the background's red level also rises with time, so
colour alone tells early frames from late ones after resizing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

BLOCK = 8
BITS = 8


def video_codec() -> str:
    """H.264 through libx264 when this PyAV build has it, else MPEG-4 part 2 (always built in)."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # the codec is absent from this FFmpeg build
        return "mpeg4"


def frame_pixels(index: int, frames: int, width: int, height: int) -> np.ndarray:
    """The RGB picture of frame `index`: red rises with time, the index is coded in the top row."""
    red = round(255 * index / max(frames - 1, 1))
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 0] = red
    array[..., 2] = 255 - red
    for bit in range(BITS):
        value = 255 if (index >> bit) & 1 else 0
        array[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = value
    return array


def frame_index(image) -> int:
    """Read back the index that `frame_pixels` drew, from a decoded frame at its native size."""
    array = np.asarray(image.convert("L"), dtype=np.float32)
    index = 0
    for bit in range(BITS):
        block = array[1 : BLOCK - 1, bit * BLOCK + 1 : (bit + 1) * BLOCK - 1]  # inner pixels: no edge ringing
        if block.mean() > 128:
            index |= 1 << bit
    return index


def write_mp4(
    path: str | Path,
    *,
    frames: int = 24,
    fps: int = 8,
    size: tuple[int, int] = (64, 48),
    codec: str | None = None,
    faststart: bool = False,
) -> Path:
    """Write a real video (the container follows the suffix: .mp4, .mkv, ...) and return its path.

    `faststart` puts the index first, so a truncated copy still opens and fails while decoding.
    """
    import av

    path = Path(path)
    width, height = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec or video_codec(), rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i, frames, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return path


def write_audio_only_mp4(path: str | Path, seconds: float = 1.0, rate: int = 16_000) -> Path:
    """An .mp4 holding one AAC audio stream and no video stream."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        for start in range(0, int(seconds * rate), 1024):
            tone = np.sin(np.arange(start, start + 1024) * 2 * np.pi * 440 / rate).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def truncated_copy(source: str | Path, dest: str | Path, size: int | None = None) -> Path:
    """A copy of `source` cut to `size` bytes (default: half of it), as an interrupted download leaves it."""
    data = Path(source).read_bytes()
    dest = Path(dest)
    dest.write_bytes(data[: len(data) // 2 if size is None else size])
    return dest
