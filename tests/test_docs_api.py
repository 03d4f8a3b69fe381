"""Every dotted ``dalip.…`` name the documentation points at exists (no model is built).

The names come from three places:

- the mkdocstrings directives of the docs (``::: dalip.runs.load``),
- the backticked names and autorefs of the docs pages (`` `dalip.runs.load_run` ``,
  ``[text][dalip.train.loop.train]``),
- the backticked names in the docstrings of dalip's own modules, read with ``ast``.

A name resolves when its longest importable module prefix imports and the rest is
reached by attribute access (a dataclass field without a default counts as present); a
deprecated alias (one that warns on access) does not count.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "dalip"

DIRECTIVE = re.compile(r"^\s*:::\s+(dalip(?:\.\w+)*)\s*$")
DOTTED = r"dalip(?:\.\w+)+"
# `dalip.x.y`, ``dalip.x.y``, `dalip.x.y(...)` (a call shown inline) and [text][dalip.x.y]
BACKTICKED = re.compile(rf"`({DOTTED})(?![\w.])|\]\[({DOTTED})\]")


def resolve(name: str) -> object:
    """The object ``name`` names: the longest importable module prefix, then attributes.

    Raises:
        LookupError: no prefix is a module, an attribute is missing (the message names it), or
            it is a deprecated alias.
    """
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is None or not (module_name + ".").startswith(err.name + "."):
                raise  # a module that exists failed to import one of its own imports
            continue
        break
    else:
        raise LookupError(f"{name}: no importable module prefix")
    for i, attr in enumerate(parts[cut:], start=cut):
        fields = getattr(obj, "__dataclass_fields__", {}) if dataclasses.is_dataclass(obj) else {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = hasattr(obj, attr)
            obj_attr = getattr(obj, attr, None)
        moved = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
        if moved:
            raise LookupError(f"{name}: a deprecated alias ({moved[0]})")
        if found:
            obj = obj_attr
        elif attr in fields:
            obj = fields[attr]
        else:
            raise LookupError(f"{name}: {'.'.join(parts[:i])} has no attribute {attr!r}")
    return obj


def _doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _directive_names() -> list[tuple[str, str]]:
    """``(where, name)`` of every ``::: dalip...`` line of the docs."""
    found = []
    for page in _doc_pages():
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            if match := DIRECTIVE.match(line):
                found.append((f"{page.relative_to(ROOT)}:{number}", match.group(1)))
    return found


def _backticked(text: str) -> list[tuple[int, str]]:
    """``(line offset, name)`` of every backticked dotted dalip name or autoref in ``text``."""
    return [(text.count("\n", 0, m.start()), m.group(1) or m.group(2)) for m in BACKTICKED.finditer(text)]


def _page_names() -> list[tuple[str, str]]:
    found = []
    for page in _doc_pages():
        for offset, name in _backticked(page.read_text()):
            found.append((f"{page.relative_to(ROOT)}:{offset + 1}", name))
    return found


def _docstring_names() -> list[tuple[str, str]]:
    """``(where, name)`` of the backticked dalip names in every docstring of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node, clean=False)
            if not doc:
                continue
            first = node.body[0].lineno if node.body else 1
            for offset, name in _backticked(doc):
                found.append((f"{path.relative_to(ROOT)}:{first + offset}", name))
    return found


def _unresolved(names: list[tuple[str, str]]) -> list[str]:
    bad, seen = [], {}
    for where, name in names:
        if name not in seen:
            try:
                resolve(name)
                seen[name] = None
            except LookupError as err:
                seen[name] = str(err)
        if seen[name] is not None:
            bad.append(f"{where}: {seen[name]}")
    return bad


def test_the_resolver_refuses_wrong_names():
    assert resolve("dalip.runs.load.load_run") is importlib.import_module("dalip.runs.load").load_run
    assert resolve("dalip.runs.load") is importlib.import_module("dalip.runs.load")
    with pytest.raises(LookupError, match="deprecated alias"):
        resolve("dalip.train.load_config")  # kept for old scripts, not for the docs
    for wrong in ("dalip.runs.no_such_name", "dalip.no_such_module.load_run", "dalip.train.config.load_config",
                  "dalip.data.DataSpec"):
        with pytest.raises(LookupError):
            resolve(wrong)
    assert _unresolved([("here:1", "dalip.runs.load_run"), ("here:2", "dalip.runs.lod_run")]) == [
        "here:2: dalip.runs.lod_run: dalip.runs has no attribute 'lod_run'"
    ]


def test_the_extraction_finds_names():
    text = "Use `dalip.runs.load_run` or ``dalip.io.atomic_write``, [`train`][dalip.train.train], `dalip.x.y(1)`; " \
           "not `dalip` alone nor dalip.bare.words."
    assert [name for _, name in _backticked(text)] == [
        "dalip.runs.load_run", "dalip.io.atomic_write", "dalip.train.train", "dalip.x.y",
    ]
    assert len(_directive_names()) > 50 and len(_page_names()) > 5 and len(_docstring_names()) > 5


def test_every_mkdocstrings_directive_resolves():
    bad = _unresolved(_directive_names())
    assert not bad, "API reference names that do not exist:\n" + "\n".join(bad)


def test_every_backticked_name_in_the_docs_resolves():
    bad = _unresolved(_page_names())
    assert not bad, "docs pages name what does not exist:\n" + "\n".join(bad)


def test_every_backticked_name_in_the_docstrings_resolves():
    bad = _unresolved(_docstring_names())
    assert not bad, "docstrings name what does not exist:\n" + "\n".join(bad)
