"""Extract the paragraphs OmniWorld's documents are made of, from Python standard-library docstrings.

Run once by a maintainer; the output is committed (omnisdk/datasets/omniworld/assets/stdlib_docs.json)
so that generated PDFs do not change with the Python version a user happens to run.

    python scripts/extract_stdlib_docs.py > omnisdk/datasets/omniworld/assets/stdlib_docs.json
"""
from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import sys
import warnings

EXCLUDED = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "test",
            "pydoc_data", "ensurepip", "venv", "msilib", "winreg", "winsound", "nt", "msvcrt", "distutils",
            "encodings", "ctypes", "curses", "sre_compile", "sre_constants", "sre_parse", "imp", "asynchat",
            "asyncore", "smtpd", "cgi", "cgitb", "crypt", "nis", "spwd", "ossaudiodev", "pipes", "uu",
            "xdrlib", "telnetlib", "nntplib", "mailcap", "chunk", "imghdr", "sndhdr", "sunau", "aifc",
            "audioop", "msilib", "builtins"}


def stdlib_modules() -> list[str]:
    """Public standard-library modules and the public submodules of its packages, sorted."""
    names = set()
    for name in sorted(sys.stdlib_module_names - EXCLUDED):
        if name.startswith("_"):
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # platform-specific modules
            continue
        names.add(name)
        for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            if not info.name.startswith("_") and "test" not in info.name:
                names.add(f"{name}.{info.name}")
    return sorted(names)


MIN_CHARS, MAX_CHARS = 120, 700
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def clean(doc: str) -> str | None:
    """The first paragraphs of a docstring as one line of prose, or None if it is not prose."""
    paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n")]
    text = ""
    for paragraph in paragraphs:
        if not paragraph or ">>>" in paragraph or paragraph.count("  ") or ":param" in paragraph:
            break
        if len(text) + len(paragraph) > MAX_CHARS:
            break
        text = f"{text} {paragraph}".strip()
    if len(text) < MIN_CHARS or not text.isascii() or "::" in text or not text.endswith("."):
        return None
    if len(SENTENCE_END.split(text)) < 2:  # a page needs a key sentence besides its first
        return None
    return text


def entries():
    seen: set[str] = set()
    for module_name in stdlib_modules():
        try:
            module = importlib.import_module(module_name)
        except Exception:  # optional C extensions, platform-only modules
            continue
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr, None)
            if str(getattr(obj, "__module__", None) or module_name) != module_name:
                continue  # re-exports: documented where they live
            candidates = [(f"{module_name}.{attr}", obj)]
            if inspect.isclass(obj):
                candidates += [(f"{module_name}.{attr}.{m}", getattr(obj, m, None))
                               for m in sorted(vars(obj)) if not m.startswith("_")]
            for name, target in candidates:
                doc = inspect.getdoc(target) if callable(target) or inspect.isclass(target) else None
                text = clean(doc) if doc else None
                if text and text not in seen:
                    seen.add(text)
                    yield {"name": name, "module": module_name, "text": text}


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    rows = list(entries())
    json.dump({"source": f"Python {sys.version.split()[0]} standard-library docstrings (PSF License)",
               "entries": rows}, sys.stdout, indent=0, sort_keys=True)
    sys.stdout.write("\n")
    print(f"{len(rows)} entries", file=sys.stderr)
