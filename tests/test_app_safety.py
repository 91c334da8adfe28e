"""The search app: card rendering, the path guard, and real HTTP requests that try to read files outside the roots."""
from __future__ import annotations

import http.client
import os
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("gradio")
pytest.importorskip("qdrant_client")

from app_support import open_app_backend, write_png  # noqa: E402
from media.audio import write_wav  # noqa: E402
from media.pdf import write_pdf  # noqa: E402
from media.video import write_mp4  # noqa: E402

from omnisdk.apps.backend import Hit  # noqa: E402
from omnisdk.apps.cards import locator_text, preview_kind, render_card, render_cards  # noqa: E402
from omnisdk.apps.guard import PathGuard, PathRefused  # noqa: E402
from omnisdk.errors import OmniError  # noqa: E402
from omnisdk.items import Locator  # noqa: E402

SECRET = "omnisdk-test-secret-7f3a9c"  # what no response may ever contain


# -- cards ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("locator", "has_file", "text"),
    [
        (Locator(page=3), True, "page 3"),
        (Locator(t0=10.0, t1=20.0), True, "10.0–20.0 s"),
        (Locator(t0=2.5), True, "from 2.5 s"),
        (None, True, "whole file"),
        (None, False, ""),
    ],
)
def test_locator_text(locator, has_file, text):
    assert locator_text(locator, has_file) == text


@pytest.mark.parametrize(
    ("modality", "source", "text", "kind"),
    [
        ("image", "/data/a.png", None, "image"),
        ("video", "/data/a.mp4", None, "video"),
        ("document", "/data/a.pdf", None, "document"),
        ("audio", "/data/a.wav", None, "audio"),
        ("text", None, "a note", "text"),
        ("sketch", "/data/a.webp", None, "image"),  # a third-party modality: by the file's suffix
        ("sketch", "/data/a.xyz", None, "none"),
        ("heatmap", "/data/a.csv", None, "picture"),  # its plugin draws previews (in `pictured` below)
        ("heatmap", None, "a note", "text"),
    ],
)
def test_preview_kind(modality, source, text, kind):
    hit = Hit(1, 0.5, modality, Path(source) if source else None, None, text)
    assert preview_kind(hit, pictured={"heatmap"}) == kind


def test_cards_preview_each_modality_through_the_guarded_routes():
    image = render_card(Hit(1, 0.91234, "image", Path("/data/pics/cat 1.png")))
    assert '<img loading="lazy" src="/omnisdk/preview?path=%2Fdata%2Fpics%2Fcat%201.png"' in image
    assert "0.912" in image and "whole file" in image and 'data-modality="image"' in image

    video = render_card(Hit(2, 0.5, "video", Path("/v/clip.mp4"), Locator(t0=10.0, t1=20.0)))
    assert 'poster="/omnisdk/preview?path=%2Fv%2Fclip.mp4&amp;t=15.000"' in video  # the span's middle frame
    assert 'src="/omnisdk/media?path=%2Fv%2Fclip.mp4#t=10,20"' in video and "<video controls" in video
    assert "10.0–20.0 s" in video

    pdf = render_card(Hit(3, 0.4, "document", Path("/d/report.pdf"), Locator(page=4)))
    assert 'src="/omnisdk/preview?path=%2Fd%2Freport.pdf&amp;page=4"' in pdf
    assert 'href="/omnisdk/media?path=%2Fd%2Freport.pdf#page=4"' in pdf and "page 4" in pdf

    audio = render_card(Hit(4, -0.25, "audio", Path("/a/talk.wav"), Locator(t0=0.0, t1=10.0)))
    assert '<audio controls preload="none" src="/omnisdk/media?path=%2Fa%2Ftalk.wav#t=0,10"' in audio
    assert "-0.250" in audio and "0.0–10.0 s" in audio

    heat = render_card(Hit(6, 0.2, "heatmap", Path("/h/series.csv"), Locator(t0=512.0, t1=1024.0)), {"heatmap"})
    assert 'src="/omnisdk/preview?path=%2Fh%2Fseries.csv&amp;modality=heatmap&amp;t0=512.000&amp;t1=1024.000"' in heat
    assert 'data-kind="picture"' in heat
    assert 'data-kind="none"' in render_card(Hit(6, 0.2, "heatmap", Path("/h/series.csv")))  # no plugin picture

    text = render_card(Hit(5, 0.3, "text", None, None, "x" * 400))
    assert "omni-snippet" in text and "…" in text and "whole file" not in text


