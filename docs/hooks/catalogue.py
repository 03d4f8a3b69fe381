"""MkDocs hook: pages generated from the code at build time.

* ``components.md``: the marker ``<!-- dalip:pooler-catalogue -->`` is replaced by
  a catalogue of every pooler in ``dalip.pooling.POOLERS`` (name, description,
  constructor parameters with their defaults, output size for ``dim=768``).
* ``components.md``: the marker ``<!-- dalip:loss-catalogue -->`` is replaced by a
  catalogue of every loss in ``dalip.losses.LOSSES`` (name, description,
  constructor parameters with their defaults, the parts and weights of the loss
  built with its defaults).
* ``benchmarks.md``: the marker ``<!-- dalip:benchmark-results -->`` is replaced by
  the tables in ``benchmarks/results/*.md`` except the ablation ones (or a note
  that there are none yet).
* ``reference/cli.md``: the marker ``<!-- dalip:cli-help -->`` is replaced by the
  ``--help`` text of ``dalip`` and of each of its sub-commands.
* ``ablations.md``: the marker ``<!-- dalip:ablation-results -->`` is replaced by
  the tables in ``benchmarks/results/{ablation,sweep}*.md``.

Every ``.md`` file under ``benchmarks/results/`` is picked up on the next build;
nothing needs registering. A plot next to a table (``<stem>.png`` beside
``<stem>.md``) is copied to the site as ``results/<stem>.png`` and shown under its
table; pages can link it as ``results/<stem>.png`` from the site root.

Registered in ``mkdocs.yml`` under ``hooks:``; nothing here is copied to the site.
"""

from __future__ import annotations

import inspect
import logging
import re
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.dalip")

POOLER_MARKER = "<!-- dalip:pooler-catalogue -->"
BENCH_MARKER = "<!-- dalip:benchmark-results -->"
LOSS_MARKER = "<!-- dalip:loss-catalogue -->"
ABLATION_MARKER = "<!-- dalip:ablation-results -->"
CLI_MARKER = "<!-- dalip:cli-help -->"
# result files that belong on the Ablation results page rather than Benchmarks
ABLATION_PATTERNS = ("ablation*.md", "sweep*.md")
CATALOGUE_DIM = 768
# where the plots of benchmarks/results/ are in the site (relative to the site root)
RESULTS_URI = "results"

_root: Path = Path(__file__).resolve().parents[2]


def on_config(config: Any) -> Any:
    global _root
    _root = Path(config.config_file_path).resolve().parent
    if str(_root) not in sys.path:  # import the checkout being documented
        sys.path.insert(0, str(_root))
    return config


def on_files(files: Any, config: Any) -> Any:
    # the plots of the result tables, served as results/<stem>.png
    from mkdocs.structure.files import File

    for png in sorted((_root / "benchmarks" / "results").glob("*.png")):
        uri = f"{RESULTS_URI}/{png.name}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    # `mkdocs serve`: rebuild when the code or the benchmark tables change.
    for sub in ("dalip", "examples", "benchmarks/results"):
        if (_root / sub).is_dir():
            server.watch(str(_root / sub))
    return server


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    uri = page.file.src_uri
    if POOLER_MARKER in markdown:
        markdown = markdown.replace(POOLER_MARKER, pooler_catalogue())
    if LOSS_MARKER in markdown:
        markdown = markdown.replace(LOSS_MARKER, loss_catalogue())
    elif uri == "components.md":
        log.warning("components.md lost its %s marker", LOSS_MARKER)
    if BENCH_MARKER in markdown:
        markdown = markdown.replace(BENCH_MARKER, benchmark_results())
    elif uri == "benchmarks.md":
        log.warning("benchmarks.md lost its %s marker", BENCH_MARKER)
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_help())
    if ABLATION_MARKER in markdown:
        markdown = markdown.replace(ABLATION_MARKER, ablation_results())
    elif uri == "ablations.md":
        log.warning("ablations.md lost its %s marker", ABLATION_MARKER)
    return markdown


# ---------------------------------------------------------------- poolers


def _annotation(p: inspect.Parameter) -> str:
    ann = p.annotation
    if ann is inspect.Parameter.empty:
        return ""
    return ann if isinstance(ann, str) else getattr(ann, "__name__", repr(ann))


def _default(p: inspect.Parameter) -> str:
    if p.default is inspect.Parameter.empty:
        return "*required*"
    return f"`{p.default!r}`"


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    if n >= 1_000:
        return f"{n / 1e3:.1f} k"
    return str(n)


