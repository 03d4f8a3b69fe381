"""The training engine: the loop, batches, precision, torchrun / SLURM, the frozen-tower cache, metrics.

A run's config, model, checkpoints and folder are the run API, `dalip.runs`; this
package trains one.

```python
from dalip.runs import load_config
from dalip.train import train

train(load_config("quickstart", ["optim.steps=100"]), "runs/quickstart")
```
"""

import importlib
import warnings
from typing import Any

from dalip.train.builders import build_loss, build_optimizer, build_scheduler
from dalip.train.loop import Trainer, train, train_step
from dalip.train.precision import autocast

__all__ = ["Trainer", "autocast", "build_loss", "build_optimizer", "build_scheduler", "train", "train_step"]

_MOVED = {  # names this package exported before the run API moved to dalip.runs (deprecated aliases, one release)
    "ConfigError": "dalip.errors",
    "NonFiniteLossError": "dalip.errors",
    "TrainConfig": "dalip.runs",
    "build_model": "dalip.runs",
    "list_configs": "dalip.runs",
    "load_config": "dalip.runs",
    "load_run": "dalip.runs",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"dalip.train.{name} moved to {_MOVED[name]}.{name}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'dalip.train' has no attribute {name!r}")
