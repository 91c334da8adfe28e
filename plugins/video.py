"""Videos: decord decoding with a PyAV fallback, uniform frame sampling, and the shared vision tower.

Each video becomes `num_frames` frames sampled at the centres of equal time slices of the whole
file, or of its locator's [t0, t1] span. Every frame goes through the image plugin's adapter
(`ImageAdapter.encode_pixels`, pooled to `frame_token_grid`), and a learned temporal position is
added to every token of a frame. `chunk` cuts long videos into `segment_seconds` windows.

FFmpeg (inside decord and PyAV) parses hostile input in C: decoding and probing run in a child
process (`omnisdk.isolation.IsolatedRunner`), so a crash, a hang (`timeout_s`) or a runaway
allocation (`max_memory_mb`) costs the one item in flight, never the batch or the caller.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn

from omnisdk.hookspecs import hookimpl
from omnisdk.isolation import IsolatedRunner, IsolationError
from omnisdk.items import Item, Locator
from omnisdk.modality import (
    BuildContext,
    FusionSpec,
    Instructions,
    ModalityPlugin,
    PluginConfig,
    Prepared,
    Runtime,
    TokenEmbeddings,
    TrainingDefaults,
    run_per_item,
)
from omnisdk.plugins.image import image_to_tensor

try:  # decord and decord2 share this import name; either may be absent (PyAV then decodes alone)
    import decord
    from decord import DECORDError
except ImportError:  # pragma: no cover - depends on the install
    decord = None

    class DECORDError(Exception):  # type: ignore[no-redef]
        """Stand-in so `except` clauses stay valid without decord."""


# decord raises RuntimeError when it cannot open a file, DECORDError (not a RuntimeError) from its
# C++ checks while opening or decoding, and AssertionError when the file reports no frames.
_DECORD_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, DECORDError, AssertionError)
# Beyond this gap to the next sample, PyAV seeks to a keyframe instead of decoding every frame.
_SEEK_GAP_SECONDS = 4.0
# A segment's tail shorter than this joins the previous segment rather than making its own chunk.
_MIN_TAIL_SECONDS = 1.0


class VideoConfig(PluginConfig):
    #: frames sampled per video (or per located segment); also the size of the temporal table.
    num_frames: int = Field(8, ge=1, le=256)
    #: each frame's spatial tokens are average-pooled to a grid of this side.
    frame_token_grid: int = Field(2, ge=1)
    #: `chunk` cuts a video into windows of this many seconds.
    segment_seconds: float = Field(10.0, gt=0)
    #: frames with more pixels are refused before they are converted (decompression-bomb guard).
    max_pixels: int = Field(16_777_216, ge=1)
    #: PyAV fallback: frames it may decode for one item (bounds the work on files with rare keyframes).
    max_decode_frames: int = Field(5_000, ge=1)
    #: decode in a child process; False decodes in this process (faster to debug, not crash-safe).
    isolate: bool = True
    #: seconds one item's decoding (or one probe) may take before its child process is killed.
    timeout_s: float = Field(120.0, gt=0)
    #: address space the decoding child may grow by, in MiB (Linux); None: no limit.
    max_memory_mb: int | None = Field(4096, ge=64)


class VideoError(ValueError):
    """A video item that cannot be used; the message names the file and the cause."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float
    width: int | None = None
    height: int | None = None


# -- sampling ---------------------------------------------------------------------------------------
def sample_times(duration: float, locator: Locator | None, num_frames: int, name: str = "video") -> list[float]:
    """Centres of `num_frames` equal time slices of the video, or of the locator's [t0, t1] span."""
    if not duration > 0:
        raise VideoError(f"cannot decode video '{name}': it reports a duration of {duration} s")
    start = locator.t0 if locator is not None and locator.t0 is not None else 0.0
    end = locator.t1 if locator is not None and locator.t1 is not None else duration
    if start < 0 or end <= start:
        raise VideoError(f"video '{name}': locator {start}-{end} s is not a forward time span")
    if start >= duration:
        raise VideoError(f"video '{name}': locator starts at {start:.2f} s, after the video ends at {duration:.2f} s")
    end = min(end, duration)  # chunk bounds come from a header probe and may overshoot slightly
    step = (end - start) / num_frames
    return [start + (k + 0.5) * step for k in range(num_frames)]


def segment_bounds(start: float, end: float, seconds: float) -> list[tuple[float, float]]:
    """Consecutive windows of `seconds` covering [start, end]; a very short tail joins its neighbour."""
    count = max(1, math.ceil((end - start) / seconds - 1e-9))
    edges = [start + k * seconds for k in range(count)] + [end]
    if len(edges) > 2 and edges[-1] - edges[-2] < min(_MIN_TAIL_SECONDS, seconds / 2):
        del edges[-2]
    return [(round(a, 3), round(b, 3)) for a, b in zip(edges, edges[1:])]


