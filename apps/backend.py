"""What the app needs from a search stack: a small Protocol, the hit and summary it passes around.

The app never talks to Qdrant or the model directly. Anything with these four methods can sit
behind it: the Qdrant-backed adapter in `apps.store_backend` for real use, an in-memory one in
tests. Calls come from Gradio worker threads; the app runs them one at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

from omnisdk.items import Item, Locator

#: progress(done, total, message): `done` of `total` files indexed so far.
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Hit:
    """One search result: a located chunk of an indexed file (or an indexed text) and its score."""

    rank: int
    score: float
    modality: str
    source: Path | None = None
    locator: Locator | None = None
    text: str | None = None  # a text item's content, or a file's caption


@dataclass
class IndexSummary:
    """What one `index_files` call did."""

    files: int = 0
    chunks: int = 0
    skipped: int = 0  # already indexed and unchanged
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, cause)
    seconds: float = 0.0

    def markdown(self) -> str:
        lines = [f"Indexed **{self.files}** file(s) as **{self.chunks}** chunk(s) in {self.seconds:.1f} s"
                 + (f"; {self.skipped} unchanged file(s) skipped" if self.skipped else "") + "."]
        for name, cause in self.failed:
            shown = name.replace("`", "'")
            lines.append(f"- failed: `{shown}`: {cause}")
        return "\n".join(lines)


@runtime_checkable
class SearchBackend(Protocol):
    """A collection the app can search and add files to."""

    def search(self, query: Item, limit: int, modalities: Sequence[str] | None) -> list[Hit]:
        """The `limit` best hits for a text or file query, best first; `modalities` None means all."""

    def index_files(self, paths: Sequence[Path], progress_cb: ProgressCallback | None = None) -> IndexSummary:
        """Embed and store these files (chunked into pages and time windows); idempotent."""

    def indexed_roots(self) -> list[Path]:
        """Directories holding the indexed files: the only places the app serves files from."""

    def modalities(self) -> list[str]:
        """The modalities this collection's model embeds, for the filter checkboxes."""
