"""What a decoder prints to stderr in the isolated child stays off the terminal and joins the job's error."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from omnisdk.isolation import IsolatedRunner, IsolationError, decoder_lines


def _noisy_failure(text: bytes) -> None:
    os.write(2, text)  # as C code does: fd 2, below Python's sys.stderr
    raise ValueError("cannot decode the file")


def _noisy_success() -> int:
    os.write(2, b"[h264 @ 0x55d0c0ffee00] co located POCs unavailable\n")
    return 7


def _noisy_crash() -> None:
    os.write(2, b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x5580d7eb2300] stream 0, offset 0x30: partial file\n")
    os.abort()


def test_child_stderr_goes_to_the_error_not_the_terminal(capfd):
    with IsolatedRunner(timeout_s=30) as runner:
        with pytest.raises(ValueError) as caught:
            runner.run(_noisy_failure, b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x5580d7eb2300] moov atom not found\n")
        assert str(caught.value) == "cannot decode the file [decoder log: moov atom not found]"
        assert runner.run(_noisy_success) == 7  # a good job's chatter is dropped (DEBUG log only)
        # the log is per job: the next failure does not repeat the earlier one's lines
        with pytest.raises(ValueError) as again:
            runner.run(_noisy_failure, b"[10:38:50] /src/video/video_reader.cc:83: ERROR opening: x.mp4, Invalid data\n")
        assert str(again.value).endswith("[decoder log: ERROR opening: x.mp4, Invalid data]")
        with pytest.raises(IsolationError, match=r"crashed \(killed by SIGABRT\) \[decoder log: stream 0, offset 0x30: partial file\]"):
            runner.run(_noisy_crash)
    err = capfd.readouterr().err
    assert "moov atom" not in err and "co located" not in err and "partial file" not in err and "ERROR opening" not in err


def test_real_ffmpeg_and_decord_messages_stay_off_the_terminal(tmp_path, capfd):
    pytest.importorskip("decord")
    from omnisdk.plugins.video import VideoConfig, VideoError, read_frames

    bad = tmp_path / "trunc.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")  # an MP4 header and no moov atom
    with IsolatedRunner(timeout_s=60) as runner:
        with pytest.raises(VideoError) as caught:
            runner.run(read_frames, Path(bad), None, VideoConfig())
    assert "moov atom not found" in str(caught.value) and "trunc.mp4" in str(caught.value)
    err = capfd.readouterr().err
    assert "moov atom" not in err and "ERROR opening" not in err


def test_decoder_lines_dedupe_strip_prefixes_and_skip_what_the_message_says():
    captured = "[mov @ 0x1] moov atom not found\n\n[mov @ 0x2] moov atom not found\nInvalid data\n" + "x" * 500 + "\n"
    assert decoder_lines(captured, "failed: Invalid data") == ["moov atom not found", "x" * 150 + "..."]
    assert decoder_lines("", "anything") == []
    assert decoder_lines("[src/libmpg123/parse.c:do_readahead():1083] warning: Cannot read next header\n") == [
        "warning: Cannot read next header"]


def test_in_process_decoder_chatter_is_captured_for_the_error(tmp_path, capfd):
    from omnisdk.isolation import captured_stderr

    with captured_stderr() as lines:
        os.write(2, b"[src/libmpg123/parse.c:do_readahead():1083] warning: Cannot read next header, a one-frame stream? Duh...\n")
    os.write(2, b"after\n")  # fd 2 is back
    assert lines == ["warning: Cannot read next header, a one-frame stream? Duh..."]
    err = capfd.readouterr().err
    assert "libmpg123" not in err and "after" in err


def test_audio_garbage_names_the_cause_without_leaking_mpg123(tmp_path, capfd, tiny_model_factory):
    import numpy as np

    bad = tmp_path / "garbage.wav"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))  # libsndfile tries MPEG on it, and mpg123 complains
    model = tiny_model_factory(modalities=["text", "audio"])
    _, failures = model.encode([bad], errors="ignore", return_errors=True, show_progress=False)
    assert "cannot decode garbage.wav as audio: no audio format recognised" in failures[0].cause
    assert "possibly a pipe" not in failures[0].cause
    assert "libmpg123" not in capfd.readouterr().err