# -- decoding -----------------------------------------------------------------------------------------
def _cause(exc: BaseException) -> str:
    """The useful line of a decoder error, without decord's timestamp and source location."""
    lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    line = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", lines[0])
    return re.sub(r"^\[Errno -?\d+\]\s*", "", line).strip()


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width * height > max_pixels:
        raise VideoError(
            f"video '{name}' has {width}x{height} = {width * height:,} pixels per frame, over the limit of "
            f"{max_pixels:,} (raise the video plugin's max_pixels to allow it)"
        )


def decode_decord(path: Path, locator: Locator | None, num_frames: int, max_pixels: int) -> list[Any]:
    """Sampled frames as RGB PIL images, read with decord (raises decord's own errors)."""
    from PIL import Image

    if decord is None:
        raise RuntimeError("decord is not installed")
    reader = decord.VideoReader(str(path))
    count = len(reader)
    stamps = np.asarray(reader.get_frame_timestamp(np.arange(count)), dtype=np.float64).reshape(count, 2)
    fps = reader.get_avg_fps() or 25.0
    # Some streams (VP9 in MP4) give frames no duration: the last one still lasts a frame's time.
    starts, duration = stamps[:, 0], max(float(stamps[-1, 1]), float(stamps[-1, 0]) + 1.0 / fps)
    if not (np.all(np.isfinite(stamps)) and duration > 0):  # some containers carry no usable timestamps
        starts, duration = np.arange(count) / fps, count / fps
    times = sample_times(duration, locator, num_frames, path.name)
    # The frame shown at time t is the last one starting at or before t.
    indices = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, count - 1).tolist()
    decoded: dict[int, Any] = {}
    for index in dict.fromkeys(indices):  # one frame at a time keeps memory flat and checks size first
        array = reader.get_batch([index]).asnumpy()[0]
        _check_pixels(array.shape[1], array.shape[0], max_pixels, path.name)
        decoded[index] = Image.fromarray(array)
    return [decoded[i] for i in indices]


def _pyav_duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:  # Matroska and WebM give the duration on the container only
        import av

        return container.duration / av.time_base
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    return 0.0


