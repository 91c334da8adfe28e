"""The video plugin on real files written by PyAV: sampling, fallback, chunks, errors, encoding."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from media.video import frame_index, truncated_copy, video_codec, write_audio_only_mp4, write_mp4
from omnisdk.items import Item, Locator
from omnisdk.model import OmniModel
from omnisdk.plugin_manager import get_modality
from omnisdk.plugins.video import (
    VideoConfig,
    VideoError,
    VideoPlugin,
    decode_decord,
    decode_pyav,
    probe_video,
    read_frames,
    sample_times,
    segment_bounds,
)

BIG = 10**9  # a pixel limit no test video reaches


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("video")
    clip = write_mp4(d / "clip.mp4")  # 24 frames at 8 fps: 3 s
    slow = write_mp4(d / "slow.mp4", frames=48, fps=8, faststart=True)  # 6 s, index at the front
    return SimpleNamespace(
        dir=d,
        clip=clip,
        slow=slow,
        mkv=write_mp4(d / "clip.mkv"),
        long=write_mp4(d / "long.mp4", frames=50, fps=2),  # 25 s
        short=write_mp4(d / "short.mp4", frames=2, fps=2),  # 1 s, two frames
        half=truncated_copy(clip, d / "half.mp4"),
        stub=truncated_copy(clip, d / "stub.mp4", 200),
        cut_decode=truncated_copy(slow, d / "cut_decode.mp4"),  # opens, fails while decoding
        audio=write_audio_only_mp4(d / "audio.mp4"),
        empty=_empty(d / "empty.mp4"),
        missing=d / "missing.mp4",
    )


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


@pytest.fixture(scope="module")
def model(tiny_model_factory) -> OmniModel:
    # "image" is listed although video `uses` it: see the note on _instantiate_plugins in the report.
    return tiny_model_factory(modalities=["image", "video"])


def test_registered_with_metadata():
    cls = get_modality("video")
    assert cls is VideoPlugin
    assert cls.uses == ("image",)
    assert {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"} <= set(cls.extensions)
    assert cls.accepts_path(Path("x.MP4"))
    assert not cls.missing_requirements()


def test_writer_uses_h264_when_available(media):
    import av

    with av.open(str(media.clip)) as container:
        assert container.streams.video[0].codec_context.name == ("h264" if video_codec() == "libx264" else "mpeg4")
        assert container.streams.video[0].frames == 24


def test_sample_times_are_slice_centres():
    assert sample_times(4.0, None, 4) == [0.5, 1.5, 2.5, 3.5]
    assert sample_times(10.0, Locator(t0=2.0, t1=4.0), 2) == [2.5, 3.5]
    assert sample_times(3.0, Locator(t0=2.0, t1=9.0), 2) == [2.25, 2.75]  # clipped to the end
    with pytest.raises(VideoError, match="after the video ends"):
        sample_times(3.0, Locator(t0=5.0, t1=6.0), 2)
    with pytest.raises(VideoError, match="not a forward time span"):
        sample_times(3.0, Locator(t0=2.0, t1=1.0), 2)


@pytest.mark.parametrize("decode", ["decord", "pyav"])
@pytest.mark.parametrize("name", ["clip", "mkv"])
def test_uniform_sampling_over_whole_video(media, decode, name):
    frames = _decode(decode, getattr(media, name), None, 4)
    # 3 s at 8 fps, slices of 0.75 s centred at 0.375, 1.125, 1.875, 2.625 s.
    assert [frame_index(f) for f in frames] == [3, 9, 15, 21]
    assert all(f.size == (64, 48) and f.mode == "RGB" for f in frames)


@pytest.mark.parametrize("decode", ["decord", "pyav"])
def test_locator_limits_sampling_to_its_span(media, decode):
    frames = _decode(decode, media.slow, Locator(t0=2.0, t1=4.0), 4)
    indices = [frame_index(f) for f in frames]
    assert indices == [18, 22, 26, 30]  # all inside [16, 32), the frames of 2-4 s at 8 fps
    reds = [np.asarray(f)[24:, :, 0].mean() for f in frames]
    for red, index in zip(reds, indices):  # colour encodes time too: red rises 255/47 per frame
        assert abs(red - 255 * index / 47) < 8
    assert all(255 * 16 / 47 - 8 < r < 255 * 32 / 47 + 8 for r in reds)


@pytest.mark.parametrize("decode", ["decord", "pyav"])
def test_short_video_repeats_frames(media, decode):
    frames = _decode(decode, media.short, None, 4)
    assert [frame_index(f) for f in frames] == [0, 0, 1, 1]


def test_pyav_seeks_far_targets_of_a_long_video(media):
    frames = decode_pyav(media.long, None, 5, BIG, max_decode_frames=5_000)
    assert [frame_index(f) for f in frames] == [5, 15, 25, 35, 45]  # 2.5, 7.5, ... 22.5 s at 2 fps


def test_pyav_decode_budget_is_enforced(media):
    with pytest.raises(VideoError, match="max_decode_frames"):
        decode_pyav(media.slow, None, 4, BIG, max_decode_frames=10)


def test_pixel_limit_refuses_large_frames(media):
    with pytest.raises(VideoError, match="over the limit"):
        read_frames(media.clip, None, VideoConfig(num_frames=2, max_pixels=1000))


def test_decord_decode_error_falls_back_and_names_both_causes(media):
    # The faststart copy cut in half has its index: decord gets past the header, then its packet
    # reading or decoding raises DECORDError, which is not a RuntimeError.
    import decord

    with pytest.raises(decord.DECORDError):
        reader = decord.VideoReader(str(media.cut_decode))
        reader.get_batch(list(range(len(reader))))
    with pytest.raises(VideoError, match=r"cannot decode video 'cut_decode.mp4'.*\(decord: "):
        read_frames(media.cut_decode, None, VideoConfig(num_frames=4))


def test_pyav_reads_what_decord_cannot(tmp_path):
    import av

    try:
        av.codec.Codec("libsvtav1", "w")
    except Exception:
        pytest.skip("this PyAV build has no AV1 encoder")
    av1 = write_mp4(tmp_path / "av1.mkv", frames=16, codec="libsvtav1")
    with pytest.raises(Exception):  # decord's bundled FFmpeg has no AV1 decoder
        decode_decord(av1, None, 4, BIG)
    frames = read_frames(av1, None, VideoConfig(num_frames=4))
    assert [frame_index(f) for f in frames] == [2, 6, 10, 14]


def test_preprocess_batch_shape(media, model):
    plugin = model.plugins["video"]
    prepared = plugin.preprocess([Item.of_file(media.clip, "video"), Item.of_file(media.mkv, "video")], model.runtime)
    size = model.plugins["image"].config.image_size
    assert prepared.ok == [0, 1] and not prepared.errors
    assert prepared.batch["frames"].shape == (2, plugin.config.num_frames, 3, size, size)
    red = prepared.batch["frames"][0, :, 0, size // 2, size // 2]
    assert torch.all(red[1:] > red[:-1])  # later frames are redder: time order is kept


def test_chunk_long_video_into_located_segments(media):
    plugin = VideoPlugin({"segment_seconds": 10.0})
    chunks = plugin.chunk(Item.of_file(media.long, "video"))
    assert [c.locator for c in chunks] == [Locator(t0=0.0, t1=10.0), Locator(t0=10.0, t1=20.0), Locator(t0=20.0, t1=25.0)]
    assert all(c.path == media.long and c.modality == "video" for c in chunks)
    short = Item.of_file(media.clip, "video")
    assert plugin.chunk(short) == [short]
    assert plugin.chunk(Item.of_file(media.half, "video")) == [Item.of_file(media.half, "video")]
    within = plugin.chunk(Item.of_file(media.long, "video", Locator(t0=5.0, t1=25.0)))
    assert [c.locator for c in within] == [Locator(t0=5.0, t1=15.0), Locator(t0=15.0, t1=25.0)]


def test_segment_bounds_merge_a_tiny_tail():
    assert segment_bounds(0.0, 20.04, 10.0) == [(0.0, 10.0), (10.0, 20.04)]
    assert segment_bounds(0.0, 4.0, 10.0) == [(0.0, 4.0)]


def test_probe_reads_duration_from_header(media):
    info = probe_video(media.long)
    assert info.duration == pytest.approx(25.0) and (info.width, info.height) == (64, 48)
    assert probe_video(media.mkv).duration == pytest.approx(3.0)  # Matroska: container duration


def test_encode_gives_unit_vectors_and_chunks_embed(media, model):
    plugin = model.plugins["video"]
    items = [Item.of_file(media.clip, "video"), media.slow] + plugin.chunk(Item.of_file(media.long, "video"))
    vectors = model.encode(items, role="document")
    assert vectors.shape == (5, model.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[2], vectors[3])  # different segments, different frames


def test_bad_files_are_reported_per_item(media, model):
    bad = {
        "half": media.half,
        "stub": media.stub,
        "cut_decode": media.cut_decode,
        "audio": media.audio,
        "empty": media.empty,
        "missing": media.missing,
    }
    items = [media.clip] + [Item.of_file(p, "video") for p in bad.values()]
    items.append(Item.of_file(media.clip, "video", Locator(t0=50.0, t1=60.0)))
    vectors, errors = model.encode(items, errors="ignore", return_errors=True)
    assert np.isfinite(vectors[0]).all() and np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(vectors[1:]).all()
    causes = {e.index: e.cause for e in errors}
    assert sorted(causes) == list(range(1, len(items)))
    for i, name in enumerate(bad, start=1):
        assert "cannot decode video" in causes[i] and name in causes[i]
    assert "no video stream" in causes[4]
    assert "empty (0 bytes)" in causes[5]
    assert "no such file" in causes[6]
    assert "after the video ends" in causes[7]


def test_temporal_positions_make_frame_order_matter(media, model):
    prepared = model.prepare("video", [Item.of_file(media.clip, "video")])
    frames = prepared.batch["frames"]
    with torch.inference_mode():
        forward = model.forward_batch("video", {"frames": frames})
        backward = model.forward_batch("video", {"frames": frames.flip(1)})
    assert not torch.allclose(forward, backward)


def test_too_many_tokens_for_the_backbone_is_a_clear_error(tiny_model_factory, media):
    model = tiny_model_factory(modalities=["image", "video"], overrides={"video": {"num_frames": 64, "frame_token_grid": 4}})
    with pytest.raises(ValueError, match="exceed the backbone's max_length"):
        model.encode([Item.of_file(media.clip, "video")])


def test_save_load_gives_identical_embeddings(media, model, tmp_path):
    items = [Item.of_file(media.clip, "video"), Item.of_file(media.long, "video", Locator(t0=10.0, t1=20.0))]
    before = model.encode(items)
    model.save(tmp_path / "ckpt")
    loaded = OmniModel.load(tmp_path / "ckpt", device="cpu")
    assert loaded.plugins["video"].config == model.plugins["video"].config
    np.testing.assert_array_equal(loaded.encode(items), before)


def _decode(backend: str, path: Path, locator: Locator | None, num_frames: int):
    if backend == "decord":
        return decode_decord(path, locator, num_frames, BIG)
    return decode_pyav(path, locator, num_frames, BIG, max_decode_frames=5_000)
