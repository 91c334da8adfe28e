"""The dataset format: BEIR-style files with a modality on every item. See docs/data-format.md.

    DATASET/
      dataset.json      name, version, seed, tasks, generator settings, file hashes
      corpus.jsonl      {"_id": "d1", "modality": "image", "path": "img/1.png", "tasks": ["t2i"]}
      queries.jsonl     {"_id": "q1", "modality": "text", "text": "a red circle", "task": "t2i"}
      qrels/<split>.tsv query-id <TAB> corpus-id <TAB> score   (a header line first)
      train.jsonl       {"query": ITEM, "positive": ITEM, "negatives": [ITEM, ...], "task": "t2i"}

Every problem is reported as `FILE:LINE: what is wrong`, so a user can fix their own conversion.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from omnisdk.errors import OmniError
from omnisdk.items import Item, Locator

DATASET_JSON = "dataset.json"
CORPUS = "corpus.jsonl"
QUERIES = "queries.jsonl"
TRAIN = "train.jsonl"
QRELS_DIR = "qrels"
#: A task's corpus modality that means "the whole corpus, every modality" (OmniWorld's t2x, a2x).
MIXED = "mixed"


class DatasetError(OmniError):
    """A dataset file is missing or malformed; the message names the file and line."""


class TaskSpec(BaseModel):
    """A task: queries of one modality retrieve corpus items of another."""

    query_modality: str
    corpus_modality: str
    kind: Literal["retrieval", "classification"] = "retrieval"
    #: the modality a report credits this task to (t2i and i2t both count for "image").
    modality: str | None = None
    description: str = ""

    def credited_modality(self) -> str:
        if self.modality:
            return self.modality
        return self.corpus_modality if self.query_modality == "text" else self.query_modality


class DatasetMeta(BaseModel):
    """dataset.json's known fields, type-checked; anything else (generator settings) passes as is."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str | None = None
    version: str | int | None = None
    seed: int | None = None
    size: str | None = None
    tasks: dict[str, TaskSpec] = {}
    files: dict[str, str] = {}
    hash: str | None = None


@dataclass(frozen=True)
class Record:
    """One corpus item or query as written in its file; `path` stays relative to the dataset root."""

    id: str
    modality: str
    text: str | None = None
    path: str | None = None
    locator: dict[str, Any] | None = None
    task: str | None = None  # queries: the task they belong to
    tasks: tuple[str, ...] = ()  # corpus: the tasks whose candidate pool holds it (empty: by modality)
    where: str = ""  # FILE:LINE, for messages


@dataclass
class TrainExample:
    query: Item
    positive: Item
    negatives: list[Item]
    task: str | None


@dataclass
class Dataset:
    root: Path
    meta: dict[str, Any]
    tasks: dict[str, TaskSpec]
    corpus: dict[str, Record]
    queries: dict[str, Record]
    qrels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # split -> qid -> cid -> score

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.root.name))

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels)

    def item(self, record: Record | dict[str, Any]) -> Item:
        """An omnisdk Item with an absolute path, ready for `OmniModel.encode`."""
        if isinstance(record, dict):
            record = _record(record, "", need_id=False)
        path = self.root / record.path if record.path else None
        return Item(modality=record.modality, text=record.text, path=path, locator=Locator.from_dict(record.locator))

    def task_queries(self, task: str, split: str) -> list[Record]:
        """Queries of `task` that have judgements in `split`, in file order."""
        judged = self.qrels.get(split, {})
        return [q for q in self.queries.values() if q.task == task and q.id in judged]

    def candidates(self, task: str) -> list[Record]:
        """The corpus items a task's queries rank: those listing the task, else all of its corpus modality
        (every item, when that is MIXED)."""
        spec = self.tasks[task]
        listed = [r for r in self.corpus.values() if task in r.tasks]
        if listed:
            return listed
        if spec.corpus_modality == MIXED:
            return list(self.corpus.values())
        return [r for r in self.corpus.values() if not r.tasks and r.modality == spec.corpus_modality]

    def train_examples(self) -> Iterator[TrainExample]:
        """Training pairs from train.jsonl, read lazily (the file may be large)."""
        path = self.root / TRAIN
        if not path.exists():
            return
        for where, row in _jsonl(path):
            try:
                yield TrainExample(
                    query=self.item(row["query"]),
                    positive=self.item(row["positive"]),
                    negatives=[self.item(n) for n in row.get("negatives", [])],
                    task=row.get("task"),
                )
            except (KeyError, TypeError, DatasetError) as exc:
                raise DatasetError(f"{where}: bad training example: {exc}") from exc

    def content_hash(self) -> str:
        """sha256 of the index files (corpus, queries, qrels, train) and the generator's recorded hash.

        The generator's hash covers every media file as written; the index files are hashed again
        here, so a dataset edited after generation gets a new hash (media edited in place do not:
        re-run `omnisdk datasets check` for that).
        """
        digest = hashlib.sha256(str(self.meta.get("hash", "")).encode())
        for name in (CORPUS, QUERIES, TRAIN, *(f"{QRELS_DIR}/{s}.tsv" for s in self.splits)):
            p = self.root / name
            if p.exists():
                digest.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
        return digest.hexdigest()