def _cell(text: str) -> str:
    """Text for a table cell: escape pipes, except inside `code` spans (the
    tables extension already ignores those)."""
    parts = re.split(r"(`+[^`]*`+)", text.replace("\n", " "))
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def _arg_docs(constructor: Any) -> dict[str, str]:
    """``{parameter: description}`` from the Google-style ``Args:`` of a docstring."""
    doc = inspect.getdoc(constructor) or ""
    try:
        import griffe

        # The docstring lives outside any loaded module here: no warnings about
        # missing types (the signature has them).
        sections = griffe.Docstring(doc).parse("google", warnings=False)
    except Exception as err:  # an unparsable docstring must not break the site
        log.info("could not parse the docstring of %r: %s", constructor, err)
        return {}
    out: dict[str, str] = {}
    for section in sections:
        if section.kind.value != "parameters":
            continue
        for p in section.value:
            for name in p.name.split(","):  # "features, rank: see `ContrastiveLoss`."
                out.setdefault(name.strip(), " ".join(p.description.split()))
    return out


def _inherited_arg_docs(cls: Any) -> dict[str, str]:
    """`_arg_docs` of a class, completed from its base classes' docstrings (a
    subclass's own text wins, except a bare "see `Base`" pointer)."""
    out: dict[str, str] = {}
    for klass in getattr(cls, "__mro__", (cls,)):
        if klass.__module__.split(".")[0] != "dalip":
            continue
        for name, text in _arg_docs(klass).items():
            if name not in out or out[name].lower().startswith("see "):
                out[name] = text
    return out


def _preset_note(entry, cls, qual: str) -> str:
    """A line naming the class and preset arguments of a registered preset (else empty)."""
    if not entry.defaults:
        return ""
    args = ", ".join(f"{k}={v!r}" for k, v in entry.defaults.items())
    return f"\nPreset of [`{cls.__name__}`][{qual}]: `{cls.__name__}({args})`.\n"


def _parameter_rows(entry: Any, described: dict[str, str]) -> list[str]:
    rows = ["| parameter | type | default | description |", "|---|---|---|---|"]
    for p in entry.signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = _default(p)
        if p.name in entry.defaults:
            default += " (preset)"
        ann = f"`{_annotation(p)}`" if _annotation(p) else ""
        rows.append(f"| `{p.name}` | {ann} | {default} | {_cell(described.get(p.name, ''))} |")
    return rows


def _component_section(entry: Any, anchor: str, desc: str, qual: str, facts: list[str]) -> str:
    """One component's catalogue section: heading, description, preset note, facts, parameter table."""
    cls = entry.constructor
    rows = _parameter_rows(entry, _inherited_arg_docs(cls))
    preset = _preset_note(entry, cls, qual)
    bullets = "".join(f"- {fact}\n" for fact in [f"class: [`{qual}`][{qual}]", *facts])
    return f"### `{entry.name}` {{ #{anchor} }}\n\n{desc}\n{preset}\n{bullets}\n" + "\n".join(rows) + "\n"


def _catalogue(kind: str, names: list[str], summary: list[str], sections: list[str]) -> str:
    """The registered names, the summary table, then every section."""
    head = f"{len(names)} {kind} are registered: {', '.join(f'`{n}`' for n in names)}.\n\n" + "\n".join(summary) + "\n"
    return head + "\n" + "\n".join(sections)


def pooler_catalogue() -> str:
    import torch

    from dalip.pooling import POOLERS

    names = POOLERS.list()
    summary = [
        f"| name | class | needs `guide` | `out_dim` (dim={CATALOGUE_DIM}) | parameters | description |",
        "|---|---|---|---|---|---|",
    ]
    sections = []
    torch.manual_seed(0)
    for name in names:
        entry = POOLERS.get(name)
        cls = entry.constructor
        qual = f"dalip.pooling.{cls.__name__}"
        with torch.device("meta"):  # shapes only: no memory, no init cost
            pooler = POOLERS.create(name, dim=CATALOGUE_DIM)
        n_params = sum(p.numel() for p in pooler.parameters())
        guide = "yes" if pooler.requires_guide else "no"
        desc = entry.description or "(no description)"
        summary.append(
            f"| [`{name}`](#{name}) | [`{cls.__name__}`][{qual}] | {guide} | {pooler.out_dim} "
            f"| {_count(n_params)} | {_cell(desc)} |"
        )

        sections.append(_component_section(entry, name, desc, qual, [
            f"needs `guide`: {guide}",
            f"`create_pooler(\"{name}\", dim={CATALOGUE_DIM})`: `out_dim = {pooler.out_dim}`, "
            f"{_count(n_params)} parameters",
        ]))
    return _catalogue("poolers", names, summary, sections)


