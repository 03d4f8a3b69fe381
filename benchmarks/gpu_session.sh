#!/usr/bin/env bash
# Every GPU measurement of issue 8 in ONE device call, most important first, each stage under
# its own time limit so that the whole fits a lease (15 minutes of device time, one command at
# most 10): first run `bash benchmarks/gpu_wheels.sh` here, then through the device tool
#
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=590)
#
# Stages (default time limit, seconds): pooling 80 (compare_mbdc.py, B=256, fp32 and bf16, every
# pooler: item 1), step 100 (train_step.py, ViT-B/16, batch 256, bf16: item 2), recipe 130
# (vs_open_clip_train.py: item 3), scaling 50 (scaling.py: item 4), compile 120 (compare_mbdc.py
# --compile: item 5), tests 30 (tests/test_gpu.py), fsdp 150 (issue 20 item 5: the vitb16-gpu recipe
# through torchrun with distributed.strategy=fsdp and model.sync_batchnorm, 40 steps on one GPU, NCCL;
# its checkpoint then loads into one process), train (the rest: the vitb16-gpu recipe through
# torchrun, 150 steps). Name stages to run only those: `... gpu_session.sh step recipe`.
# A stage that runs out of time is stopped and the next one starts; after every stage the
# results so far are packed into $OUT/results.tar (results/*cuda*, each stage's output), with
# $OUT/summary.md (each stage's exit status and time, every result line in bold) and
# $OUT/session.log beside it. Unpack with `tar -xf results.tar -C benchmarks/results`.
#
# SMOKE=1 runs every stage at toy size on any machine (CPU too), writing into a temporary
# folder instead of benchmarks/results: tests/test_benchmark_scripts.py does this.
# TOTAL_S (default 520) bounds the whole session.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/gpu-session-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
START=$(date +%s)
TOTAL_S=${TOTAL_S:-520}
SMOKE=${SMOKE:-0}
# a smoke run checks that every stage works, not how fast: on a loaded CPU its stages get 10x their budget
BUDGET_SCALE=${BUDGET_SCALE:-$([ "$SMOKE" = 1 ] && echo 10 || echo 1)}
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(pooling step recipe scaling compile tests fsdp train)

if [ -d .whl ] && ! python3 -c "import open_clip" 2>/dev/null; then  # the wheels the image lacks
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 3; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export DALIP_CACHE=${DALIP_CACHE:-/tmp/dalip-cache}
if [ "$SMOKE" = 1 ]; then
    RES=$(mktemp -d); DEV=cpu; WORK=$(mktemp -d)
else
    RES=$ROOT/benchmarks/results; DEV=cuda; WORK=/tmp/dalip-gpu-work
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
fi
mkdir -p "$WORK"
python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
printf '# GPU session summary\n\n- started %s, stages: %s\n\n| stage | exit | seconds |\n|---|---:|---:|\n' \
    "$(date -u +%FT%TZ)" "${STAGES[*]}" > "$WORK/summary_head.md"
: > "$WORK/summary_rows.md"

