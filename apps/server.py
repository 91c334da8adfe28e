"""The search app's web server: Gradio UI mounted on a FastAPI app with two guarded file routes.

Safe by default: it binds 127.0.0.1; uploads have a size cap; it serves files only from the
indexed roots (symlinks resolved, media kinds only) through `/omnisdk/media` and
`/omnisdk/preview`, and a middleware holds Gradio's own `/gradio_api/file=` route to the same rule
(plus Gradio's upload folder, which the upload widgets need). There is no share link, no run
history, no monitoring page and no MCP server.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, Field

from omnisdk.apps.backend import SearchBackend
from omnisdk.apps.guard import PathGuard, PathRefused, media_type
from omnisdk.apps.previews import PreviewCache
from omnisdk.errors import OmniError
from omnisdk.items import Locator

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
ALL_INTERFACES = {"0.0.0.0", "::", ""}
_GRADIO_FILE = re.compile(r"^(?:/gradio_api)?/file(?:=|/)(?P<target>.*)$", re.DOTALL)
_PROTOCOL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"}


class AppSettings(BaseModel):
    """How the app is served; the defaults are the safe ones."""

    collection: str = "default"
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=0, le=65535)
    max_upload_mb: float = Field(200.0, gt=0)
    #: where files added in the Index tab are kept (Gradio's upload folder is temporary); served as a root.
    upload_dir: Path | None = None
    #: directories never served even when inside a root (the store itself, say).
    private_dirs: list[Path] = Field(default_factory=list)
    preview_cache: Path | None = None
    default_limit: int = Field(12, ge=1, le=100)


class AppContext:
    """What the request handlers share: the backend, the path guard, the preview cache."""

    def __init__(self, backend: SearchBackend, settings: AppSettings):
        self.backend = backend
        self.settings = settings
        self.private = [p.expanduser().resolve() for p in settings.private_dirs]
        self.upload_dir = settings.upload_dir.expanduser().resolve() if settings.upload_dir else None
        if self.upload_dir is not None:
            if self._private(self.upload_dir):
                raise OmniError(f"the upload folder {self.upload_dir} lies inside the store, whose files are never "
                                "indexed or served: choose another --upload-dir")
            self.upload_dir.mkdir(parents=True, exist_ok=True)
        # The model's plugins draw the previews; a backend without a model (tests) gets none.
        model = getattr(backend, "model", None)
        self.previews = PreviewCache(settings.preview_cache, plugins=getattr(model, "plugins", None))
        self.private.append(self.previews.cache_dir.resolve())
        self.guard = PathGuard()
        self.allowed_paths: list[str] = []  # the list object Gradio reads on every file request
        self.refresh_roots()

    def refresh_roots(self) -> None:
        """Re-read the backend's roots (after indexing) into the guard and Gradio's allowed_paths."""
        roots = list(self.backend.indexed_roots())
        if self.upload_dir is not None:
            roots.append(self.upload_dir)
        self.guard.set_roots(roots)
        self.allowed_paths[:] = [str(r) for r in self.guard.roots]

    def check(self, raw: str, *, media: bool = True) -> Path:
        """The real path of a servable file, refusing private folders inside a root as well.

        `media=False` also accepts files the media route does not serve (a heat map's CSV), for previews.
        """
        real = self.guard.check(raw, media=media)
        if self._private(real):
            raise PathRefused(f"a private folder: {raw!r}")
        return real

    def _private(self, path: Path) -> bool:
        return any(path == p or path.is_relative_to(p) for p in self.private)


def create_app(backend: SearchBackend, settings: AppSettings | None = None):
    """The FastAPI application: guarded file routes first, then the Gradio UI mounted at /."""
    import gradio as gr

    from omnisdk.apps.cards import CARD_CSS
    from omnisdk.apps.ui import build_blocks

    settings = settings or AppSettings()
    ctx = AppContext(backend, settings)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.omnisdk = ctx

    _add_file_routes(app, ctx)
    blocks = build_blocks(ctx)
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        server_name=settings.host,
        server_port=settings.port,
        allowed_paths=ctx.allowed_paths,
        blocked_paths=[str(p) for p in ctx.private],
        max_file_size=int(settings.max_upload_mb * 1024 * 1024),
        footer_links=["gradio"],
        run_history=False,
        ssr_mode=False,
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
        css=CARD_CSS,
    )
    blocks.allowed_paths = ctx.allowed_paths  # mount copies an empty list; keep the one refresh_roots updates
    return app


def _refused(reason: str, request: Request) -> PlainTextResponse:
    # The reason goes to the log, never to the client: a refusal tells nothing about the disk.
    log.info("refused %s %s: %s", request.method, request.url.path, reason)
    return PlainTextResponse("not found", status_code=404)


def _add_file_routes(app: FastAPI, ctx: AppContext) -> None:
    """/omnisdk/media and /omnisdk/preview, and the middleware holding Gradio's file route to the same guard."""

    @app.middleware("http")
    async def hold_gradio_files(request: Request, call_next):
        match = _GRADIO_FILE.match(request.scope.get("path", ""))
        if match and not _gradio_file_allowed(ctx, match.group("target")):
            return _refused("Gradio file route outside the roots", request)
        return await call_next(request)

    @app.get("/omnisdk/media")
    def media(request: Request, path: str = ""):
        try:
            real = ctx.check(path)
        except PathRefused as exc:
            return _refused(str(exc), request)
        return FileResponse(real, media_type=media_type(real), headers=_SAFE_HEADERS, content_disposition_type="inline")

    @app.get("/omnisdk/preview")
    def preview(request: Request, path: str = "", modality: str | None = None, page: int | None = None,
                t: float | None = None, t0: float | None = None, t1: float | None = None):
        try:
            real = ctx.check(path, media=False)
        except PathRefused as exc:
            return _refused(str(exc), request)
        modality = modality or ctx.previews.modality_of(real)
        locator = _preview_locator(page, t, t0, t1)
        if modality not in ctx.previews.modalities or locator is False:
            return _refused("no preview of this kind", request)
        try:
            png = ctx.previews.png(real, modality, locator)
        except Exception as exc:  # any decoder failure costs this one picture
            return _refused(f"preview failed: {type(exc).__name__}: {exc}", request)
        return FileResponse(png, media_type="image/png", headers=_SAFE_HEADERS)


def _preview_locator(page: int | None, t: float | None, t0: float | None, t1: float | None) -> Locator | None | bool:
    """The part of the file a preview shows: a page, a moment `t`, or a span t0-t1; False when out of range."""
    times = [x for x in (t, t0, t1) if x is not None]
    if (page is not None and not 1 <= page <= 1_000_000) or not all(math.isfinite(x) and x >= 0 for x in times):
        return False
    if page is not None:
        return Locator(page=page)
    if t is not None:
        return Locator(t0=t, t1=t)  # a moment: the plugin shows the middle of the span
    if t0 is not None:
        return False if t1 is not None and t1 < t0 else Locator(t0=t0, t1=t1)
    return None


def _gradio_file_allowed(ctx: AppContext, target: str) -> bool:
    """Gradio's file route may serve what the guard allows, plus Gradio's own upload folder."""
    from gradio import utils as gradio_utils

    if not target or "\x00" in target or _PROTOCOL.match(target):
        return False  # no fetching of URLs on a caller's behalf
    path = Path(os.path.abspath(target))
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    uploads = Path(gradio_utils.get_upload_folder()).resolve()
    if real.is_file() and real.is_relative_to(uploads):
        return True
    try:
        ctx.check(str(real))
    except PathRefused:
        return False
    return True


def warn_about_host(host: str) -> None:
    """Say loudly when the app is reachable from other machines: it has no login."""
    if host in ALL_INTERFACES:
        print(
            "\n" + "!" * 78 + f"\n! WARNING: binding {host or '0.0.0.0'}: every machine that can reach this one can search\n"
            "! the collection, open the indexed files and add files to the index. The app has no\n"
            "! login. Use --host 127.0.0.1 (the default) unless you mean it.\n" + "!" * 78 + "\n",
            file=sys.stderr,
            flush=True,
        )
        log.warning("serving on all interfaces (%s) without authentication", host)
    elif host not in LOOPBACK_HOSTS:
        print(f"WARNING: binding {host}: machines on that network can use the app; it has no login.", file=sys.stderr)


def serve(backend: SearchBackend, settings: AppSettings) -> None:
    """Run the app in the foreground until Ctrl-C."""
    import uvicorn

    warn_about_host(settings.host)
    app = create_app(backend, settings)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"omnisdk app: collection '{settings.collection}' on http://{shown}:{settings.port}/ (Ctrl-C stops)",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        app.state.omnisdk.previews.close()


class BackgroundServer:
    """The app served from a thread (tests, notebooks): `with BackgroundServer(backend, settings) as url:`."""

    def __init__(self, backend: SearchBackend, settings: AppSettings, startup_timeout_s: float = 30.0):
        import uvicorn

        warn_about_host(settings.host)
        self.app = create_app(backend, settings)
        config = uvicorn.Config(self.app, host=settings.host, port=settings.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="omnisdk-app", daemon=True)
        self._timeout = startup_timeout_s

    @property
    def url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OmniError("the app server did not start (port in use?)")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and end the preview renderer's child process; calling it again does nothing."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.app.state.omnisdk.previews.close()
