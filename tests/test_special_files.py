"""Special files named to the CLI or the API: refused by kind, except a pipe, read once to the end; nothing hangs.

Real FIFOs (os.mkfifo), a real Unix socket (bound on a path), /dev/zero and a directory named x.png.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from omnisdk.cli import EXIT_ERROR, EXIT_ITEMS_FAILED, main
from omnisdk.errors import OmniError
from omnisdk.items import Item
from omnisdk.special_files import PipeSpool, SpecialFileError, read_pipe, special_kind

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs POSIX FIFOs and /dev/zero")


@pytest.fixture(scope="module")
def media(tmp_path_factory, tiny_model_factory):
    """A saved tiny model, a PNG, a WAV and a text, and the special files, in one folder."""
    import soundfile
    from PIL import Image

    root = tmp_path_factory.mktemp("special")
    model = tiny_model_factory(modalities=["text", "image", "audio"])
    model.save(root / "model")
    Image.new("RGB", (24, 24), (220, 30, 30)).save(root / "red.png")
    soundfile.write(root / "tone.wav", (0.3 * np.sin(np.arange(8000) * 0.05)).astype("float32"), 16000)
    (root / "x.png").mkdir()  # a directory where a file is expected
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(root / "sock.wav"))
    yield {"root": root, "model": model}
    sock.close()


def feed(fifo: Path, data: bytes, delay: float = 0.0) -> threading.Thread:
    """Write `data` into a FIFO from a thread, as another process would (open blocks until a reader comes)."""

    def write() -> None:
        time.sleep(delay)
        try:
            with open(fifo, "wb") as fh:
                fh.write(data)
        except BrokenPipeError:  # the reader stopped early (a size cap): what a real writer would see
            pass

    thread = threading.Thread(target=write, daemon=True)  # daemon: a test that never reads must not hang pytest
    thread.start()
    return thread


def test_kinds_are_named(media, tmp_path):
    root = media["root"]
    os.mkfifo(tmp_path / "p")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert special_kind(root / "red.png") is None and special_kind(tmp_path / "missing") is None
    assert special_kind(root / "x.png") == "directory"
    assert special_kind(tmp_path / "p") == "pipe (FIFO)"
    assert special_kind(root / "sock.wav") == "socket"
    assert special_kind("/dev/zero") == "character device"
    assert special_kind(tmp_path / "loop") == "symlink loop"


def test_a_pipe_nobody_writes_fails_after_the_timeout_instead_of_hanging(tmp_path):
    os.mkfifo(tmp_path / "silent.wav")
    start = time.monotonic()
    with open(tmp_path / "out", "wb") as out, pytest.raises(SpecialFileError, match=r"nothing came through the pipe for 0\.5 s \(no writer opened it\)"):
        read_pipe(tmp_path / "silent.wav", out, timeout_s=0.5)
    assert time.monotonic() - start < 5


def test_a_pipe_is_read_to_the_end_and_capped(tmp_path):
    os.mkfifo(tmp_path / "p")
    data = os.urandom(300_000)  # more than one pipe buffer: the reader must loop until the writer closes
    feed(tmp_path / "p", data, delay=0.2)
    with open(tmp_path / "out", "wb") as out:
        assert read_pipe(tmp_path / "p", out, timeout_s=10) == len(data)
    assert (tmp_path / "out").read_bytes() == data
    feed(tmp_path / "p", data)
    with open(tmp_path / "out2", "wb") as out, pytest.raises(SpecialFileError, match=r"over 100,000 bytes, the limit"):
        read_pipe(tmp_path / "p", out, max_bytes=100_000, timeout_s=10)


def test_spool_names_the_pipe_and_detects_its_content(tmp_path):
    os.mkfifo(tmp_path / "63")
    feed(tmp_path / "63", b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    with PipeSpool() as spool:
        item = spool.resolve(Item.of_file(tmp_path / "63"))
        assert item.path.name == "63.png" and item.path.read_bytes()[:4] == b"\x89PNG"
        assert item.label() == str(tmp_path / "63") and item.meta["source"] == str(tmp_path / "63")
        spooled = item.path
    assert not spooled.exists()  # the spool's files go with it


def test_encode_refuses_special_paths_by_kind_and_embeds_a_pipe(media, tmp_path, monkeypatch):
    root, model = media["root"], media["model"]
    monkeypatch.setenv("OMNISDK_PIPE_TIMEOUT_S", "0.5")
    os.mkfifo(tmp_path / "fed.png")
    os.mkfifo(tmp_path / "silent.wav")
    feed(tmp_path / "fed.png", (root / "red.png").read_bytes())
    inputs = [root / "red.png", tmp_path / "fed.png", root / "x.png", root / "sock.wav", Path("/dev/zero"), tmp_path / "silent.wav"]
    start = time.monotonic()
    vectors, failures = model.encode(inputs, errors="ignore", return_errors=True)
    assert time.monotonic() - start < 30
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-6)  # the pipe's bytes, embedded as the file's
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)
    causes = {f.index: str(f) for f in failures}
    assert sorted(causes) == [2, 3, 4, 5] and np.isnan(vectors[2:]).all()
    assert "x.png" in causes[2] and "a directory, not a file" in causes[2]
    assert "sock.wav" in causes[3] and "a socket, not a regular file" in causes[3]
    assert "/dev/zero" in causes[4] and "a character device" in causes[4]
    assert "silent.wav" in causes[5] and "no writer opened it" in causes[5]


def test_cli_embed_reads_process_substitution_and_refuses_the_rest(media, tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash for <(...)")
    root = media["root"]
    os.mkfifo(tmp_path / "pipe.wav")  # nobody writes: the hang
    command = (f'"{sys.executable}" -m omnisdk embed --model "{root / "model"}" --json <(cat "{root / "tone.wav"}") '
               f'<(printf "a red square") "{tmp_path / "pipe.wav"}" "{root / "x.png"}" "{root / "sock.wav"}" /dev/zero "{root / "tone.wav"}"')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMNISDK_PIPE_TIMEOUT_S": "1"}
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == EXIT_ITEMS_FAILED, done.stderr[-2000:]
    rows = json.loads(done.stdout)["items"]
    assert rows[0]["input"].startswith("/dev/fd/") and rows[0]["modality"] == "audio"
    assert rows[1]["modality"] == "text" and "embedding" in rows[1]
    np.testing.assert_allclose(rows[0]["embedding"], rows[6]["embedding"], atol=1e-6)
    assert "no writer opened it" in rows[2]["error"] and "directory" in rows[3]["error"]
    assert "socket" in rows[4]["error"] and "character device" in rows[5]["error"]
    failed = [line for line in done.stderr.splitlines() if line.startswith("omnisdk: failed:")]
    assert len(failed) == 4 and f"failed: {tmp_path / 'pipe.wav'}: nothing came through" in done.stderr


def test_search_refuses_a_socket_and_reads_a_pipe(media, tmp_path, capsys):
    root = media["root"]
    store = tmp_path / "store"
    assert main(["index", str(root / "red.png"), "--model", str(root / "model"), "--collection", "c", "--store", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "--audio", str(root / "sock.wav"), "--collection", "c", "--store", str(store)]) == EXIT_ERROR
    assert f"{root / 'sock.wav'} is a socket, not a regular file" in capsys.readouterr().err
    os.mkfifo(tmp_path / "query")
    feed(tmp_path / "query", (root / "red.png").read_bytes())
    assert main(["search", "--image", str(tmp_path / "query"), "--collection", "c", "--store", str(store), "--json"]) == 0
    piped = json.loads(capsys.readouterr().out)
    assert piped["query"] == str(tmp_path / "query")
    assert main(["search", "--image", str(root / "red.png"), "--collection", "c", "--store", str(store), "--json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert piped["hits"][0]["source"].endswith("red.png") and piped["hits"] == direct["hits"]


def test_index_given_a_socket_or_device_as_root_indexes_nothing_and_returns(media, tmp_path, capsys):
    root = media["root"]
    code = main(["index", str(root / "sock.wav"), "/dev/zero", "--model", str(root / "model"), "--collection", "c",
                 "--store", str(tmp_path / "store"), "--json", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["indexed"] == 0 and report["points_total"] == 0, report


def test_a_directory_item_is_an_error_not_a_crash(media):
    with pytest.raises(OmniError, match=r"x\.png.*a directory, not a file"):
        media["model"].encode([media["root"] / "x.png"], errors="raise")
