"""The variant table of the seed-method ablation (issue 12, section 4): which methods each variant
uses, their settings, the dev-sweep grids, a run's directory name, and the held-out tasks.

Pure configuration, no training: scripts/seed_ablations.py runs what this describes, and
tests/test_seed_ablations.py checks it.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from omnisdk.trainers.config import EgaSettings

METHODS = ("ega", "agff", "coma")
#: variant -> the methods it adds to the plain joint training, in the issue's order
VARIANTS: dict[str, tuple[str, ...]] = {
    "plain": (),
    "ega": ("ega",),
    "agff": ("agff",),
    "coma": ("coma",),
    "all": METHODS,
}
LABELS = {"plain": "plain", "ega": "+EGA", "agff": "+AGFF", "coma": "+CoMa", "all": "all three"}
#: OmniWorld domains whose dev/test items all lead with a (colour, shape), (shape, motion) or
#: (pitch, timbre) pair never seen in training (docs/omniworld.md, "Splits and what the test split tests").
HELD_OUT_DOMAINS = ("scenes", "clips", "sounds")


class AgffSettings(BaseModel):
    """AGFF on the variant's start: K aspect tokens per modality (the plugins' prompts), `pairs` compared."""

    model_config = ConfigDict(extra="forbid")
    aspects: int = Field(4, ge=1)
    pairs: Literal["all", "diagonal"] = "all"


class ComaSettings(BaseModel):
    """The CoMa warm-up (trainers/coma.py CoMaConfig fields); the rest of CoMaConfig keeps its defaults."""

    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(32, ge=1)
    steps: int = Field(200, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    precision: Literal["fp32", "bf16"] = "bf16"


class MethodSettings(BaseModel):
    """One setting per method; a variant uses those of the methods it has."""

    model_config = ConfigDict(extra="forbid")
    ega: EgaSettings = EgaSettings()
    agff: AgffSettings = AgffSettings()
    coma: ComaSettings = ComaSettings()


def method_slug(method: str, settings: MethodSettings) -> str:
    """A short, stable name of one method's setting (directory names, table rows)."""
    if method == "ega":
        e = settings.ega
        detail = {"relative": f"m{e.margin:g}", "topk": f"k{e.top_k}", "mined": ""}[e.rule]
        return "-".join(p for p in ("ega", f"f{e.factor:g}", e.rule, detail) if p)
    if method == "agff":
        return f"agff-k{settings.agff.aspects}-{settings.agff.pairs}"
    if method == "coma":
        c = settings.coma
        return f"coma-t{c.tokens}-s{c.steps}-b{c.batch_size}-lr{c.learning_rate:g}"
    raise ValueError(f"unknown method '{method}'; known: {', '.join(METHODS)}")


def run_slug(methods: Iterable[str], settings: MethodSettings) -> str:
    """The name of a run: its methods' slugs in a fixed order (CoMa, AGFF, EGA: the order they apply), or plain."""
    chosen = set(methods)
    unknown = chosen - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(sorted(unknown))}; known: {', '.join(METHODS)}")
    return "+".join(method_slug(m, settings) for m in ("coma", "agff", "ega") if m in chosen) or "plain"


def check_variants(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from: {', '.join(VARIANTS)}")
    return list(dict.fromkeys(names))


def sweep_grid(method: str, grid: Mapping[str, Sequence[Any]], base: MethodSettings) -> list[MethodSettings]:
    """Every setting of `method` in the product of its grid lists (the other methods keep `base`'s).

    grid keys: ega_factor, ega_rule (EGA); aspects (AGFF); coma_tokens, coma_steps (CoMa).
    """
    if method == "ega":
        return [base.model_copy(update={"ega": base.ega.model_copy(update={"factor": float(f), "rule": r})})
                for f, r in itertools.product(grid["ega_factor"], grid["ega_rule"])]
    if method == "agff":
        return [base.model_copy(update={"agff": base.agff.model_copy(update={"aspects": int(k)})})
                for k in grid["aspects"]]
    if method == "coma":
        return [base.model_copy(update={"coma": base.coma.model_copy(update={"tokens": int(t), "steps": int(s)})})
                for t, s in itertools.product(grid["coma_tokens"], grid["coma_steps"])]
    raise ValueError(f"unknown method '{method}'; known: {', '.join(METHODS)}")


def first_of_grid(grid: Mapping[str, Sequence[Any]]) -> MethodSettings:
    """The untuned settings: the first value of every grid list."""
    base = MethodSettings()
    return base.model_copy(update={
        "ega": base.ega.model_copy(update={"factor": float(grid["ega_factor"][0]), "rule": grid["ega_rule"][0]}),
        "agff": base.agff.model_copy(update={"aspects": int(grid["aspects"][0])}),
        "coma": base.coma.model_copy(update={"tokens": int(grid["coma_tokens"][0]), "steps": int(grid["coma_steps"][0])}),
    })


def best(scores: Mapping[str, float]) -> str:
    """The key with the highest score; the first listed wins a tie (the grid's first value is the default)."""
    if not scores:
        raise ValueError("nothing to choose from: the sweep measured no setting")
    top = max(scores.values())
    return next(k for k, v in scores.items() if v == top)


def held_out_domain(record: Any) -> str | None:
    """The held-out OmniWorld domain of a record: a file under scenes/, clips/ or sounds/, or a text
    naming one in its id (`t2i-scenes-test-00001-0`, `caption-scenes-dev-00001`: a caption may be
    judged relevant to items of another split, as twins share a canonical caption), else None."""
    if record.path:
        head = str(record.path).split("/", 1)[0]
        return head if head in HELD_OUT_DOMAINS else None
    for domain in HELD_OUT_DOMAINS:
        if f"-{domain}-" in f"-{record.id}-":
            return domain
    return None


def held_out_tasks(dataset: Any, split: str) -> list[str]:
    """Retrieval tasks of `split` whose every judged query, and every relevant item of it, is a
    held-out compositional item (OmniWorld's compositional held-out pairs); classification tasks are left out
    (their labels name a class, not the held-out combination)."""
    judged = dataset.qrels.get(split, {})
    out = []
    for task, spec in dataset.tasks.items():
        if getattr(spec, "kind", "retrieval") == "classification":
            continue
        queries = dataset.task_queries(task, split)
        if not queries:
            continue
        def compositional(query) -> bool:
            relevant = [dataset.corpus[c] for c, g in judged[query.id].items() if g > 0 and c in dataset.corpus]
            return (held_out_domain(query) is not None and bool(relevant)
                    and all(held_out_domain(r) is not None for r in relevant))
        if all(compositional(q) for q in queries):
            out.append(task)
    return out
