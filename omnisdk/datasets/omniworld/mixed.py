"""Mixed-corpus tasks: one query ranks the WHOLE corpus (every modality), relevant items in several.

    t2x   a text query (a paraphrased caption, a page's key sentence, "the digit seven")
    a2x   a spoken digit

The candidate pool is every corpus item (the task's corpus modality is `MIXED`), so a model with a
modality gap, whose same-modality similarities sit above its cross-modal ones, ranks by modality
before meaning and loses here while its single-modality tasks look fine.

Judgements (graded; 2 = the query describes the item exactly, 1 = the same objects, otherwise shown):
    scene caption  -> its images (and twins) 2, its caption text 2, a document page whose figure has
                      that caption 2; clips and figure pages with the same (colour, shape) set 1
    clip caption   -> its clips 2, its caption text 2; scenes and figure pages with that set 1
    sound caption  -> its sounds 2, its caption text 2
    page sentence  -> its page 2
    "the digit w"  -> every handwritten w 2, the label text "a handwritten digit w" 2
    spoken w (a2x) -> every handwritten w 2, the label text 2
No query item is itself in the pool (a spoken digit is a query only; a text query is a paraphrase).
Queries and qrels rows are appended after the single-modality tasks', and no corpus record changes,
so those tasks' files keep their bytes up to the new rows.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable

from omnisdk.datasets.format import MIXED
from omnisdk.datasets.omniworld.common import Sample
TASKS: dict[str, dict[str, Any]] = {
    "t2x": {"query_modality": "text", "corpus_modality": MIXED, "modality": MIXED,
            "description": "caption, sentence or digit name -> every matching item, any modality"},
    "a2x": {"query_modality": "audio", "corpus_modality": MIXED, "modality": MIXED,
            "description": "spoken digit -> its handwritten images and its label, among every modality"},
}
EXACT, SAME_OBJECTS = 2, 1
AddQuery = Callable[..., None]


def add_mixed_tasks(evaluated: dict[str, list[Sample]], corpus: dict[str, dict[str, Any]], add_query: AddQuery) -> None:
    """Append t2x and a2x queries (with graded qrels) for the evaluated samples; `corpus` is read only."""
    scenes, clips = evaluated.get("scenes", []), evaluated.get("clips", [])
    pages = [p for p in evaluated.get("documents", []) if p.attributes.get("picture")]
    by_objects: dict[frozenset, list[str]] = defaultdict(list)  # (colour, shape) set -> item ids
    for s in [*scenes, *clips]:
        by_objects[_objects(s.attributes["objects"])].append(s.id)
    for page in pages:
        by_objects[_objects(page.attributes["picture"])].append(page.id)
    figure_pages: dict[str, list[str]] = defaultdict(list)  # a figure's canonical caption -> pages
    for page in pages:
        figure_pages[_figure_caption(page.attributes["picture"])].append(page.id)
    for domain in ("scenes", "clips", "sounds"):
        _described(evaluated.get(domain, []), corpus, by_objects, figure_pages, add_query)
    for page in evaluated.get("documents", []):
        if page.id in corpus and page.queries:
            add_query("t2x", page, {page.id: EXACT}, modality="text", text=page.queries[0])
    _digits(evaluated.get("digits", []), evaluated.get("spoken", []), corpus, add_query)


def _described(items: list[Sample], corpus: dict[str, dict[str, Any]], by_objects: dict[frozenset, list[str]],
               figure_pages: dict[str, list[str]], add_query: AddQuery) -> None:
    """A paraphrase of each item's caption finds its twins, its caption text, and what shows its objects."""
    twins: dict[str, list[Sample]] = defaultdict(list)
    for s in items:
        twins[s.captions[0]].append(s)
    for s in items:
        caption = s.captions[0]
        grades: dict[str, int] = {}
        if "objects" in s.attributes and s.domain in ("scenes", "clips"):
            grades.update({i: SAME_OBJECTS for i in by_objects[_objects(s.attributes["objects"])]})
        if s.domain == "scenes":
            grades.update({p: EXACT for p in figure_pages.get(caption, [])})
        grades.update({t.id: EXACT for t in twins[caption]})
        caption_id = f"caption-{twins[caption][0].id}"  # as build._paired_tasks names it
        if caption_id in corpus:
            grades[caption_id] = EXACT
        grades = {i: g for i, g in grades.items() if i in corpus}
        text = s.captions[1] if len(s.captions) > 1 else caption
        add_query("t2x", s, grades, modality="text", text=text)


def _digits(digits: list[Sample], spoken: list[Sample], corpus: dict[str, dict[str, Any]], add_query: AddQuery) -> None:
    """'the digit w' (one query per digit and split) and each spoken w find every handwritten w and its label."""
    relevant: dict[str, dict[str, int]] = defaultdict(dict)
    for d in digits:
        if d.label and d.id in corpus:
            relevant[d.label][d.id] = EXACT
    for label, grades in relevant.items():
        label_id = f"label-digit_cls-{label}"
        if label_id in corpus:
            grades[label_id] = EXACT
    first: dict[tuple[str, str], Sample] = {}
    for d in digits:
        first.setdefault((d.split, d.label or ""), d)
    for (_, label), d in sorted(first.items()):
        if relevant.get(label):
            add_query("t2x", d, relevant[label], modality="text", text=f"the digit {label}")
    for s in spoken:
        if relevant.get(s.label or ""):
            add_query("a2x", s, relevant[s.label or ""], modality="audio", path=s.path)


def _objects(objects: Iterable[dict[str, Any]]) -> frozenset:
    return frozenset((o["colour"], o["shape"]) for o in objects)


def _figure_caption(objects: list[dict[str, Any]]) -> str:
    from omnisdk.datasets.omniworld.scenes import _join, _phrase

    return _join([_phrase(o) for o in objects])