# ---------------------------------------------------------------- losses


def _public_path(cls: Any, package: str) -> str:
    """``package.Name`` when the package re-exports the class, else its own module path."""
    import importlib

    module = importlib.import_module(package)
    if getattr(module, cls.__name__, None) is cls:
        return f"{package}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _loss_parts(entry: Any) -> str:
    """The parts (and their weights) of the loss built with its defaults."""
    required = [
        p.name for p in entry.signature.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        return "set by " + ", ".join(f"`{n}`" for n in required)
    from dalip.losses import LOSSES

    try:
        loss = LOSSES.create(entry.name)
    except Exception as err:  # a loss that cannot be built bare must not break the site
        log.info("could not build loss %r with its defaults: %s", entry.name, err)
        return ""
    return ", ".join(f"`{k}` ({w:g})" for k, w in loss.weights.items())


def loss_catalogue() -> str:
    from dalip.losses import LOSSES

    names = LOSSES.list()
    summary = [
        "| name | class | parts (weight) with the defaults | parameters | description |",
        "|---|---|---|---|---|",
    ]
    sections = []
    for name in names:
        entry = LOSSES.get(name)
        cls = entry.constructor
        qual = _public_path(cls, "dalip.losses")
        desc = entry.description or "(no description)"
        parts = _loss_parts(entry)
        n_args = sum(
            1 for p in entry.signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        summary.append(
            f"| [`{name}`](#loss-{name}) | [`{cls.__name__}`][{qual}] | {parts} | {n_args} | {_cell(desc)} |"
        )
        sections.append(_component_section(entry, f"loss-{name}", desc, qual, [
            f"parts (weight) of `create_loss(\"{name}\")`: {parts or 'see the class'}",
        ]))
    return _catalogue("losses", names, summary, sections)


# ---------------------------------------------------------------- command line


def cli_help() -> str:
    import argparse
    import os

    from dalip.cli import build_parser

    os.environ.setdefault("COLUMNS", "100")  # stable wrapping of the help text
    parser = build_parser()
    parser.prog = "dalip"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    blocks = [f"## `dalip`\n\n```text\n{parser.format_help().rstrip()}\n```\n"]
    for name, command in sub.choices.items():
        blocks.append(f"## `dalip {name}`\n\n```text\n{command.format_help().rstrip()}\n```\n")
    return "\n".join(blocks)


# ---------------------------------------------------------------- benchmarks

_FENCE = re.compile(r"^\s*(```|~~~)")


def _demote(text: str) -> str:
    """Push every markdown heading down one level (outside code fences)."""
    out, in_fence = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            line = "#" + line
        out.append(line)
    return "\n".join(out)


def _result_files(ablation: bool) -> list[Path]:
    folder = _root / "benchmarks" / "results"
    claimed = {p for pattern in ABLATION_PATTERNS for p in folder.glob(pattern)}
    return sorted(claimed if ablation else set(folder.glob("*.md")) - claimed)


def _render_results(results: list[Path]) -> str:
    parts = []
    for path in results:
        text = path.read_text(encoding="utf-8").strip()
        if not text.lstrip().startswith("#"):
            text = f"# {path.stem.replace('_', ' ')}\n\n{text}"
        plot = path.with_suffix(".png")
        if plot.is_file():  # result pages are at the site root: results/<stem>.png
            text += f"\n\n![{path.stem.replace('_', ' ')}]({RESULTS_URI}/{plot.name})"
        parts.append(_demote(text) + f"\n\n<small>Source: `benchmarks/results/{path.name}`</small>\n")
    return "\n\n".join(parts)


def ablation_results() -> str:
    results = _result_files(ablation=True)
    if not results:
        return (
            '!!! note "No ablation results yet"\n'
            "    No ablation tables have been committed under `benchmarks/results/` yet\n"
            "    (files named `ablation*.md` or `sweep*.md`). Once one is, it appears\n"
            "    here on the next documentation build.\n"
        )
    return _render_results(results)


def benchmark_results() -> str:
    results = _result_files(ablation=False)
    if not results:
        return (
            '!!! note "No results yet"\n'
            "    No result tables have been committed under `benchmarks/results/` yet.\n"
            "    Once a benchmark writes `benchmarks/results/<name>.md`, it appears here\n"
            "    on the next documentation build.\n"
        )
    return _render_results(results)
