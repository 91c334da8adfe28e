"""Build the hostile-input corpus (issue 18): images, audio, text and special files that break naive readers.

`build(root)` writes every file (videos and PDFs come from hostile/video_pdf.py) under `root` and returns one `Case` per input. Nothing here is
committed as a binary: each file is made from a few lines of code, so a reader sees what it holds.
Large inputs are sparse (a header then `truncate`), so the corpus costs little disk and time.
"""
from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    path: Path
    what: str  # why it is hostile, for the summary table
    expect: str = "either"  # "vector", "error" or "either": what a correct reader must give


# -- helpers -----------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR claims `width` x `height` (8-bit RGB) with little or no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real 1-bit decompression bomb: `side` x `side` black pixels, zlib-compressed to a few KB."""
    row = b"\0" + b"\0" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def gif_bomb(width: int, height: int) -> bytes:
    """A GIF whose screen and single frame claim `width` x `height` with a one-code image body."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;"
    return head + frame


def wav_header(rate: int, channels: int, bits: int, data_bytes: int, fmt: int = 1) -> bytes:
    block = channels * bits // 8
    riff = min(36 + data_bytes, 0xFFFFFFFF)
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, fmt, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", min(data_bytes, 0xFFFFFFFF)))


def wav_float(samples: np.ndarray, rate: int) -> bytes:
    samples = np.asarray(samples, dtype="<f4")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    return wav_header(rate, channels, 32, samples.nbytes, fmt=3) + samples.tobytes()


def wav_pcm16(samples: np.ndarray, rate: int) -> bytes:
    ints = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    channels = 1 if ints.ndim == 1 else ints.shape[1]
    return wav_header(rate, channels, 16, ints.nbytes) + ints.tobytes()


def _image_bytes(image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


# -- the corpus --------------------------------------------------------------------------------------
def images(root: Path) -> list[Case]:
    from PIL import Image, features

    d = root / "image"
    d.mkdir(parents=True)
    good = _image_bytes(Image.new("RGB", (32, 24), (200, 40, 40)), "PNG")
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "green", "blue")]
    files: list[tuple[str, bytes | Callable[[Path], None], str, str]] = [
        ("good.png", good, "a plain RGB PNG (control)", "vector"),
        ("empty.png", b"", "zero bytes", "error"),
        ("truncated.png", good[: len(good) // 2], "cut in the middle of IDAT", "either"),
        ("header_only.png", good[:33], "signature and IHDR, nothing else", "error"),
        ("garbage.png", rng.bytes(2048), "random bytes named .png", "error"),
        ("text.png", b"this is not an image\n" * 20, "text named .png", "error"),
        ("png_named.jpg", good, "PNG bytes named .jpg", "vector"),
        ("jpeg_named.png", _image_bytes(noise, "JPEG"), "JPEG bytes named .png", "vector"),
        ("no_extension", good, "PNG with no extension", "vector"),
        ("bomb_header.png", png_header_only(100_000, 100_000), "IHDR claims 10^10 pixels", "error"),
        ("bomb_real.png", png_bomb(20_000), "1-bit 20000x20000 bomb (4e8 pixels, a few KB)", "error"),
        ("bomb.gif", gif_bomb(65_535, 65_535), "GIF claiming 65535x65535", "error"),
        ("wide.png", _image_bytes(Image.new("RGB", (100_000, 1), "white"), "PNG"), "1x100000", "either"),
        ("tall.png", _image_bytes(Image.new("L", (1, 100_000), 128), "PNG"), "100000x1 grayscale", "either"),
        ("one_pixel.png", _image_bytes(Image.new("RGB", (1, 1), "red"), "PNG"), "1x1", "vector"),
        ("cmyk.jpg", _image_bytes(Image.new("CMYK", (24, 24), (0, 200, 200, 0)), "JPEG"), "CMYK JPEG", "vector"),
        ("sixteen_bit.png", _image_bytes(Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)), "PNG"),
         "16-bit grayscale", "vector"),
        ("palette.png", _image_bytes(noise.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0),
         "palette with transparency", "vector"),
        ("rgba.png", _image_bytes(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "PNG"), "fully transparent RGBA", "vector"),
        ("animated.gif", _image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
         "animated GIF", "vector"),
        ("bad_crc.png", good[:-5] + b"XXXX" + good[-1:], "IEND CRC wrong", "either"),
        ("bmp_huge_claim.bmp", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 60_000, 60_000, 1, 24, 0, 0, 0, 0, 0, 0),
         "BMP header claiming 60000x60000, no pixels", "error"),
    ]
    if features.check("webp"):
        files.append(("animated.webp", _image_bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100),
                      "animated WebP", "vector"))
    return _write(d, files)


def audio(root: Path) -> list[Case]:
    d = root / "audio"
    d.mkdir(parents=True)
    t = np.arange(16_000) / 16_000
    tone = 0.4 * np.sin(2 * np.pi * 440 * t)
    good = wav_pcm16(tone, 16_000)
    files: list[tuple[str, bytes | Callable[[Path], None], str, str]] = [
        ("good.wav", good, "1 s 16-bit tone (control)", "vector"),
        ("empty.wav", b"", "zero bytes", "error"),
        ("header_only.wav", good[:44], "a header and no samples", "error"),
        ("truncated.wav", good[: len(good) // 3], "header promises 1 s, a third is there", "either"),
        ("huge_header.wav", wav_header(16_000, 1, 16, 0xFFFFFFF0) + good[44:4044], "header claims 4 GB", "either"),
        ("nan.wav", wav_float(np.full(16_000, np.nan), 16_000), "float samples all NaN", "either"),
        ("inf.wav", wav_float(np.where(np.arange(16_000) % 2, np.inf, -np.inf), 16_000), "float samples +-Inf", "either"),
        ("one_sample.wav", wav_pcm16(np.array([0.5]), 16_000), "a single sample", "either"),
        ("eight_channels.wav", wav_pcm16(np.tile(tone[:, None], (1, 8)), 16_000), "8 channels", "vector"),
        ("rate_384k.wav", wav_pcm16(0.3 * np.sin(np.arange(384_000) * 0.01), 384_000), "384 kHz", "vector"),
        ("rate_1hz.wav", wav_pcm16(np.zeros(4), 1), "1 Hz sample rate", "either"),
        ("silence_6h.wav", _sparse_wav(8_000, 6 * 3600), "6 hours of silence (sparse file)", "error"),
        ("loud_clipped.wav", wav_float(np.full(16_000, 1e30), 16_000), "float samples at 1e30", "either"),
        ("garbage.wav", np.random.default_rng(1).bytes(4096), "random bytes named .wav", "error"),
        ("png_named.wav", png_header_only(8, 8), "PNG bytes named .wav", "error"),
        ("wav_named.flac", good, "WAV bytes named .flac", "either"),
        ("wav_no_extension", good, "WAV with no extension", "vector"),
        ("text.ogg", b"OggS is not enough" * 10, "Ogg magic then text", "error"),
    ]
    return _write(d, files)


def _sparse_wav(rate: int, seconds: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = rate * seconds * 2
        with open(path, "wb") as fh:
            fh.write(wav_header(rate, 1, 16, data))
            fh.truncate(44 + data)  # zeros read back as silence; the file takes no disk

    return make


def texts(root: Path) -> list[Case]:
    d = root / "text"
    d.mkdir(parents=True)

    def long_line(path: Path) -> None:
        with open(path, "wb") as fh:
            block = b"a" * (1 << 20)
            for _ in range(50):
                fh.write(block)

    files: list[tuple[str, bytes | Callable[[Path], None], str, str]] = [
        ("good.txt", b"a red circle on the left\n", "plain UTF-8 (control)", "vector"),
        ("empty.txt", b"", "zero bytes", "either"),
        ("invalid_utf8.txt", b"caf\xe9 \xff\xfe broken \xc3", "invalid UTF-8", "either"),
        ("utf16.txt", "a red circle".encode("utf-16"), "UTF-16 with BOM", "either"),
        ("nul_bytes.txt", b"a\0b\0c" * 100, "NUL bytes", "either"),
        # The text plugin reads files up to its max_file_mb (64): one vector of the first tokens, or a refusal.
        ("line_50mb.txt", long_line, "one 50 MB line", "either"),
        ("one_word_1mb.md", b"x" * (1 << 20), "a 1 MB word", "either"),
        ("controls.txt", "\u202eevil\u200b\u200d\ufeff \U0001F600\U0001F525 \x1b[31mred\x1b[0m".encode(), "bidi, zero-width, emoji, ANSI", "vector"),
        ("png_named.txt", png_header_only(4, 4), "PNG bytes named .txt", "either"),
    ]
    cases = _write(d, files)
    names = [("new\nline.txt", "a name with a newline"), ("emoji \U0001F600.txt", "a name with emoji")]
    for name, what in names:
        (d / name).write_bytes(b"a file with an odd name\n")
        cases.append(Case(d / name, what, "vector"))
    try:
        raw = os.fsencode(d) + b"/bad\xff\xfename.txt"  # not valid UTF-8: Python holds it with surrogates
        with open(raw, "wb") as fh:
            fh.write(b"a name in no encoding\n")
        cases.append(Case(Path(os.fsdecode(raw)), "a name that is not valid UTF-8", "vector"))
    except OSError:  # a filesystem that insists on UTF-8 names
        pass
    return cases


def specials(root: Path) -> list[Case]:
    """A FIFO nobody writes, a socket, a device, a symlink loop, a dangling link, a directory named x.png."""
    d = root / "special"
    d.mkdir(parents=True)
    cases = [Case(d / "x.png", "a directory named x.png", "error")]
    (d / "x.png").mkdir()
    os.mkfifo(d / "fifo.wav")
    cases.append(Case(d / "fifo.wav", "a FIFO nobody writes to", "error"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(d / "socket.png"))
    sock.close()  # the socket file stays; nothing listens
    cases.append(Case(d / "socket.png", "a Unix socket", "error"))
    (d / "zero.txt").symlink_to("/dev/zero")
    cases.append(Case(d / "zero.txt", "a link to /dev/zero (character device)", "error"))
    (d / "loop.png").symlink_to(d / "loop.png")
    cases.append(Case(d / "loop.png", "a symlink loop", "error"))
    (d / "dangling.wav").symlink_to(d / "nowhere.wav")
    cases.append(Case(d / "dangling.wav", "a dangling symlink", "error"))
    unreadable = d / "unreadable.png"
    unreadable.write_bytes(b"\x89PNG\r\n\x1a\n")
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway: only a real user's run can test this one
        cases.append(Case(unreadable, "a file without read permission", "error"))
    return cases


def build(root: Path) -> list[Case]:
    """Write the whole corpus under `root` (which must not exist yet); one Case per input."""
    from hostile.video_pdf import pdfs, videos  # that module builds on this one's helpers

    root.mkdir(parents=True)
    return images(root) + audio(root) + videos(root) + pdfs(root) + texts(root) + specials(root)


def _write(folder: Path, files) -> list[Case]:
    cases = []
    for name, content, what, expect in files:
        path = folder / name
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        cases.append(Case(path, what, expect))
    return cases
