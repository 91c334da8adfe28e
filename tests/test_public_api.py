"""`import omnisdk` is enough: every public name resolves from the top, lazily, without importing torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import omnisdk

REPO = Path(__file__).resolve().parents[1]


def test_import_omnisdk_does_not_import_torch():
    code = "import json, sys, omnisdk; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "('torch', 'transformers', 'numpy', 'qdrant_client', 'gradio'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_every_public_name_resolves_and_is_listed():
    assert "OmniModel" in omnisdk.__all__ and "hookimpl" in omnisdk.__all__
    for name in omnisdk.__all__:
        value = getattr(omnisdk, name)
        assert value is not None, name
        if isinstance(value, type) or callable(value) and name != "hookimpl":  # hookimpl is pluggy's marker
            assert value.__module__.startswith("omnisdk."), (name, value.__module__)
    assert set(omnisdk.__all__) <= set(dir(omnisdk))


def test_the_plugin_surface_is_the_real_one():
    from omnisdk.hookspecs import hookimpl
    from omnisdk.modality import ModalityPlugin, run_per_item
    from omnisdk.search.indexer import Indexer

    assert omnisdk.hookimpl is hookimpl and omnisdk.ModalityPlugin is ModalityPlugin
    assert omnisdk.run_per_item is run_per_item and omnisdk.Indexer is Indexer


def test_an_unknown_name_says_so():
    with pytest.raises(AttributeError, match="no attribute 'Indexr'"):
        omnisdk.Indexr  # noqa: B018


def test_from_preset_builds_and_load_records_the_directory(tmp_path):
    model = omnisdk.OmniModel.from_preset("tiny", modalities=["text"])
    assert isinstance(model, omnisdk.OmniModel) and list(model.plugins) == ["text"]
    assert model.directory is None
    model.save(tmp_path / "m")
    assert model.directory == tmp_path / "m"
    loaded = omnisdk.OmniModel.load(tmp_path / "m")
    assert loaded.directory == tmp_path / "m" and loaded.fingerprint == model.fingerprint
    # A partial load is another model, with another fingerprint: it claims no directory.
    assert omnisdk.OmniModel.load(tmp_path / "m", modalities=[]).directory is None


def test_services_take_the_store_then_the_collection_and_remember_the_model_directory(tmp_path):
    omnisdk.OmniModel.from_preset("tiny", modalities=["text"]).save(tmp_path / "m")
    model = omnisdk.OmniModel.load(tmp_path / "m")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a red circle on the left")
    with omnisdk.open_store(":memory:") as store:
        report = omnisdk.Indexer(store, "c", model, progress=False).index([tmp_path / "docs"])
        assert report.indexed == 1
        assert store.get_meta("c").model_path == str(tmp_path / "m")  # from model.directory, not repeated
        searcher = omnisdk.Searcher(store, "c")  # loads the model from the recorded directory
        assert searcher.model.fingerprint == model.fingerprint
        assert searcher.search("a red circle", limit=1)[0].source.endswith("a.txt")
        with pytest.warns(DeprecationWarning, match=r"Indexer\(store, collection, model\)"):
            old = omnisdk.Indexer(model, store, "c", progress=False)
        assert (old.store, old.collection, old.model) == (store, "c", model)


# -- docstrings: every public name, and Args/Returns/Raises where a caller needs them -----------------------------
def _doc(value) -> str:
    """The object's own docstring: a class's, not one inherited from a base class or the marker's type."""
    return (value.__dict__.get("__doc__") if isinstance(value, type) else value.__doc__) or ""


@pytest.mark.parametrize("name", [n for n in omnisdk.__all__ if not n.startswith("__")])
def test_every_public_name_has_a_docstring(name):
    assert len(_doc(getattr(omnisdk, name)).strip()) > 20, f"omnisdk.{name} has no docstring"


# The services and the model's entry points: (object, attribute or None for the object itself, sections).
SERVICES = [
    ("open_store", None, ("Args:", "Returns:", "Raises:")),
    ("Indexer", None, ("Args:", "Raises:")),
    ("Indexer", "index", ("Args:", "Returns:", "Raises:")),
    ("Searcher", None, ("Args:", "Raises:")),
    ("Searcher", "search", ("Args:", "Returns:", "Raises:")),
    ("fuse", None, ("Args:", "Returns:", "Raises:")),
    ("train_specialist", None, ("Args:", "Returns:", "Raises:")),
    ("align", None, ("Args:", "Returns:", "Raises:")),
    ("Pipeline", None, ("Args:", "Raises:")),
    ("Pipeline", "run", ("Returns:",)),
    ("OmniModel", "load", ("Args:", "Returns:", "Raises:")),
    ("OmniModel", "encode", ("Args:", "Returns:", "Raises:")),
    ("OmniModel", "from_preset", ("Args:", "Returns:", "Raises:")),
    ("ModalityPlugin", None, ("Attributes:", "Args:", "Raises:")),
]


@pytest.mark.parametrize(("name", "attribute", "sections"), SERVICES, ids=lambda v: v if isinstance(v, str) else None)
def test_services_document_their_arguments_results_and_errors(name, attribute, sections):
    value = getattr(omnisdk, name)
    doc = _doc(getattr(value, attribute) if attribute else value)
    missing = [s for s in sections if s not in doc]
    assert not missing, f"omnisdk.{name}{'.' + attribute if attribute else ''} lacks {missing}"


def test_every_plugin_hook_documents_its_arguments_and_result():
    """The ModalityPlugin methods a plugin may write: Args for what it gets, Returns for what it gives back."""
    import inspect

    for name, member in vars(omnisdk.ModalityPlugin).items():
        function = member.__func__ if isinstance(member, classmethod) else member
        if name.startswith("_") or not inspect.isfunction(function):
            continue
        doc, params = function.__doc__ or "", list(inspect.signature(function).parameters)[1:]
        assert doc.strip(), f"ModalityPlugin.{name} has no docstring"
        assert not params or "Args:" in doc, f"ModalityPlugin.{name} does not document {params}"
        assert name == "bind" or "Returns:" in doc, f"ModalityPlugin.{name} does not say what it returns"