def load_dataset(root: str | Path, *, known_modalities: set[str] | None = None, check_files: bool = True) -> Dataset:
    """Read and validate a dataset directory; any problem raises DatasetError naming FILE:LINE."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist")
    if known_modalities is None:
        from omnisdk.plugin_manager import modality_classes

        known_modalities = set(modality_classes())
    meta = _read_meta(root)
    tasks = dict(_validate_meta(meta, root / DATASET_JSON).tasks)
    corpus = _read_records(root, CORPUS, known_modalities, check_files, is_query=False)
    queries = _read_records(root, QUERIES, known_modalities, check_files, is_query=True)
    for q in queries.values():
        if q.task is None:
            raise DatasetError(f"{q.where}: query '{q.id}' has no \"task\"")
        if q.task not in tasks:
            if meta.get("tasks"):
                raise DatasetError(f"{q.where}: task '{q.task}' is not declared in {DATASET_JSON} (declared: {', '.join(sorted(tasks))})")
            tasks[q.task] = _infer_task(q, corpus)
    qrels = {p.stem: _read_qrels(p, queries, corpus) for p in sorted((root / QRELS_DIR).glob("*.tsv"))}
    if not qrels:
        raise DatasetError(f"{root / QRELS_DIR}: no <split>.tsv files")
    return Dataset(root=root, meta=meta, tasks=tasks, corpus=corpus, queries=queries, qrels=qrels)


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / DATASET_JSON
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8 JSON") from exc


def _validate_meta(meta: Any, path: Path) -> DatasetMeta:
    """The typed view of dataset.json; a wrong type raises naming the file and the field."""
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {_json_type(meta)}")
    try:
        return DatasetMeta.model_validate(meta)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        if first["type"] == "missing":
            raise DatasetError(f"{path}: field '{field}' is missing (see docs/data-format.md)") from None
        value = _field_value(meta, first["loc"])
        raise DatasetError(
            f"{path}: field '{field}': {_expected(first['loc'], first['msg'])}, got {_json_type(value)} "
            f"{json.dumps(value)[:60]} (see docs/data-format.md)"
        ) from None


def _field_value(meta: dict[str, Any], loc: tuple) -> Any:
    value: Any = meta
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _expected(loc: tuple, msg: str) -> str:
    """What a field should hold, in the file's terms (JSON types), not pydantic's."""
    if loc == ("tasks",):
        return 'expected an object mapping each task name to its spec, e.g. {"t2i": {"query_modality": "text", "corpus_modality": "image"}}'
    if loc[0] == "tasks" and len(loc) == 2:
        return 'expected an object with "query_modality" and "corpus_modality"'
    if loc == ("files",):
        return "expected an object mapping each file to its sha256"
    return msg.replace("Input should be a valid dictionary", "expected an object").replace("Input should be", "expected")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def _record(row: dict[str, Any], where: str, *, need_id: bool = True, known: set[str] | None = None) -> Record:
    if need_id and not isinstance(row.get("_id"), str):
        raise DatasetError(f"{where}: missing string \"_id\"")
    modality = row.get("modality")
    if not isinstance(modality, str):
        raise DatasetError(f"{where}: missing string \"modality\"")
    if known is not None and modality not in known:
        raise DatasetError(f"{where}: unknown modality '{modality}' (installed: {', '.join(sorted(known))})")
    _check_types(row, where)
    if row.get("text") is None and row.get("path") is None:
        raise DatasetError(f"{where}: an item needs \"text\" or \"path\"")
    if modality != "text" and row.get("path") is None:
        raise DatasetError(f"{where}: a {modality} item needs a \"path\" relative to the dataset root")
    return Record(
        id=row.get("_id", ""), modality=modality, text=row.get("text"), path=row.get("path"),
        locator=row.get("locator"), task=row.get("task"), tasks=tuple(row.get("tasks", ())), where=where,
    )


_ROW_TYPES: dict[str, tuple[type, str]] = {
    "text": (str, "a string"), "path": (str, "a string"), "task": (str, "a string"),
    "locator": (dict, 'an object such as {"page": 2} or {"t0": 0, "t1": 10}'), "tasks": (list, "a list of task names"),
}


def _check_types(row: dict[str, Any], where: str) -> None:
    """A field of the wrong JSON type fails here, naming it, not later as an AttributeError."""
    for name, (kind, expected) in _ROW_TYPES.items():
        value = row.get(name)
        if value is not None and not isinstance(value, kind):
            raise DatasetError(f"{where}: field \"{name}\" must be {expected}, got {_json_type(value)} {json.dumps(value)[:60]}")
    if not all(isinstance(t, str) for t in row.get("tasks") or ()):
        raise DatasetError(f"{where}: field \"tasks\" must be a list of task names (strings), got {json.dumps(row['tasks'])[:60]}")


def _read_records(root: Path, name: str, known: set[str], check_files: bool, is_query: bool) -> dict[str, Record]:
    path = root / name
    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    records: dict[str, Record] = {}
    for where, row in _jsonl(path):
        record = _record(row, where, known=known)
        if record.id in records:
            raise DatasetError(f"{where}: duplicate _id '{record.id}' (first at {records[record.id].where})")
        if check_files and record.path is not None:
            _check_path(root, record, where)
        records[record.id] = record
    return records


def _check_path(root: Path, record: Record, where: str) -> None:
    target = (root / record.path).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DatasetError(f"{where}: path '{record.path}' points outside the dataset root")
    if not target.is_file():
        from omnisdk.special_files import refusal, special_kind

        kind = special_kind(root / record.path)  # a FIFO or a device would block or never end: name it
        raise DatasetError(f"{where}: {record.path} is {refusal(kind)}" if kind else f"{where}: file not found: {record.path}")


def _read_qrels(path: Path, queries: dict[str, Record], corpus: dict[str, Record]) -> dict[str, dict[str, int]]:
    judged: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[0] in ("query-id", "query_id", "qid"):
                continue
            if not line.strip():
                continue
            if len(parts) != 3:
                raise DatasetError(f"{where}: expected 'query-id<TAB>corpus-id<TAB>score', got {len(parts)} field(s)")
            qid, cid, score = parts
            if qid not in queries:
                raise DatasetError(f"{where}: unknown query id '{qid}'")
            if cid not in corpus:
                raise DatasetError(f"{where}: unknown corpus id '{cid}'")
            try:
                judged.setdefault(qid, {})[cid] = int(score)
            except ValueError as exc:
                raise DatasetError(f"{where}: score '{score}' is not an integer") from exc
    return judged


def _infer_task(query: Record, corpus: dict[str, Record]) -> TaskSpec:
    """A task not declared in dataset.json: retrieval from the query's modality to its name's target."""
    target = {"i": "image", "v": "video", "d": "document", "a": "audio", "t": "text"}
    name = query.task or ""
    if len(name) == 3 and name[1] == "2" and name[2] in target:
        return TaskSpec(query_modality=query.modality, corpus_modality=target[name[2]])
    listed = {r.modality for r in corpus.values() if name in r.tasks}
    if len(listed) == 1:
        return TaskSpec(query_modality=query.modality, corpus_modality=listed.pop())
    raise DatasetError(f"{query.where}: cannot tell what task '{name}' retrieves: declare it under \"tasks\" in {DATASET_JSON}")
