"""CLI: `omnisdk app`, the search app in the browser. Imports stay light: the parser is built on every call."""
from __future__ import annotations

import argparse
from pathlib import Path

from omnisdk.errors import OmniError
from omnisdk.hookspecs import hookimpl
from omnisdk.precision import add_compute_arguments, compute_from

STORE_HELP = ("where the vectors live: a directory (Qdrant Edge; default ./.omnisdk), http(s)://HOST:PORT "
              "(a Qdrant server; API key from QDRANT_API_KEY), or local:PATH")


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `app`."""
    add_commands(subparsers)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app", help="search a collection in the browser: text or file queries, previews; add files",
        description="Serve a Gradio app on this machine: query a collection by text or by an image, audio, video "
        "or PDF file, filter by modality, and see result cards with previews, scores and locators; its Index tab "
        "adds uploaded files. It binds 127.0.0.1 unless --host says otherwise, has no login, and serves only "
        "media files inside the folders of indexed files.",
    )
    p.add_argument("--collection", required=True)
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--model", type=Path, help="checkpoint directory (default: the one the collection was indexed with)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest file a browser may upload (default 200)")
    p.add_argument("--upload-dir", type=Path,
                   help="where files added in the Index tab are kept (default: omnisdk's data folder/uploads/COLLECTION)")
    p.add_argument("--no-index-tab", action="store_true", help="search only: no uploads into the collection")
    add_compute_arguments(p)
    p.add_argument("--no-calibrate", action="store_true",
                   help="rank mixed-modality results by raw cosine, without the per-modality calibration")
    p.set_defaults(func=cmd_app)


def cmd_app(args: argparse.Namespace) -> int:
    from omnisdk.apps.server import AppSettings, serve
    from omnisdk.apps.store_backend import StoreBackend

    if not 1 <= args.port <= 65535:
        raise OmniError(f"--port {args.port} is not a port: use 1-65535")
    if args.max_upload_mb <= 0:
        raise OmniError(f"--max-upload-mb {args.max_upload_mb} must be positive")
    backend = StoreBackend.open(args.collection, args.store, args.model, calibrate=not args.no_calibrate,
                                **compute_from(args))
    try:
        local = backend.store.local_dir(args.collection)
        settings = AppSettings(
            collection=args.collection,
            host=args.host,
            port=args.port,
            max_upload_mb=args.max_upload_mb,
            upload_dir=None if args.no_index_tab else (args.upload_dir or default_upload_dir(args.collection)),
            private_dirs=[d for d in (local, getattr(backend.store, "root", None)) if d is not None],
        )
        serve(backend, settings)
    finally:
        backend.close()
    return 0


def default_upload_dir(collection: str) -> Path:
    import platformdirs

    return platformdirs.user_data_path("omnisdk") / "uploads" / collection
