"""``dalip sweep`` and ``dalip interpolate``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dalip.errors import ConfigError
from dalip.sweep.interpolate import interpolate_and_evaluate
from dalip.sweep.runner import plan_runs, run_sweep
from dalip.sweep.spec import load_sweep
from dalip.sweep.summary import summarise_sweep

__all__ = ["register"]


def _sweep(args: argparse.Namespace) -> int:

    if args.seeds and min(args.seeds) < 0:
        raise ConfigError(f"--seeds must be >= 0, got {' '.join(str(s) for s in args.seeds if s < 0)}")
    spec = load_sweep(args.sweep)
    output = Path(args.output)
    runs = plan_runs(spec, output, args.seeds, args.smoke, args.overrides, args.variants)
    print(f"sweep {spec.path}: {len(spec.variants if not args.variants else args.variants)} variants x "
          f"{len(args.seeds or spec.seeds)} seeds = {len(runs)} runs in {output}", flush=True)
    failed = run_sweep(runs)
    command = "dalip " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["sweep"] else ""
    notes = [f"sweep file: `{spec.path}`"] + ([f"command: `{command}`"] if command else [])
    for path in summarise_sweep(runs, output, f"Sweep {spec.path.stem}", notes):
        print(f"written {path}")
    if failed:
        print(f"dalip sweep: {len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _interpolate(args: argparse.Namespace) -> int:

    interpolate_and_evaluate(args.start, args.end, args.ratios, Path(args.output), args.overrides,
                             metric=args.metric, domain=args.domain, general=args.general, overwrite=args.overwrite)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` and ``interpolate`` sub-commands."""
    sweep = commands.add_parser("sweep", help="train every variant x seed of a sweep file, then tabulate and plot")
    sweep.add_argument("--sweep", required=True, help="sweep file (see examples/ablations/*.yaml)")
    sweep.add_argument("--output", required=True, help="sweep folder: <variant>/seed<k>/ runs, results.md/.csv/.png")
    sweep.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the sweep file's)")
    sweep.add_argument("--variants", nargs="+", default=None, help="run only these variants")
    sweep.add_argument("--smoke", action="store_true", help="tiny runs (2 steps of 8 pairs) to test a sweep quickly")
    sweep.add_argument("overrides", nargs="*", help="config overrides for every run: section.key=value")
    sweep.set_defaults(run=_sweep)

    interp = commands.add_parser("interpolate", help="blend two models' weights at several ratios and evaluate each")
    interp.add_argument("--start", required=True,
                        help="start weights: a checkpoint, or 'init' (the end run's step-0 weights from its config and seed)")
    interp.add_argument("--end", required=True, help="the fine-tuned checkpoint.pt (its config builds the model)")
    interp.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="t in theta = (1 - t) start + t end (default: 0 0.25 0.5 0.75 1)")
    interp.add_argument("--output", required=True, help="folder: ratio_<t>/eval.json, interpolation.md/.csv/.png")
    interp.add_argument("--domain", default=None, help="eval set on the plot's x axis (default: the run's first)")
    interp.add_argument("--general", default=None, help="eval set on the plot's y axis (default: the run's second)")
    interp.add_argument("--overwrite", action="store_true",
                        help="replace a previous interpolation in OUTPUT (its ratio_<t>/ folders, tables and plot; "
                        "other files stay); without it a non-empty OUTPUT is refused")
    interp.add_argument("--metric", default=None,
                        help="plotted metric, e.g. zero_shot/top1 (default: the domain set's first <task>/top1)")
    interp.add_argument("overrides", nargs="*", help="config overrides for evaluation, e.g. eval.batch_size=64")
    interp.set_defaults(run=_interpolate)
