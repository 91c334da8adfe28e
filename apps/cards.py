"""Result cards: one HTML card per hit, with a preview chosen by modality, its score and locator.

The built-in modalities have their own elements (a video or audio player, a page linking to the PDF);
any other modality whose plugin draws previews (`ModalityPlugin.preview`) shows that picture.

Everything a card shows that comes from a file (names, captions, paths) is HTML-escaped, and every
file it links to goes through the app's guarded routes (`/omnisdk/media`, `/omnisdk/preview`).
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Collection, Literal, Sequence
from urllib.parse import quote, urlencode

from omnisdk.items import Locator

from omnisdk.apps.backend import Hit

MEDIA_ROUTE = "/omnisdk/media"
PREVIEW_ROUTE = "/omnisdk/preview"
PreviewKind = Literal["image", "video", "document", "audio", "text", "picture", "none"]
_BY_SUFFIX: dict[str, PreviewKind] = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"), "image"),
    **dict.fromkeys((".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"), "video"),
    **dict.fromkeys((".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif"), "audio"),
    ".pdf": "document",
    ".txt": "text",
    ".md": "text",
}
_SNIPPET_CHARS = 280
#: A text chunk's passage is the hit itself: shown in full up to this (a chunk is a few hundred tokens).
_PASSAGE_CHARS = 2000

CARD_CSS = """
.omni-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; }
.omni-card { border: 1px solid var(--border-color-primary, #ddd); border-radius: 8px; padding: 8px;
  display: flex; flex-direction: column; gap: 6px; background: var(--background-fill-primary, #fff); }
.omni-card .omni-preview { display: flex; justify-content: center; align-items: center; min-height: 60px; }
.omni-card img { max-width: 100%; max-height: 200px; object-fit: contain; border-radius: 4px; }
.omni-card video { width: 100%; max-height: 200px; }
.omni-card audio { width: 100%; }
.omni-card .omni-meta { display: flex; justify-content: space-between; font-size: 0.85em; gap: 6px; }
.omni-card .omni-score { font-weight: 600; font-variant-numeric: tabular-nums; }
.omni-card .omni-source { font-size: 0.8em; word-break: break-all; opacity: 0.8; }
.omni-card .omni-snippet { font-size: 0.85em; white-space: pre-wrap; max-height: 12em; overflow: auto; }
.omni-badge { border-radius: 4px; padding: 0 6px; background: var(--color-accent-soft, #eef); }
.omni-empty { opacity: 0.7; padding: 12px; }
"""


def locator_text(locator: Locator | None, has_file: bool = True) -> str:
    """What a card says about where the hit sits: 'page 3', '10.0–20.0 s', 'whole file'."""
    if locator is None:
        return "whole file" if has_file else ""
    if locator.page is not None:
        return f"page {locator.page}"
    if locator.t0 is not None:
        if locator.t1 is not None:
            return f"{locator.t0:.1f}–{locator.t1:.1f} s"
        return f"from {locator.t0:.1f} s"
    if locator.line0 is not None:
        return locator.lines_text() + (f" · {' › '.join(locator.heading)}" if locator.heading else "")
    return "whole file"


def preview_kind(hit: Hit, pictured: Collection[str] = ()) -> PreviewKind:
    """How a hit is previewed: by its modality; else the plugin's picture when its modality is in `pictured`
    (the modalities whose plugins draw previews); else by its file's suffix, else text or nothing."""
    if hit.source is None:
        return "text" if hit.text else "none"
    if hit.modality in ("image", "video", "document", "audio", "text"):
        return hit.modality  # type: ignore[return-value]
    if hit.modality in pictured:
        return "picture"
    return _BY_SUFFIX.get(hit.source.suffix.lower(), "text" if hit.text else "none")


def media_url(path: Path, fragment: str = "") -> str:
    return f"{MEDIA_ROUTE}?{urlencode({'path': str(path)}, quote_via=quote)}{fragment}"


def preview_url(path: Path, page: int | None = None, t: float | None = None, *, modality: str | None = None,
                locator: Locator | None = None) -> str:
    """The guarded preview route for a file: a page, a moment `t`, or (with `modality`) the hit's locator."""
    params: dict[str, str] = {"path": str(path)}
    if modality is not None:
        params["modality"] = modality
    if page is not None:
        params["page"] = str(page)
    if t is not None:
        params["t"] = f"{t:.3f}"
    if locator is not None:
        if locator.page is not None:
            params["page"] = str(locator.page)
        if locator.t0 is not None:
            params["t0"] = f"{locator.t0:.3f}"
        if locator.t1 is not None:
            params["t1"] = f"{locator.t1:.3f}"
    return f"{PREVIEW_ROUTE}?{urlencode(params, quote_via=quote)}"


def time_fragment(locator: Locator | None) -> str:
    """A media fragment (#t=start,end) so a player starts at the hit's span."""
    if locator is None or locator.t0 is None:
        return ""
    return f"#t={locator.t0:g},{locator.t1:g}" if locator.t1 is not None else f"#t={locator.t0:g}"


def frame_time(locator: Locator | None) -> float | None:
    """Which moment of a video to show: the middle of the hit's span; None means the whole video's middle."""
    if locator is None or locator.t0 is None:
        return None
    return (locator.t0 + locator.t1) / 2 if locator.t1 is not None else locator.t0


def preview_html(hit: Hit, pictured: Collection[str] = ()) -> str:
    kind = preview_kind(hit, pictured)
    src = hit.source
    if kind == "picture" and src is not None:
        return _img(preview_url(src, modality=hit.modality, locator=hit.locator), f"{hit.modality} {src.name}")
    if kind == "image" and src is not None:
        return _img(preview_url(src), f"image {src.name}")
    if kind == "video" and src is not None:
        # The hit's frame is the player's poster: one element shows the moment and plays the span.
        poster = preview_url(src, t=frame_time(hit.locator))
        return (f'<video controls preload="none" poster="{_attr(poster)}" '
                f'src="{_attr(media_url(src, time_fragment(hit.locator)))}"></video>')
    if kind == "document" and src is not None:
        page = hit.locator.page if hit.locator and hit.locator.page is not None else 1
        link = media_url(src, f"#page={page}")
        return (f'<a href="{_attr(link)}" target="_blank" rel="noopener">'
                f"{_img(preview_url(src, page=page), f'page {page} of {src.name}')}</a>")
    if kind == "audio" and src is not None:
        return f'<audio controls preload="none" src="{_attr(media_url(src, time_fragment(hit.locator)))}"></audio>'
    if hit.text:
        limit = _PASSAGE_CHARS if hit.locator is not None and hit.locator.line0 is not None else _SNIPPET_CHARS
        snippet = hit.text if len(hit.text) <= limit else hit.text[:limit] + "…"
        return f'<div class="omni-snippet">{_text(snippet)}</div>'
    return ""


def render_card(hit: Hit, pictured: Collection[str] = ()) -> str:
    """One result card; `pictured`: the modalities whose plugins draw previews."""
    where = locator_text(hit.locator, hit.source is not None)
    source = ""
    if hit.source is not None:
        source = f'<div class="omni-source" title="{_attr(str(hit.source))}">{_text(hit.source.name)}</div>'
    return (
        f'<div class="omni-card" data-rank="{hit.rank}" data-modality="{_attr(hit.modality)}" '
        f'data-kind="{preview_kind(hit, pictured)}">'
        f'<div class="omni-preview">{preview_html(hit, pictured)}</div>'
        '<div class="omni-meta">'
        f'<span>#{hit.rank} <span class="omni-badge">{_text(hit.modality)}</span></span>'
        f'<span class="omni-score" title="cosine similarity">{hit.score:.3f}</span></div>'
        + (f'<div class="omni-locator">{_text(where)}</div>' if where else "")
        + source
        + "</div>"
    )


def render_cards(hits: Sequence[Hit], empty: str = "No results.", pictured: Collection[str] = ()) -> str:
    """The cards of `hits`, or `empty` in their place; `pictured`: the modalities whose plugins draw previews."""
    if not hits:
        return f'<div class="omni-empty">{_text(empty)}</div>'
    return '<div class="omni-cards">' + "".join(render_card(h, pictured) for h in hits) + "</div>"


def _img(url: str, alt: str) -> str:
    return f'<img loading="lazy" src="{_attr(url)}" alt="{_attr(alt)}">'


def _text(value: str) -> str:
    # `$` and braces too: Gradio's HTML component treats its value as a template.
    return html.escape(value).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def _attr(value: str) -> str:
    return _text(value)
