"""Hostile videos and PDFs for the corpus (issue 18), each made in a few lines, in milliseconds.

Videos are written with PyAV (tiny frames, a second or two); PDFs by hand (`raw_pdf` computes a
correct cross-reference table, so MuPDF opens them without "repairing" anything) or with PyMuPDF
where it is the simpler tool (encryption).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from hostile.corpus import Case, _write, png_header_only


# -- video -------------------------------------------------------------------------------------------
def _frames(count: int, side: int = 32):
    import av

    for i in range(count):
        pixels = np.zeros((side, side, 3), dtype=np.uint8)
        pixels[:, : (i * 7) % side + 1] = (220, 40, 40)  # a bar that grows: frames differ
        yield av.VideoFrame.from_ndarray(pixels, format="rgb24")


def mp4(path: Path, pts_ms: list[int] | None = None, audio: bool = False, video: bool = True) -> bytes:
    """An MP4 (moov at the end) with one video frame per entry of `pts_ms` and/or one second of AAC."""
    import av

    path.unlink(missing_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        if video:
            stream = out.add_stream("mpeg4", rate=25)
            stream.width = stream.height = 32
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, 1000)
            for pts, frame in zip(pts_ms or [], _frames(len(pts_ms or []))):
                frame = frame.reformat(format="yuv420p")
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
            if not pts_ms:
                out.start_encoding()  # a header with no frames (PyAV writes nothing until something is muxed)
        if audio:
            sound = out.add_stream("aac", rate=16_000, layout="mono")
            tone = (0.3 * np.sin(np.arange(16_000) * 0.2)).astype(np.float32)[None, :]
            for start in range(0, 16_000, 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 16_000, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path.read_bytes()


def videos(root: Path) -> list[Case]:
    d = root / "video"
    d.mkdir(parents=True)
    scratch = d / ".scratch.mp4"
    good = mp4(scratch, pts_ms=[i * 40 for i in range(25)])
    vfr = mp4(scratch, pts_ms=[0, 5, 10, 400, 405, 1500, 1510, 3000])
    one = mp4(scratch, pts_ms=[0])
    none = mp4(scratch, pts_ms=[])
    sparse = mp4(scratch, pts_ms=[0, 10 * 3600 * 1000])  # two frames ten hours apart
    audio_only = mp4(scratch, audio=True, video=False)
    scratch.unlink()
    moov = good.rfind(b"moov")
    files = [
        ("good.mp4", good, "1 s, 25 frames, 32x32 MPEG-4 (control)", "vector"),
        ("vfr.mp4", vfr, "variable frame rate: gaps of 5 ms to 1.5 s", "vector"),
        ("one_frame.mp4", one, "a single frame: zero duration", "either"),
        ("no_frames.mp4", none, "a video stream with no frames", "error"),
        ("sparse_10h.mp4", sparse, "two frames ten hours apart", "either"),
        ("audio_only.mp4", audio_only, "an MP4 with an AAC track and no video", "error"),
        ("corrupt_moov.mp4", good[:moov] + b"xxxx" + good[moov + 4:], "the moov atom renamed", "error"),
        ("truncated.mp4", good[: len(good) * 2 // 3], "cut before the moov atom", "error"),
        ("tail_only.mp4", good[len(good) // 2:], "the second half only", "error"),
        ("empty.mp4", b"", "zero bytes", "error"),
        ("garbage.mp4", np.random.default_rng(2).bytes(4096), "random bytes named .mp4", "error"),
        ("png_named.mp4", png_header_only(8, 8), "PNG bytes named .mp4", "error"),
        ("mp4_named.avi", good, "MP4 bytes named .avi", "vector"),
    ]
    return _write(d, files)


# -- PDF ---------------------------------------------------------------------------------------------
def raw_pdf(objects: list[bytes], root: int = 1) -> bytes:
    """A PDF of these object bodies (numbered from 1) with a correct xref table and trailer."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, root, xref)
    return bytes(out)


_TEXT = b"BT /F1 14 Tf 20 100 Td (a red circle on the left) Tj ET"
_CONTENT = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(_TEXT), _TEXT)
_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _page(parent: int, extra: bytes = b"", box: bytes = b"[0 0 200 200]") -> bytes:
    return b"<< /Type /Page /Parent %d 0 R /MediaBox %s /Contents 3 0 R /Resources << /Font << /F1 4 0 R >> >> %s>>" % (parent, box, extra)


