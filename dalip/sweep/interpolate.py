"""Weight-space interpolation between a start and a fine-tuned model (WiSE-FT style).

``theta(t) = (1 - t) * theta_start + t * theta_end`` for every floating tensor;
integer buffers (batch-norm counters) come from the end model. The model is
built from the end checkpoint's config. The start is either

- ``"init"``: the end run's own step-0 weights, rebuilt exactly as ``dalip train``
  builds them (``torch.manual_seed(run.seed)`` then the model of the config,
  including its ``model.pretrained`` file), so no step-0 checkpoint is needed; or
- a checkpoint (a dalip ``checkpoint.pt`` or an open_clip checkpoint of the
  towers): tensors it lacks (e.g. heads a plain CLIP start does not have, or
  a different shape) start from the end run's step-0 weights as above.

A useful pair: a run trained on general (or mixed) data as the start and the
same model fine-tuned on domain data (``model.pretrained=<start>/checkpoint.pt``)
as the end; the curve then shows how much domain accuracy each step towards the
fine-tuned weights buys and how much general accuracy it costs.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from dalip.errors import ConfigError, RunFolderError
from dalip.io import folder_entries, preview
from dalip.models import DALIPModel, get_tokenizer
from dalip.models.checkpoint import read_state_dict
from dalip.runs import build_model
from dalip.runs.config import TrainConfig
from dalip.runs.data import run_eval_sets, zero_shot_sets
from dalip.runs.evaluate import evaluate_run
from dalip.runs.load import read_run
from dalip.sweep.aggregate import collect, summarise_runs, write_tables
from dalip.sweep.plots import headline_embedding, plot_tradeoff

__all__ = ["OUTPUT_FILES", "blend", "claim_output", "initial_state", "interpolate_and_evaluate", "start_state"]

INIT = "init"
OUTPUT_FILES = re.compile(r"interpolation\.(md|csv|png)|ratio_[0-9.e+-]+")
"""The names an interpolation writes in its output folder (what ``--overwrite`` deletes, and only that)."""


def claim_output(output: Path, overwrite: bool) -> list[Path]:
    """Check that an interpolation may write ``output``; with ``overwrite``, delete a previous one's files.

    The run-folder rule of ``dalip train`` / ``export``: a non-empty folder is refused unless
    ``overwrite``, which deletes the `OUTPUT_FILES` there (``ratio_<t>/`` folders, the tables
    and the plot) and leaves every other file alone, so no stale ratio survives a rerun.

    Returns:
        The deleted paths.

    Raises:
        RunFolderError: ``output`` is not empty and ``overwrite`` is not set.
    """
    found = folder_entries(output)
    if found and not overwrite:
        raise RunFolderError(f"--output {output} is not empty ({preview(found)}); pass --overwrite to replace a previous interpolation there, or choose another "
                             "--output")
    own = [output / name for name in found if OUTPUT_FILES.fullmatch(name)]
    if own:
        print(f"--overwrite: deleting the previous interpolation in {output} ({preview([p.name for p in own])})",
              flush=True)
    for path in own:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return own


def initial_state(config: TrainConfig) -> dict[str, Tensor]:
    """The step-0 weights of a run of `config` (same seed and construction as ``train``)."""
    torch.manual_seed(config.run.seed)
    return {k: v.detach().clone() for k, v in build_model(config).state_dict().items()}


def start_state(start: str | Path, config: TrainConfig, end: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The start weights for every key of `end`, and the keys filled from the step-0 weights."""
    init = initial_state(config)
    if str(start) == INIT:
        return init, []

    given = read_state_dict(start)
    if given and not any(k.startswith("clip.") for k in given):  # an open_clip checkpoint of the towers
        given = {f"clip.{k}": v for k, v in given.items()}
    state, filled = {}, []
    for key, value in end.items():
        if key in given and given[key].shape == value.shape:
            state[key] = given[key]
        else:
            state[key] = init[key]
            filled.append(key)
    return state, filled


def blend(start: dict[str, Tensor], end: dict[str, Tensor], t: float) -> dict[str, Tensor]:
    """``(1 - t) * start + t * end`` for floating tensors; other tensors from `end`."""
    return {
        k: torch.lerp(start[k].to(v.dtype), v, t) if v.is_floating_point() else v.clone()
        for k, v in end.items()
    }


def _tradeoff_points(rows, metric: str, domain: str, general: str) -> list[tuple[float, float, float]]:
    points = []
    for label in dict.fromkeys(r.variant for r in rows):
        mine = [r for r in rows if r.variant == label]
        emb = headline_embedding([r.embedding for r in mine])
        by_subset = {r.subset: r.mean.get(metric) for r in mine if r.embedding == emb}
        if by_subset.get(domain) is not None and by_subset.get(general) is not None:
            points.append((float(label.removeprefix("t=")), by_subset[domain], by_subset[general]))
    return points


def _tradeoff_axes(results: dict, domain: str | None, general: str | None,
                   metric: str | None) -> tuple[str, str, str]:
    """The plotted eval sets and metric: as given, else the first two sets and their first top-1 metric."""
    subsets = list(next(iter(results.values()), {}))
    if domain is None or general is None:
        if len(subsets) < 2:
            raise ConfigError(f"the trade-off plot needs two eval sets (domain and general), the run has {subsets}; "
                             "add one with eval.zero_shot")
        domain, general = domain or subsets[0], general or next(s for s in subsets if s != domain)
    missing = [s for s in (domain, general) if s not in subsets]
    if missing:
        raise ConfigError(f"eval set(s) {missing} not evaluated; the run has {subsets}")
    if metric is None:
        metrics = next(iter(results.values()))[domain]
        metric = next((k for k in metrics if k.endswith("/top1")), "image_to_text_R@1")
    return domain, general, metric