def test_card_escapes_what_comes_from_files():
    hit = Hit(1, 0.5, "image", Path('/d/<script>alert(1)</script>"${window.x}.png'), None, None)
    card = render_card(hit)
    assert "<script>" not in card and "${" not in card and '"${' not in card
    assert "&lt;script&gt;" in card
    assert render_cards([], "No <b>results</b>") == '<div class="omni-empty">No &lt;b&gt;results&lt;/b&gt;</div>'


# -- the path guard --------------------------------------------------------------------------------------
@pytest.fixture()
def tree(tmp_path):
    """root/ with media, a hidden file, a non-media file and symlinks out; secret.png outside it."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    write_png(root / "a.png", (200, 30, 30))
    write_png(root / "sub" / "b.png", (30, 200, 30))
    (root / ".hidden").mkdir()
    write_png(root / ".hidden" / "c.png", (30, 30, 200))
    (root / "notes.html").write_text(f"<p>{SECRET}</p>")
    secret = tmp_path / "secret.png"
    secret.write_text(SECRET)
    (root / "link.png").symlink_to(secret)
    (root / "linkdir").symlink_to(tmp_path)
    (root / "inside.png").symlink_to(root / "a.png")
    return root, secret


def test_guard_serves_media_files_inside_the_roots(tree):
    root, _ = tree
    guard = PathGuard([root])
    assert guard.check(str(root / "a.png")) == (root / "a.png").resolve()
    assert guard.check(root / "sub" / "b.png") == (root / "sub" / "b.png").resolve()
    assert guard.check(str(root / "sub" / ".." / "a.png")) == (root / "a.png").resolve()  # stays inside
    assert guard.check(str(root / "inside.png")) == (root / "a.png").resolve()  # a link that stays inside


@pytest.mark.parametrize(
    "raw",
    [
        "/etc/passwd",
        "{root}/../secret.png",
        "{root}/sub/../../secret.png",
        "{root}/link.png",  # a symlink inside the root pointing out
        "{root}/linkdir/secret.png",  # through a symlinked folder
        "{root}/.hidden/c.png",
        "{root}/notes.html",  # not a media kind
        "{root}/sub",  # a folder
        "{root}/missing.png",
        "a.png",  # relative
        "",
        "{root}/a.png\x00.txt",
        "{root}/%2e%2e/secret.png",  # percent-escapes are not decoded again by the guard
    ],
)
def test_guard_refuses(tree, raw):
    root, _ = tree
    with pytest.raises(PathRefused):
        PathGuard([root]).check(raw.format(root=root))


def test_guard_without_the_media_rule_still_refuses_hidden_and_outside_files(tree):
    root, secret = tree
    guard = PathGuard([root])
    assert guard.check(str(root / "notes.html"), media=False) == (root / "notes.html").resolve()  # for previews
    for raw in (str(root / ".hidden" / "c.png"), str(secret), str(root / "link.png"), str(root / "sub")):
        with pytest.raises(PathRefused):
            guard.check(raw, media=False)


def test_guard_refuses_the_filesystem_root_as_a_root(tmp_path):
    with pytest.raises(OmniError, match="filesystem root"):
        PathGuard(["/"])
    guard = PathGuard([tmp_path / "missing", tmp_path])  # a missing root is dropped, not fatal
    assert guard.roots == (tmp_path.resolve(),)


def test_warns_loudly_when_binding_all_interfaces(capsys):
    from omnisdk.apps.server import warn_about_host

    warn_about_host("127.0.0.1")
    assert capsys.readouterr().err == ""
    warn_about_host("0.0.0.0")
    err = capsys.readouterr().err
    assert "WARNING" in err and "0.0.0.0" in err and "no" in err and "login" in err


def test_no_share_link_anywhere():
    apps = Path(__file__).resolve().parents[1] / "apps"
    for source in apps.glob("*.py"):
        assert "share=True" not in source.read_text(), source


def test_keep_uploads_copies_renames_and_refuses(tmp_path):
    from omnisdk.apps.ui import keep_uploads

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_png(tmp_path / "a" / "pic.png", (1, 2, 3))
    same = write_png(tmp_path / "b" / "pic.png", (1, 2, 3))
    (tmp_path / "a" / "tool.exe").write_bytes(b"MZ")
    folder = tmp_path / "kept"
    kept, refused = keep_uploads([first, same, tmp_path / "a" / "tool.exe"], folder, [".png"])
    assert kept == [folder / "pic.png", folder / "pic.png"]  # the same content is kept once
    assert refused[0][0] == "tool.exe" and ".png" in refused[0][1]
    other = write_png(tmp_path / "b" / "pic.png", (7, 7, 7))  # same name, other content: kept beside
    kept, _ = keep_uploads([other], folder, [".png"])
    assert kept[0].name.startswith("pic-") and kept[0].read_bytes() == other.read_bytes()
    assert (folder / "pic.png").read_bytes() == first.read_bytes()


# -- the running app, over real HTTP ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_factory):
    """The app on a free localhost port over a real (in-memory Qdrant) collection of real files."""
    from omnisdk.apps.server import AppSettings, BackgroundServer

    base = tmp_path_factory.mktemp("served")
    root = base / "library"
    root.mkdir()
    write_png(root / "red.png", (220, 30, 30))
    write_wav(root / "beep.wav")
    write_pdf(root / "report.pdf")
    write_mp4(root / "clip.mp4", frames=24, fps=8)
    (root / "notes.html").write_text(f"<p>{SECRET}</p>")
    (root / ".env").write_text(f"TOKEN={SECRET}")
    secret = base / "secret.png"
    secret.write_text(SECRET)
    (root / "escape.png").symlink_to(secret)
    backend = open_app_backend(tiny_model_factory(["text", "image", "audio", "document", "video"]), [root])
    settings = AppSettings(port=0, max_upload_mb=0.05, upload_dir=base / "uploads", preview_cache=base / "previews")
    with BackgroundServer(backend, settings) as url:
        yield url, root, secret, backend
    backend.close()


def get(url: str, target: str) -> tuple[int, bytes]:
    """GET the request-target exactly as given: no client-side normalisation of `..` or escapes."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_served_files_inside_the_roots(served):
    url, root, _, _ = served
    status, body = get(url, "/omnisdk/media?path=" + quote(str(root / "red.png"), safe=""))
    assert status == 200 and body == (root / "red.png").read_bytes()
    status, body = get(url, "/omnisdk/preview?path=" + quote(str(root / "report.pdf"), safe="") + "&page=2")
    assert status == 200 and body.startswith(b"\x89PNG")
    status, body = get(url, "/omnisdk/preview?path=" + quote(str(root / "clip.mp4"), safe="") + "&t=1.5")
    assert status == 200 and body.startswith(b"\x89PNG")
    status, body = get(url, "/gradio_api/file=" + str(root / "red.png"))  # Gradio's own route, allowed_paths
    assert status == 200 and body == (root / "red.png").read_bytes()
    for bad in ("&page=0", "&page=99", "&t=-1", "&t=nan"):  # out of range: refused, not a server error
        status, _ = get(url, "/omnisdk/preview?path=" + quote(str(root / "report.pdf"), safe="") + bad)
        assert status == 404, bad


