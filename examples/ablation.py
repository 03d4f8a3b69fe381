"""Assemble an ablation in Python and run it with ``dalip.sweep``: variants x seeds, table, plot.

The same thing as a sweep file (``examples/ablations/*.yaml``) run by ``dalip sweep``:
here the variants are built in code (a loop over second-order poolers), written
out as a sweep file for the record, run, and summarised.

    python examples/ablation.py --output runs/ablation-py                  # 4 variants x 2 seeds, ~25 min on CPU
    python examples/ablation.py --output /tmp/abl --smoke \\
        --base tests/assets/tiny-train.yaml                                # seconds (CI)
"""

from __future__ import annotations

import argparse

# --8<-- [start:imports]
from pathlib import Path

import yaml

from dalip.sweep import load_sweep, plan_runs, run_sweep
from dalip.sweep.summary import summarise_sweep

# --8<-- [end:imports]

ROOT = Path(__file__).resolve().parent


# --8<-- [start:assemble]
def assemble(base: str, poolers: list[str], seeds: list[int]) -> dict:
    """A sweep: plain CLIP plus [cls] + each second-order pooler."""
    variants = {"plain_clip": ["model.second_order=null", "model.alpha=1"]}
    for pooler in poolers:
        options = "{heads: 4, reduced_dim: 16}" if pooler == "mbdc" else "{reduced_dim: 16}"
        variants[f"cls_{pooler}"] = [f"model.second_order={pooler}", f"model.second_options={options}"]
    return {"base": str(Path(base).resolve()) if Path(base).is_file() else base, "seeds": seeds,
            "variants": variants}
# --8<-- [end:assemble]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/ablation-py")
    parser.add_argument("--base", default=str(ROOT / "ablations" / "base.yaml"), help="base config")
    parser.add_argument("--poolers", nargs="+", default=["cov", "bdc", "mbdc"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--smoke", action="store_true", help="2 steps per run, first pooler only")
    args = parser.parse_args()
    poolers = args.poolers[:1] if args.smoke else args.poolers
    failed = run_ablation(args.base, poolers, args.seeds, Path(args.output), args.smoke)
    if failed:
        raise SystemExit(f"failed runs: {failed}")


# --8<-- [start:run]
def run_ablation(base: str, poolers: list[str], seeds: list[int], output: Path, smoke: bool = False) -> list[str]:
    """Write the sweep file, run every variant x seed, summarise; returns the failed runs."""
    output.mkdir(parents=True, exist_ok=True)
    sweep_file = output / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(assemble(base, poolers, seeds), sort_keys=False))
    spec = load_sweep(sweep_file)  # validates every variant before anything runs
    runs = plan_runs(spec, output, smoke=smoke)
    failed = run_sweep(runs)
    for path in summarise_sweep(runs, output, "Ablation: plain CLIP vs [cls] + second order"):
        print(f"written {path}")
    print((output / "results.md").read_text())
    return failed
# --8<-- [end:run]


if __name__ == "__main__":
    main()
