"""The house rules of dalip's layout (docs/architecture.md), checked on the source.

- the import-linter contracts of pyproject.toml (layers, data kinds) hold;
- no import cycle among dalip's modules, function-level imports included;
- function-level imports only for third-party packages (heavy or optional), never dalip's own;
- no private name imported from another module;
- the generic data modules never mention a dataset kind by name (Twemoji lives in data/twemoji/);
- no function longer than 60 lines.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dalip"
MAX_FUNCTION_LINES = 60


def modules() -> Iterator[tuple[str, ast.Module, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), ast.parse(path.read_text()), path


def imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[ast.stmt, str, list[str], bool]]:
    """``(node, imported module, names, inside a function)`` for every import statement."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.stmt, str, list[str], bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = module.split(".")[: len(module.split(".")) - child.level + (1 if is_package else 0)]
                    base = ".".join(parent + ([child.module] if child.module else []))
                yield child, base, [a.name for a in child.names], in_function
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    yield child, alias.name, [], in_function
            yield from visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    yield from visit(tree, False)


def import_graph() -> dict[str, set[str]]:
    """Module -> the dalip modules it imports (``from pkg import submodule`` counts as the submodule)."""
    known = {name for name, _, _ in modules()}
    graph: dict[str, set[str]] = {}
    for name, tree, path in modules():
        targets = graph.setdefault(name, set())
        for _, base, names, _ in imports(tree, name, path.name == "__init__.py"):
            for target in [f"{base}.{n}" for n in names if f"{base}.{n}" in known] or [base]:
                if target in known and target != name:
                    targets.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_import_linter_contracts_are_kept():
    lint = shutil.which("lint-imports", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if lint is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]' installs import-linter")
    result = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0 and "BROKEN" not in result.stdout, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 0 kept" not in result.stdout


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_function_level_imports_included():
    assert cycles(import_graph()) == []


def test_function_level_imports_are_third_party_only():
    hidden = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {base}"
              for name, tree, path in modules()
              for node, base, _, in_function in imports(tree, name, path.name == "__init__.py")
              if in_function and (base == "dalip" or base.startswith("dalip."))]
    assert hidden == [], "import dalip's own modules at the top of the module:\n" + "\n".join(hidden)


def test_no_private_name_is_imported_from_another_module():
    private = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {base}.{n}"
               for name, tree, path in modules()
               for node, base, names, _ in imports(tree, name, path.name == "__init__.py")
               if base.startswith("dalip") for n in names if n.startswith("_") and n != "__version__"]
    assert private == [], "\n".join(private)


def test_generic_data_modules_never_name_twemoji():
    generic = [p for p in (PACKAGE / "data").glob("*.py") if p.name != "__init__.py"]
    assert len(generic) >= 8
    mentions = [f"{p.name}:{i}" for p in generic for i, line in enumerate(p.read_text().splitlines(), 1)
                if re.search("twemoji", line, re.IGNORECASE)]
    assert mentions == [], mentions


def test_no_function_is_longer_than_60_lines():
    long = []
    for _, tree, path in modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
                                f"({node.end_lineno - start + 1} lines)")
    assert long == [], "\n".join(long)


def test_names_that_moved_keep_working_for_one_release():
    import dalip.errors
    import dalip.runs
    import dalip.train

    for name, home in [("load_run", dalip.runs), ("load_config", dalip.runs), ("TrainConfig", dalip.runs),
                       ("build_model", dalip.runs), ("list_configs", dalip.runs), ("ConfigError", dalip.errors)]:
        with pytest.warns(DeprecationWarning, match=f"dalip.train.{name} moved to"):
            assert getattr(dalip.train, name) is getattr(home, name)
    with pytest.raises(AttributeError):
        dalip.train.no_such_name  # noqa: B018