def test_store_backend_maps_hits_and_roots(served):
    from omnisdk.items import Item

    _, root, _, backend = served
    assert backend.indexed_roots() == [root.resolve()]
    assert set(backend.modalities()) == {"text", "image", "audio", "document", "video"}
    hits = backend.search(Item.of_text("solar energy report"), 20, ["document"])
    assert [h.rank for h in hits] == [1, 2, 3] and {h.modality for h in hits} == {"document"}
    assert sorted(h.locator.page for h in hits) == [1, 2, 3]
    assert all(h.source == (root / "report.pdf").resolve() for h in hits)
    assert hits[0].score >= hits[1].score >= hits[2].score
    everything = backend.search(Item.of_file(root / "red.png"), 50, None)
    # notes.html is indexed as text (its passage in the payload), yet never served as a file (see the attacks)
    assert {h.modality for h in everything} == {"image", "audio", "document", "video", "text"}
    (text_hit,) = [h for h in everything if h.modality == "text"]
    assert text_hit.locator.line0 == 1 and text_hit.text == SECRET
    again = backend.index_files([root])  # unchanged files are skipped, nothing embedded again
    assert again.files == 0 and again.chunks == 0 and again.skipped >= 5 and not again.failed


def _attacks(root: Path, secret: Path) -> list[str]:
    up = str(root) + "/../" + secret.name
    targets = [
        "/etc/passwd", str(secret), up, str(root / "escape.png"), str(root / "notes.html"), str(root / ".env"),
        str(root) + "/%2e%2e/" + secret.name, "../../../../../../etc/passwd",
    ]
    attacks = []
    for target in targets:
        attacks += [
            "/omnisdk/media?path=" + quote(target, safe=""),
            "/omnisdk/media?path=" + quote(quote(target, safe=""), safe=""),  # double-encoded
            "/omnisdk/preview?path=" + quote(target, safe=""),
            "/gradio_api/file=" + target,
            "/gradio_api/file=" + quote(target, safe="/"),
            "/gradio_api/file=" + quote(target, safe=""),  # %2F for every slash
            "/gradio_api/file/" + target.lstrip("/"),
            "/file=" + target,
        ]
    attacks += [
        "/gradio_api/file=" + str(root) + "/..%2f" + secret.name,
        "/gradio_api/file=" + str(root) + "/%2e%2e%2f" + secret.name,
        "/gradio_api/file=" + str(root) + "/%252e%252e/" + secret.name,
        "/gradio_api/file=http://127.0.0.1:1/x.png",  # no fetching of URLs for a caller
        "/static/../../../../etc/passwd",
        "/assets/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/omnisdk/media/../../etc/passwd",
    ]
    return attacks


