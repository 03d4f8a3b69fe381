"""pytest set-up for ``pytest benchmarks/``: dalip and the benchmark modules importable."""

import _common  # noqa: F401  (puts the repo root and benchmarks/ on sys.path)