pack() {  # the results so far -> $OUT (the device tool brings back at most 8 files)
    {
        cat "$WORK/summary_head.md" "$WORK/summary_rows.md"
        printf '\n## Result lines (bold numbers of every results file)\n\n'
        local f
        for f in "$RES"/*"$DEV"*.md; do
            [ -f "$f" ] && grep -E '^- .*\*\*' "$f" | sed "s|^- |- $(basename "$f"): |"
        done
    } > "$OUT/summary.md"
    local files=()
    for f in "$RES"/*"$DEV"* "$WORK"/*.txt "$WORK"/*.json*; do [ -f "$f" ] && files+=("$f"); done
    [ ${#files[@]} -gt 0 ] && tar -cf "$OUT/results.tar" --transform 's|.*/||' "${files[@]}" 2>/dev/null
}

stage() {  # stage NAME BUDGET_S COMMAND...: run COMMAND under min(BUDGET_S, time left)
    local name=$1 budget=$(($2 * BUDGET_SCALE)); shift 2
    local left=$((TOTAL_S - ($(date +%s) - START)))
    [ "$budget" -gt "$left" ] && budget=$left
    if [ "$budget" -lt 20 ]; then
        echo "| $name | skipped (no time left) | 0 |" >> "$WORK/summary_rows.md"; pack; return
    fi
    echo "=== $name (at most ${budget}s) ==="
    local t0=$(date +%s)
    timeout --signal=INT --kill-after=10 "$budget" "$@" 2>&1 | tee "$WORK/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "| $name | $rc$([ "$rc" = 124 ] && echo ' (time limit)') | $(($(date +%s) - t0)) |" >> "$WORK/summary_rows.md"
    pack
}

for s in "${STAGES[@]}"; do
    case $s in
    pooling)
        if [ "$SMOKE" = 1 ]; then
            stage pooling 80 python3 benchmarks/compare_mbdc.py --device cpu --batch 2 --repeats 1 --warmup 1 \
                --memory main --out "$RES/pooling_{device}.md"
        else
            stage pooling 80 python3 benchmarks/compare_mbdc.py --device cuda --repeats 21 --out "$RES/pooling_{device}.md"
        fi ;;
    compile)
        if [ "$SMOKE" = 1 ]; then
            stage compile 120 python3 benchmarks/compare_mbdc.py --device cpu --batch 2 --repeats 1 --warmup 1 \
                --compile --no-memory --out "$RES/pooling_{device}_compile.md"
        else
            stage compile 120 python3 benchmarks/compare_mbdc.py --device cuda --repeats 11 --compile --memory main \
                --out "$RES/pooling_{device}_compile.md"
        fi ;;
    step)
        if [ "$SMOKE" = 1 ]; then
            stage step 100 python3 benchmarks/train_step.py --device cpu --model tests/assets/tiny-clip.json \
                --batch 4 --steps 2 --warmup 1 --precision fp32 --out "$RES/train_step_cpu.md"
        else
            stage step 100 python3 benchmarks/train_step.py --steps 20 --warmup 5 --out "$RES/train_step_cuda.md"
        fi ;;
    recipe)
        if [ "$SMOKE" = 1 ]; then
            stage recipe 130 python3 benchmarks/vs_open_clip_train.py --device cpu --model ViT-S-32 --batch 4 \
                --steps 3 --skip 1 --precision fp32 --workers 1 --image-files 4 --work "$WORK/vs" \
                --out "$RES/vs_open_clip_train_cpu.md"
        else
            stage recipe 130 python3 benchmarks/vs_open_clip_train.py --steps 60 --skip 10 --work "$WORK/vs" \
                --out "$RES/vs_open_clip_train_cuda.md"
        fi ;;
    scaling)
        if [ "$SMOKE" = 1 ]; then
            stage scaling 50 python3 benchmarks/scaling.py --device cpu --repeats 1 --quick --out-dir "$RES"
        else
            stage scaling 50 python3 benchmarks/scaling.py --device cuda --repeats 5 --out-dir "$RES"
        fi ;;
    tests)
        stage tests 30 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py ;;
    fsdp)  # FSDP2 on one GPU (NCCL): fully_shard per block and head, SyncBatchNorm, full-state checkpoint
        if [ "$SMOKE" = 1 ]; then
            overrides=(model.name=$ROOT/tests/assets/tiny-clip.json data.batch_size=2 data.workers=0 optim.steps=2
                       optim.warmup_steps=0 run.precision=fp32 data.spec.image_size=64 data.spec.eval_subsets=[])
        else
            overrides=(optim.steps=40 run.checkpoint_every=40 run.log_every=10)
        fi
        # in bash -c (timeout runs programs): $1 the work folder, $2 the results file, then the overrides
        stage fsdp 150 bash -c 'set -o pipefail; work=$1 res=$2; shift 2
            torchrun --standalone --nproc_per_node 1 -m dalip.cli train --config vitb16-gpu --output "$work/fsdp" \
                --overwrite distributed.strategy=fsdp model.sync_batchnorm=true "$@" || exit $?
            python3 - "$work/fsdp/checkpoint.pt" <<"PY" | tee "$res"
import sys, torch
from dalip.runs.load import load_run
model, config = load_run(sys.argv[1])
plain = sum(type(t) is torch.Tensor for t in model.state_dict().values())
print(f"- checkpoint of a distributed.strategy={config.distributed.strategy} run loads into one process: "
      f"**{plain} plain tensors**")
PY' fsdp "$WORK" "$RES/fsdp_$DEV.md" "${overrides[@]}"
        cp "$WORK/fsdp/metrics.jsonl" "$WORK/fsdp_metrics.jsonl" 2>/dev/null
        pack ;;
    train)
        if [ "$SMOKE" = 1 ]; then
            overrides=(model.name=$ROOT/tests/assets/tiny-clip.json data.batch_size=2 data.workers=0 optim.steps=2
                       optim.warmup_steps=0 run.precision=fp32 data.spec.image_size=64 data.spec.eval_subsets=[])
        else
            overrides=(optim.steps=150 run.checkpoint_every=150 run.log_every=10)
        fi
        stage train 600 torchrun --standalone --nproc_per_node 1 -m dalip.cli train --config vitb16-gpu \
            --output "$WORK/vitb16" "${overrides[@]}"
        cp "$WORK/vitb16/metrics.jsonl" "$WORK/vitb16_metrics.jsonl" 2>/dev/null
        cp "$WORK/vitb16/eval.json" "$WORK/vitb16_eval.json" 2>/dev/null
        pack ;;
    *)
        echo "unknown stage $s (pooling | step | recipe | scaling | compile | tests | fsdp | train)" >&2; exit 2 ;;
    esac
done
echo "=== done in $(($(date +%s) - START))s; results in $OUT ==="
cat "$OUT/summary.md"