def interpolate_and_evaluate(
    start: str | Path, end: str | Path, ratios: Sequence[float], output: Path,
    overrides: list[str] | None = None, metric: str | None = None,
    domain: str | None = None, general: str | None = None, overwrite: bool = False,
) -> list[Path]:
    """Evaluate the blend at every ratio; write ``ratio_<t>/eval.json``, ``interpolation.md/.csv/.png``.

    The trade-off plot puts ``metric`` of the ``domain`` eval set against that of the
    ``general`` one; by default the run's first two eval sets (in the order the dataset
    and ``eval.zero_shot`` give them: ``twemoji-domain`` / ``twemoji-general`` for
    Twemoji, ``val`` / the first ``eval.zero_shot`` set for a labelled folder) and
    their first ``<task>/top1`` metric.

    A non-empty ``output`` is refused unless ``overwrite``, which first deletes what a
    previous interpolation wrote there (`claim_output`).

    Raises:
        FileNotFoundError: a checkpoint is missing.
        ConfigError: bad overrides.
        RunFolderError: ``output`` is not empty and ``overwrite`` is not set.
        ValueError: a ratio outside [0, 1].
    """
    bad = [t for t in ratios if not 0.0 <= t <= 1.0]
    if bad:
        raise ConfigError(f"interpolation ratios must be in [0, 1], got {bad}")
    if not overwrite:
        claim_output(output, overwrite=False)  # refused before any model is built
    if not Path(end).is_file():
        raise FileNotFoundError(f"end checkpoint not found: {end}")
    state, config = read_run(end, overrides)
    end_weights: dict[str, Tensor] = state["model"]
    start_weights, filled = start_state(start, config, end_weights)
    if filled:
        print(f"{len(filled)} tensors absent from {start} start from the end run's step-0 weights: {filled[:4]} ...")
    model = build_model(config, load_weights=False)  # every weight comes from the blend
    eval_sets = _checked_eval_sets(config, model, domain, general)
    claim_output(output, overwrite)  # after every check: a failed call deletes nothing
    output.mkdir(parents=True, exist_ok=True)
    folders, results = _evaluate_blends(model, config, eval_sets, (start_weights, end_weights), ratios, output)
    notes = [f"start: `{start}`", f"end: `{end}`", "theta(t) = (1 - t) start + t end"]
    if filled:
        notes.append(f"{len(filled)} tensors absent from the start model start from the end run's step-0 weights")
    return _write_report(folders, output, notes, _tradeoff_axes(results, domain, general, metric))


def _checked_eval_sets(config: TrainConfig, model: DALIPModel, domain: str | None, general: str | None) -> dict:
    """The run's eval sets, after checking that ``--domain`` / ``--general`` name sets of the run.

    The check comes before any evaluation, not after all of them.
    """
    eval_sets = run_eval_sets(config, model)
    names = [*eval_sets, *zero_shot_sets(config)]
    unknown = [s for s in (domain, general) if s is not None and s not in names]
    if unknown:
        raise ConfigError(f"--domain/--general: eval set(s) {unknown} are not in the run; its sets: {names}")
    return eval_sets


def _evaluate_blends(
    model: DALIPModel, config: TrainConfig, eval_sets: dict, weights: tuple[dict[str, Tensor], dict[str, Tensor]],
    ratios: Sequence[float], output: Path,
) -> tuple[list[tuple[str, int, Path]], dict]:
    """Evaluate ``model`` with the blend of the (start, end) ``weights`` at every ratio into ``ratio_<t>/eval.json``.

    Returns:
        ``(label, seed, folder)`` of every ratio (for `collect`) and the last ratio's results.
    """
    tokenizer = get_tokenizer(config.model.name)
    folders, results = [], {}
    for i, t in enumerate(sorted(set(ratios))):
        print(f"[interpolate {i + 1}/{len(set(ratios))}] t = {t:g}", flush=True)
        model.load_state_dict(blend(*weights, t))
        folder = output / f"ratio_{t:g}"
        results = evaluate_run(model.eval(), tokenizer, eval_sets, config, folder / "eval.json")
        folders.append((f"t={t:g}", 0, folder))
    return folders, results


def _write_report(folders: list[tuple[str, int, Path]], output: Path, notes: list[str],
                  axes: tuple[str, str, str]) -> list[Path]:
    """``interpolation.md/.csv`` (every ratio's results) and ``interpolation.png`` (the trade-off along ``axes``)."""
    domain, general, metric = axes
    rows = summarise_runs(collect(folders))
    md, csv = write_tables(rows, output, "interpolation", "Weight interpolation", notes)
    label = f"{metric} top-1" if not metric.endswith("top1") else metric
    png = plot_tradeoff(_tradeoff_points(rows, metric, domain, general), output / "interpolation.png",
                        f"{domain} {label}", f"{general} {label}")
    for path in (md, csv, png):
        print(f"written {path}")
    return [md, csv, png]
