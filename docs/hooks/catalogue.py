"""MkDocs hook: pages generated from the code at build time.

* ``components.md``: the marker ``<!-- dalip:pooler-catalogue -->`` is replaced by
  a catalogue of every pooler in ``dalip.pooling.POOLERS`` (name, description,
  constructor parameters with their defaults, output size for ``dim=768``).
* ``benchmarks.md``: the marker ``<!-- dalip:benchmark-results -->`` is replaced by
  the tables in ``benchmarks/results/*.md`` (or a note that there are none yet).

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
CATALOGUE_DIM = 768

_root: Path = Path(__file__).resolve().parents[2]


def on_config(config: Any) -> Any:
    global _root
    _root = Path(config.config_file_path).resolve().parent
    if str(_root) not in sys.path:  # import the checkout being documented
        sys.path.insert(0, str(_root))
    return config


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
    if BENCH_MARKER in markdown:
        markdown = markdown.replace(BENCH_MARKER, benchmark_results())
    elif uri == "benchmarks.md":
        log.warning("benchmarks.md lost its %s marker", BENCH_MARKER)
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
    return {
        p.name: " ".join(p.description.split())
        for section in sections
        if section.kind.value == "parameters"
        for p in section.value
    }


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

        described = _arg_docs(cls)
        rows = ["| parameter | type | default | description |", "|---|---|---|---|"]
        for p in entry.signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            default = _default(p)
            if p.name in entry.defaults:
                default += " (preset)"
            ann = f"`{_annotation(p)}`" if _annotation(p) else ""
            rows.append(f"| `{p.name}` | {ann} | {default} | {_cell(described.get(p.name, ''))} |")
        preset = ""
        if entry.defaults:
            args = ", ".join(f"{k}={v!r}" for k, v in entry.defaults.items())
            preset = f"\nPreset of [`{cls.__name__}`][{qual}]: `{cls.__name__}({args})`.\n"
        sections.append(
            f"### `{name}` {{ #{name} }}\n\n"
            f"{desc}\n{preset}\n"
            f"- class: [`{qual}`][{qual}]\n"
            f"- needs `guide`: {guide}\n"
            f"- `create_pooler(\"{name}\", dim={CATALOGUE_DIM})`: `out_dim = {pooler.out_dim}`, "
            f"{_count(n_params)} parameters\n\n" + "\n".join(rows) + "\n"
        )
    head = (
        f"{len(names)} poolers are registered: {', '.join(f'`{n}`' for n in names)}.\n\n"
        + "\n".join(summary)
        + "\n"
    )
    return head + "\n" + "\n".join(sections)


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


def benchmark_results() -> str:
    results = sorted((_root / "benchmarks" / "results").glob("*.md"))
    if not results:
        return (
            '!!! note "No results yet"\n'
            "    No result tables have been committed under `benchmarks/results/` yet.\n"
            "    Once a benchmark writes `benchmarks/results/<name>.md`, it appears here\n"
            "    on the next documentation build.\n"
        )
    parts = []
    for path in results:
        text = path.read_text(encoding="utf-8").strip()
        if not text.lstrip().startswith("#"):
            text = f"# {path.stem.replace('_', ' ')}\n\n{text}"
        parts.append(_demote(text) + f"\n\n<small>Source: `benchmarks/results/{path.name}`</small>\n")
    return "\n\n".join(parts)
