"""Sweeps (variants x seeds of a base config, summarised in tables and plots) and weight interpolation.

```bash
dalip sweep --sweep examples/ablations/second_order.yaml --output runs/second_order
dalip interpolate --start init --end runs/ft/checkpoint.pt --output runs/interp
```
"""

from dalip.sweep.aggregate import Row, collect, summarise_runs, sweep_markdown, write_tables
from dalip.sweep.runner import Run, plan_runs, run_sweep
from dalip.sweep.spec import SMOKE_OVERRIDES, SweepSpec, load_sweep

__all__ = [
    "SMOKE_OVERRIDES",
    "Row",
    "Run",
    "SweepSpec",
    "collect",
    "load_sweep",
    "plan_runs",
    "run_sweep",
    "summarise_runs",
    "sweep_markdown",
    "write_tables",
]
