"""The Gradio interface: a Search tab (text or file query, modality filter, result cards) and an Index tab."""
from __future__ import annotations

import filecmp
import hashlib
import logging
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from omnisdk.apps.backend import IndexSummary
from omnisdk.apps.cards import render_cards
from omnisdk.errors import OmniError
from omnisdk.items import Item

if TYPE_CHECKING:
    from omnisdk.apps.server import AppContext

log = logging.getLogger(__name__)
#: Modalities a query file can be; text is typed.
FILE_MODALITIES = ("image", "audio", "video", "document")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def build_blocks(ctx: AppContext):
    import gradio as gr

    backend = ctx.backend
    modalities = list(backend.modalities())
    query_types = extensions_of([m for m in modalities if m in FILE_MODALITIES])
    index_types = extensions_of(modalities)

    def search(text: str | None, file: str | None, wanted: list[str], limit: float):
        return run_search(ctx, text, file, wanted, int(limit), modalities)

    def add(files: list[str] | None, progress=gr.Progress()):
        def report(done: int, total: int, message: str) -> None:
            progress((done, total), desc=message, unit="files")

        return run_index(ctx, files or [], index_types, report)

    with gr.Blocks(title=f"omnisdk: {ctx.settings.collection}", analytics_enabled=False, delete_cache=(1800, 3600)) as blocks:
        gr.Markdown(f"## omnisdk search: collection {code_span(ctx.settings.collection)}")
        with gr.Tab("Search"):
            with gr.Row():
                text = gr.Textbox(label="Text query", placeholder="describe what you are looking for", scale=5,
                                  elem_id="query-text")
                button = gr.Button("Search", variant="primary", scale=1, elem_id="search-button")
            with gr.Row():
                file = gr.File(label="…or search by a file: image, audio, video or PDF", file_types=query_types,
                               file_count="single", type="filepath", height=120, elem_id="query-file")
                with gr.Column():
                    wanted = gr.CheckboxGroup(modalities, value=modalities, label="Show results of these modalities",
                                              elem_id="modality-filter")
                    limit = gr.Slider(1, 100, value=ctx.settings.default_limit, step=1, label="Results",
                                      elem_id="result-limit")
            status = gr.Markdown(elem_id="search-status")
            results = gr.HTML(elem_id="results", js_on_load=None)
        with gr.Tab("Index"):
            if ctx.upload_dir is None:
                gr.Markdown("Adding files is off: the app was started without an upload folder.")
            else:
                gr.Markdown(f"Files added here are copied to {code_span(str(ctx.upload_dir))} and indexed "
                            "(PDFs by page, audio and video by time window).")
                to_add = gr.File(label="Files to add", file_count="multiple", file_types=index_types,
                                 type="filepath", elem_id="index-files")
                add_button = gr.Button("Add to index", variant="primary", elem_id="index-button")
                summary = gr.Markdown(elem_id="index-summary")
                add_button.click(add, [to_add], [summary], concurrency_id="backend", concurrency_limit=1)
        inputs, outputs = [text, file, wanted, limit], [status, results]
        # One backend call at a time: the model and the store are shared by every browser tab.
        button.click(search, inputs, outputs, concurrency_id="backend", concurrency_limit=1)
        text.submit(search, inputs, outputs, concurrency_id="backend", concurrency_limit=1)
    return blocks


def run_search(ctx: AppContext, text: str | None, file: str | None, wanted: Sequence[str], limit: int,
               modalities: Sequence[str]) -> tuple[str, str]:
    """(status Markdown, cards HTML) for one query; a file query wins over text."""
    if file:
        query, described = Item.of_file(Path(file)), f"the file {escape_markdown(Path(file).name)}"
    elif text and text.strip():
        query, described = Item.of_text(text.strip()), f"“{escape_markdown(text.strip())}”"
    else:
        return "Type a query or choose a file to search by.", ""
    if not wanted:
        return "Tick at least one modality to show.", ""
    start = time.perf_counter()
    try:
        hits = ctx.backend.search(query, limit, None if set(wanted) >= set(modalities) else list(wanted))
    except OmniError as exc:
        return f"Search failed: {escape_markdown(str(exc))}", ""
    except Exception as exc:  # a bug or a store failure: say so on the page, keep the traceback in the log
        log.exception("search failed")
        return f"Search failed: {escape_markdown(f'{type(exc).__name__}: {exc}')}", ""
    seconds = time.perf_counter() - start
    status = f"{len(hits)} result(s) for {described} in {seconds:.2f} s"
    return status, render_cards(hits, "No results: the collection holds nothing of the ticked modalities.",
                                ctx.previews.modalities)


def run_index(ctx: AppContext, files: Sequence[str], allowed: Sequence[str], report) -> str:
    """Copy uploads into the upload folder, index them, and widen the served roots to match."""
    if ctx.upload_dir is None:
        return "Adding files is off: the app was started without an upload folder."
    if not files:
        return "Choose files to add first."
    kept, refused = keep_uploads([Path(f) for f in files], ctx.upload_dir, allowed)
    try:
        summary = ctx.backend.index_files(kept, report) if kept else IndexSummary()
    except Exception as exc:  # the copies stay in the upload folder; adding them again resumes
        log.exception("indexing failed")
        return f"Indexing failed: {escape_markdown(f'{type(exc).__name__}: {exc}')}"
    finally:
        ctx.refresh_roots()
    summary.failed = refused + summary.failed
    return summary.markdown()


def keep_uploads(files: Sequence[Path], folder: Path, allowed: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Copy uploaded files (Gradio deletes its copies) into `folder`; a same-named other file gets a suffix."""
    kept, refused = [], []
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        name = Path(file.name).name.lstrip(".") or "upload"  # a hidden name would be neither indexed nor served
        if file.suffix.lower() not in allowed:
            refused.append((name, f"not a kind this collection indexes ({', '.join(allowed)})"))
            continue
        target = folder / name
        if target.exists() and not filecmp.cmp(file, target, shallow=False):
            digest = hashlib.sha256(file.read_bytes()).hexdigest()[:10]
            target = folder / f"{Path(name).stem}-{digest}{file.suffix}"
        if not target.exists():
            shutil.copyfile(file, target)
        kept.append(target)
    return kept, refused


def extensions_of(modalities: Sequence[str]) -> list[str]:
    """File suffixes the plugins of these modalities accept, for the upload widgets."""
    from omnisdk.plugin_manager import modality_classes

    classes = modality_classes()
    suffixes: list[str] = []
    for name in modalities:
        cls = classes.get(name)
        for suffix in getattr(cls, "extensions", ()):
            if suffix not in suffixes:
                suffixes.append(suffix)
    return suffixes


def escape_markdown(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text.replace("\n", " "))


def code_span(text: str) -> str:
    """Inline code: backslash escapes would show there, so only backticks and newlines are replaced."""
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"
