"""The quickstart training recipe, called from Python instead of ``dalip train``.

    python examples/quickstart_training.py --output runs/quickstart-py          # ~8 min on a 2-core CPU
    python examples/quickstart_training.py --output /tmp/qs --smoke             # 2 tiny steps (CI)

Any ``section.key=value`` override may follow, e.g. ``model.second_order=bdc "model.second_options={reduced_dim: 16}"``.
"""

from __future__ import annotations

import argparse

from dalip.runs import load_config
from dalip.sweep import SMOKE_OVERRIDES
from dalip.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/quickstart-py", help="run folder")
    parser.add_argument("--config", default="quickstart", help="shipped config name or YAML path")
    parser.add_argument("--smoke", action="store_true", help="2 steps of 8 pairs (the sweep's smoke size)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()

    config = load_config(args.config, (list(SMOKE_OVERRIDES) if args.smoke else []) + args.overrides)
    print(f"model {config.model.name}: first order {config.model.first_order}, second order "
          f"{config.model.second_order} {config.model.second_options}; {config.optim.steps} steps")
    results = train(config, args.output, resume=True)  # prints the table; a rerun continues a killed run
    for embedding, subsets in results.items():
        print(f"{embedding:>8}: " + ", ".join(f"{s} concepts top-1 {m['concepts/top1']:.1%}" for s, m in subsets.items()))


if __name__ == "__main__":
    main()
