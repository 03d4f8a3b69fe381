"""Tutorial: train, stop, resume and evaluate a tiny DALIP model from Python.

The same run as the command line in docs/tutorials/train.md, with the tiny test
model (tests/assets/tiny-clip.json) so that it finishes in seconds on a CPU.
Blocks between the ``--8<--`` markers are included in that page.

Run: python examples/tutorials/train_tiny.py [OUTPUT]   (default: a temporary folder)
"""

# --8<-- [start:config]
from pathlib import Path

from dalip.runs import load_config

assets = Path(__file__).resolve().parents[2] / "tests" / "assets"  # the repository's test assets
config = load_config(assets / "tiny-train.yaml", [  # `base: quickstart` + a 0.4 M-parameter model
    "optim.steps=3",
    "data.spec.eval_subsets=[domain]",  # evaluate on the 46 held-out domain images
    "run.checkpoint_every=1",
])
print(config.model.second_order, config.model.second_options, config.loss.name)
# mbdc {'heads': 2, 'reduced_dim': 4} distribution
# --8<-- [end:config]

# --8<-- [start:train]
import sys
import tempfile

from dalip.train import train

output = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "tiny"  # the run folder

train(config, output, stop_after=2)  # 2 steps, checkpoint, stop (like a killed job)
results = train(config, output, resume=True)  # steps 3..3, then evaluate
print(sorted(p.name for p in output.iterdir()))
# ['checkpoint.pt', 'config.yaml', 'eval.json', 'metrics.jsonl', 'training.png']
# --8<-- [end:train]

# --8<-- [start:outputs]
import json

rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
print(rows[-1]["step"], sorted(rows[-1]))  # 3 ['head_lr', 'images_per_s', 'logit_scale', 'loss', 'loss/first', ...]
print(results["combined"]["twemoji-domain"]["subcategories/top1"])  # a fraction in [0, 1]
# --8<-- [end:outputs]
assert [r["step"] for r in rows] == [1, 2, 3]
assert set(results) == {"first", "second", "combined"}