def test_nothing_outside_the_roots_is_served(served):
    url, root, secret, _ = served
    passwd = Path("/etc/passwd").read_bytes()[:20]
    for target in _attacks(root, secret):
        status, body = get(url, target)
        assert SECRET.encode() not in body, target
        assert not (passwd and passwd in body), target
        assert status != 200 or body.lstrip().startswith(b"<!doctype html>"), (target, status)  # the SPA shell at most


def test_uploads_over_the_size_cap_are_refused(served):
    url, *_ = served
    host, port = url.removeprefix("http://").split(":")
    boundary = "omnisdkboundary"
    payload = b"x" * 100_000  # over the 0.05 MB cap
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/gradio_api/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    response = conn.getresponse()
    text = response.read().decode(errors="replace")
    conn.close()
    assert response.status == 413, (response.status, text)
    assert "exceeded" in text


def test_upload_folder_inside_the_store_is_refused(tmp_path, tiny_model_factory):
    from omnisdk.apps.server import AppContext, AppSettings

    class Empty:
        def indexed_roots(self):
            return []

    store = tmp_path / "store"
    settings = AppSettings(upload_dir=store / "uploads", private_dirs=[store], preview_cache=tmp_path / "p")
    with pytest.raises(OmniError, match="inside the store"):
        AppContext(Empty(), settings)