def _open_pyav(path: Path) -> tuple[Any, Any]:
    import av

    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise VideoError(f"cannot decode video '{path.name}': the file has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # a stream listed without codec parameters (a cut or damaged header)
        container.close()
        raise VideoError(f"cannot decode video '{path.name}': its video stream has no codec parameters (truncated or corrupt)")
    return container, stream


def decode_pyav(path: Path, locator: Locator | None, num_frames: int, max_pixels: int, max_decode_frames: int) -> list[Any]:
    """Sampled frames as RGB PIL images, read with PyAV: the fallback when decord is absent or fails."""
    container, stream = _open_pyav(path)
    with container:
        _check_pixels(stream.codec_context.width, stream.codec_context.height, max_pixels, path.name)
        stream.thread_type = "AUTO"
        offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        times = sample_times(_pyav_duration(container, stream), locator, num_frames, path.name)
        return _pick_frames(container, stream, times, offset, max_decode_frames, path.name)


def _pick_frames(container: Any, stream: Any, times: list[float], offset: float, budget: int, name: str) -> list[Any]:
    """Walk the decoded frames, keeping for each target time the frame on screen at that time."""
    fps = float(stream.average_rate or 25)
    frames, shown, pending, decoded, ended, picked = None, None, None, 0, False, []

    def time_of(frame: Any) -> float:
        return frame.time - offset if frame.time is not None else decoded / fps

    for target in times:
        if frames is None or (shown is not None and not ended and target - time_of(shown) > _SEEK_GAP_SECONDS):
            if frames is not None or target > _SEEK_GAP_SECONDS:  # jump to the keyframe before target
                container.seek(int((target + offset) / stream.time_base), stream=stream, backward=True)
            frames, shown, pending = container.decode(stream), None, None
        while not ended:
            frame = pending if pending is not None else next(frames, None)
            pending = None
            if frame is None:
                ended = True
                break
            decoded += 1
            if decoded > budget:
                raise VideoError(f"video '{name}': more than {budget} frames to decode (raise max_decode_frames)")
            if shown is not None and time_of(frame) > target:
                pending = frame  # it belongs to a later target
                break
            shown = frame
            if time_of(frame) > target:  # the target precedes the first frame: take the first
                break
        if shown is None:
            raise VideoError(f"cannot decode video '{name}': no frame could be decoded")
        if ended and target - time_of(shown) > 2.0 / fps + 0.1:
            raise VideoError(
                f"cannot decode video '{name}': frames stop at {time_of(shown):.2f} s but the header promises "
                f"{target:.2f} s or more (truncated file?)"
            )
        picked.append(shown.to_image())
    return picked


def read_frames(path: Path, locator: Locator | None, config: VideoConfig) -> list[Any]:
    """Sampled frames of one video: decord first, PyAV when decord is absent or fails on this file."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"cannot decode video '{path}': no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"cannot decode video '{path.name}': the file is empty (0 bytes)")
    decord_cause = None
    if decord is not None:
        try:
            return decode_decord(path, locator, config.num_frames, config.max_pixels)
        except _DECORD_ERRORS as exc:  # PyAV's newer FFmpeg may still read it
            decord_cause = _cause(exc)
    try:
        import av
    except ImportError:
        raise VideoError(f"cannot decode video '{path.name}': {decord_cause} (PyAV is not installed)") from None
    note = f" (decord: {decord_cause})" if decord_cause else ""
    try:
        return decode_pyav(path, locator, config.num_frames, config.max_pixels, config.max_decode_frames)
    except VideoError as exc:
        raise VideoError(f"{exc}{note}") from exc
    except (av.error.FFmpegError, OSError, IndexError, EOFError) as exc:
        raise VideoError(f"cannot decode video '{path.name}': {_cause(exc)}{note}") from exc


def probe_video(path: Path) -> VideoInfo:
    """Duration (and frame size when known) from the header: PyAV reads no frames; decord indexes packets."""
    path = Path(path)
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        try:
            container, stream = _open_pyav(path)
        except (av.error.FFmpegError, OSError, IndexError) as exc:
            raise VideoError(f"cannot read video '{path.name}': {_cause(exc)}") from exc
        with container:
            size = stream.codec_context.width, stream.codec_context.height
            return VideoInfo(_pyav_duration(container, stream), *size)
    if decord is None:
        raise VideoError("neither decord nor PyAV is installed: pip install 'omnisdk[video]'")
    try:
        reader = decord.VideoReader(str(path))
        start, end = (float(t) for t in reader.get_frame_timestamp(len(reader) - 1))
        return VideoInfo(max(end, start + 1.0 / (reader.get_avg_fps() or 25.0)))
    except _DECORD_ERRORS as exc:
        raise VideoError(f"cannot read video '{path.name}': {_cause(exc)}") from exc


# -- adapter and plugin -------------------------------------------------------------------------------
class VideoAdapter(nn.Module):
    """Frames through the image adapter's tower, plus a learned position per frame; no tower of its own."""

    def __init__(self, config: VideoConfig, hidden_size: int):
        super().__init__()
        self.frame_token_grid = config.frame_token_grid
        # Small random values, as for BERT's position table: frames differ in position from step one.
        self.temporal = nn.Parameter(torch.randn(config.num_frames, hidden_size) * 0.02)

    def forward(self, batch: dict, runtime: Runtime) -> TokenEmbeddings:
        frames = batch["frames"]  # [B, F, 3, S, S]
        videos, count = frames.shape[:2]
        if count > self.temporal.size(0):
            raise ValueError(f"a batch has {count} frames per video, the temporal table only {self.temporal.size(0)}")
        tower = runtime.adapter("image")
        if hasattr(tower, "pixel_tokens"):
            return self._frames_as_images(tower, frames, runtime)
        tokens = tower.encode_pixels(frames.flatten(0, 1), token_grid=self.frame_token_grid)
        per_frame, hidden = tokens.shape[1:]
        if count * per_frame > runtime.max_length - 2:
            raise ValueError(
                f"{count} frames x {per_frame} tokens = {count * per_frame} tokens exceed the backbone's "
                f"max_length {runtime.max_length}: lower num_frames or frame_token_grid"
            )
        tokens = tokens.view(videos, count, per_frame, hidden) + self.temporal[:count].view(1, count, 1, hidden)
        embeds = tokens.reshape(videos, count * per_frame, hidden)
        return TokenEmbeddings(embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device))

    def _frames_as_images(self, tower: nn.Module, frames: torch.Tensor, runtime: Runtime) -> TokenEmbeddings:
        """A vision-language backbone: each frame is an image of its own (start, patches, end, M-RoPE grid),
        in time order, plus the frame's learned position; the tower's temporal patches are not used."""
        videos, count = frames.shape[:2]
        part = tower.pixel_tokens(frames.flatten(0, 1), token_grid=self.frame_token_grid)
        per_frame, hidden = part.embeds.shape[1:]  # frames share a size: every frame has the same count
        if count * per_frame > runtime.content_budget("video"):
            raise ValueError(
                f"{count} frames x {per_frame} tokens = {count * per_frame} tokens exceed what the backbone's "
                f"max_length {runtime.max_length} leaves for content: lower num_frames or frame_token_grid"
            )
        embeds = part.embeds.view(videos, count, per_frame, hidden) + self.temporal[:count].view(1, count, 1, hidden)
        grids = [torch.cat(part.grids[v * count : (v + 1) * count]) for v in range(videos)]
        return TokenEmbeddings(embeds.reshape(videos, count * per_frame, hidden), part.mask.reshape(videos, -1),
                               mm_types=part.mm_types.reshape(videos, -1), grids=grids)