def pdf_pages(count: int, box: bytes = b"[0 0 200 200]", catalog_extra: bytes = b"", page_extra: bytes = b"",
              claimed: int | None = None) -> bytes:
    """`count` pages sharing one content stream: 10,000 pages take about a megabyte and 20 ms."""
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(count))
    objects = [b"<< /Type /Catalog /Pages 2 0 R %s>>" % catalog_extra,
               b"<< /Type /Pages /Count %d /Kids [%s] >>" % (claimed or count, kids), _CONTENT, _FONT]
    return raw_pdf(objects + [_page(2, page_extra, box)] * count)


def pdf_cyclic() -> bytes:
    """A page tree whose node lists itself among its kids, and an object that is a reference to itself."""
    return raw_pdf([b"<< /Type /Catalog /Pages 2 0 R /Loop 6 0 R >>",
                    b"<< /Type /Pages /Count 2 /Kids [2 0 R 5 0 R] /Parent 2 0 R >>", _CONTENT, _FONT,
                    _page(2), b"6 0 R"])


def pdf_deep(depth: int) -> bytes:
    """A page tree `depth` levels deep with one page at the bottom (recursive readers overflow)."""
    objects = [b"<< /Type /Catalog /Pages 5 0 R >>", b"null", _CONTENT, _FONT]
    for level in range(depth):
        number = 5 + level
        parent = b"/Parent %d 0 R " % (number - 1) if level else b""
        objects.append(b"<< /Type /Pages /Count 1 /Kids [%d 0 R] %s>>" % (number + 1, parent))
    objects.append(_page(5 + depth - 1))
    return raw_pdf(objects)


def pdf_encrypted(path: Path, user_password: str) -> bytes:
    import pymupdf

    doc = pymupdf.open("pdf", pdf_pages(1))
    doc.save(str(path), encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", user_pw=user_password)
    doc.close()
    return path.read_bytes()


_JS = (b"/OpenAction << /S /JavaScript /JS (app.alert\\('hi'\\); while\\(true\\){}) >> "
       b"/Names << /JavaScript << /Names [(x) << /S /JavaScript /JS (this.exportDataObject\\({cName: 'a'}\\)) >>] >> >> ")


def pdfs(root: Path) -> list[Case]:
    d = root / "pdf"
    d.mkdir(parents=True)
    good = pdf_pages(1)
    scratch = d / ".scratch.pdf"
    locked, owner_only = pdf_encrypted(scratch, "secret"), pdf_encrypted(scratch, "")
    scratch.unlink()
    files = [
        ("good.pdf", good, "one page of text (control)", "vector"),
        ("pages_10000.pdf", pdf_pages(10_000), "10,000 pages", "error"),
        ("cyclic.pdf", pdf_cyclic(), "a page tree that is its own kid; an object referring to itself", "either"),
        ("deep_tree.pdf", pdf_deep(3_000), "a page tree 3,000 levels deep", "either"),
        ("encrypted.pdf", locked, "AES-256 with a user password", "error"),
        ("owner_password.pdf", owner_only, "encrypted with an owner password only (opens)", "vector"),
        ("javascript.pdf", pdf_pages(1, catalog_extra=_JS, page_extra=b"/AA << /O << /S /JavaScript /JS (app.alert\\(1\\)) >> >> "),
         "JavaScript on open (an endless loop) and on page open", "vector"),
        ("huge_page.pdf", pdf_pages(1, box=b"[0 0 14400 14400]"), "a 200 x 200 inch page", "vector"),
        ("zero_page.pdf", pdf_pages(1, box=b"[0 0 0 0]"), "a page with an empty MediaBox", "either"),
        ("count_lies.pdf", pdf_pages(1, claimed=999_999_999), "page count claims 10^9", "either"),
        ("truncated.pdf", good[: len(good) // 2], "cut in half (no xref)", "error"),
        ("empty.pdf", b"", "zero bytes", "error"),
        ("garbage.pdf", np.random.default_rng(3).bytes(4096), "random bytes named .pdf", "error"),
        ("text.pdf", b"%PDF-1.7 and then only text\n" * 20, "a PDF signature then text", "error"),
        ("pdf_named.png", good, "PDF bytes named .png", "either"),
    ]
    return _write(d, files)
