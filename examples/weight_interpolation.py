"""Gain domain accuracy without losing general ability: interpolate general and domain-tuned weights.

1. ``general``: train the quickstart model on the general Twemoji subset only;
2. ``domain``: start from it (``model.pretrained``) and fine-tune on the domain subset only;
3. blend the two at several ratios, ``theta(t) = (1 - t) general + t domain``, evaluate
   every blend on both subsets and plot domain vs general zero-shot accuracy
   (``dalip interpolate`` does step 3 from the command line).

    python examples/weight_interpolation.py --output runs/interp-py            # ~10 min on a 2-core CPU
    python examples/weight_interpolation.py --output /tmp/ip --smoke \\
        --config tests/assets/tiny-train.yaml                                    # seconds (CI)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dalip.runs import load_config
from dalip.sweep import SMOKE_OVERRIDES
from dalip.sweep.interpolate import interpolate_and_evaluate
from dalip.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/interp-py")
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--steps", type=int, default=100, help="steps of each of the two trainings")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1])
    parser.add_argument("--smoke", action="store_true", help="2 tiny steps per training, 3 ratios")
    args = parser.parse_args()

    output = Path(args.output)
    size = list(SMOKE_OVERRIDES) if args.smoke else [f"optim.steps={args.steps}", "run.checkpoint_every=50"]
    ratios = [0, 0.5, 1] if args.smoke else args.ratios
    general = load_config(args.config, size + ["data.spec.subsets=[general]"])
    train(general, output / "general", resume=True)
    domain = load_config(args.config, size + [
        "data.spec.subsets=[domain]", f"model.pretrained={output / 'general' / 'checkpoint.pt'}",
        "optim.warmup_steps=0",
    ])
    train(domain, output / "domain", resume=True)
    paths = interpolate_and_evaluate(output / "general" / "checkpoint.pt", output / "domain" / "checkpoint.pt",
                                     ratios, output / "interpolation", overwrite=True)
    print(paths[0].read_text())


if __name__ == "__main__":
    main()