class VideoPlugin(ModalityPlugin):
    """MP4, MOV, MKV, WebM, AVI videos as uniformly sampled frames through the shared vision tower.

    A video with fewer frames than `num_frames` (or a short locator span) repeats frames rather than
    padding: samples are taken at equal time steps, so a frame on screen for longer is legitimately
    seen at several of them. Every video thus has the same token count and a full mask, the temporal
    table is always used in full, and mean pooling weighs each frame by its time on screen.
    """

    name = "video"
    version = "0.1.0"
    description = "MP4, MOV, MKV, WebM, AVI videos: sampled frames through the shared vision tower"
    extra = "video"
    requires = ("decord|av", "PIL", "timm")
    extensions = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
    uses = ("image",)
    Config = VideoConfig
    instructions = Instructions(query="Find a video that matches: ", document="A video: ")
    aspect_prompts = ("the whole clip", "the objects in it", "their attributes: colour, size and shape", "their motion and positions")
    # The temporal table is the only parameter here; the tower is the image adapter's (shared there too).
    fusion = FusionSpec(shared=["*"])
    training = TrainingDefaults(learning_rate=1e-4, steps=300, batch_size=8)

    def preprocess(self, items: Sequence[Item], runtime: Runtime) -> Prepared:
        adapter = runtime.adapter("image")
        size = runtime.plugin("image").config.image_size

        def load(item: Item) -> torch.Tensor:
            if item.path is None:
                raise VideoError(f"a video item needs a file path, got {type(item.data).__name__}")
            try:
                frames = runner.run(read_frames, Path(item.path), item.locator, self.config)
            except IsolationError as exc:
                raise VideoError(f"cannot decode video '{Path(item.path).name}': {exc}") from None
            return torch.stack([image_to_tensor(frame, size, adapter.mean, adapter.std) for frame in frames])

        # Only decoding failures are per item; anything else is a bug and should surface as one.
        with self.runner() as runner:
            tensors, ok, errors = run_per_item(items, load, errors_of=(VideoError, OSError))
        batch = {"frames": torch.stack(tensors)} if tensors else None
        return Prepared(batch=batch, ok=ok, errors=errors)

    def build_adapter(self, ctx: BuildContext) -> nn.Module:
        return VideoAdapter(self.config, ctx.hidden_size)

    def runner(self) -> IsolatedRunner:
        """A context manager that decodes videos under this plugin's isolation settings."""
        return IsolatedRunner(
            self.config.isolate, self.config.timeout_s, self.config.max_memory_mb,
            what="the video decoder", preload=("decord", "av"),
        )

    def chunk(self, item: Item) -> list[Item]:
        """`segment_seconds` windows over the video (or its locator span); a short one stays whole."""
        if item.path is None:
            return [item]
        try:
            with self.runner() as runner:
                duration = runner.run(probe_video, Path(item.path)).duration
        except (VideoError, IsolationError):
            return [item]  # preprocess reports the cause for this item
        start, end = 0.0, duration
        if item.locator is not None and item.locator.t0 is not None:
            start = item.locator.t0
            end = min(item.locator.t1 if item.locator.t1 is not None else duration, duration)
        if end - start <= self.config.segment_seconds or duration <= 0:
            return [item]
        return [item.with_locator(Locator(t0=a, t1=b)) for a, b in segment_bounds(start, end, self.config.segment_seconds)]

    def length_hint(self, item: Item) -> int:
        return 0

    def preview(self, item: Item, side: int) -> Any:
        """The frame at the middle of the item's span (of the whole video without a locator)."""
        locator = item.locator
        if locator is not None and locator.t0 is not None:
            middle = (locator.t0 + locator.t1) / 2 if locator.t1 is not None else locator.t0
            locator = Locator(t0=middle, t1=middle + 0.04)  # one frame, at the centre of a short span
        else:
            locator = None
        return read_frames(Path(item.path), locator, self.config.model_copy(update={"num_frames": 1}))[0]


@hookimpl
def omnisdk_register_modalities(register):
    register(VideoPlugin)
