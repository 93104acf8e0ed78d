#!/usr/bin/env bash
# The GPU check: what a run on one GPU should confirm, in one script that ends in under 8 minutes by construction.
#   attention      python -m salgl_core.bench attention --amp bf16: bilinear attention + whole train step, ref vs fast
#   train_bench    python -m salgl_core.bench train --compile off: recipe paper-coco-r101-448 (ResNet-101, 448 px,
#                  batch 128), images/s and peak memory on device tensors for fp16/bf16 x channels_last, then the
#                  fastest fed by the real loader on 640x480 JPEGs (images/s, data-wait share) and the loader alone
#   train_compile  the same step under torch.compile (bf16, channels_last): compile time apart from images/s
#   train_run      a one-epoch synthetic training run at 448 px with ResNet-101 (random init), fp16, channels_last
#   study          a two-trial scene-count study with --gpus-per-trial 0.5 (both trials share the GPU)
#
# Time: every step has a budget in STEP_BUDGETS (the one table of them) and is stopped when it runs out (SIGTERM,
# then SIGKILL KILL_GRACE s later). The script refuses to start when the budgets, each step's grace and OVERHEAD
# (its own work between the steps) add up to more than LIMIT (480 s); tests/test_gpu_check.py checks the same
# sum. It prints that sum first and each step's budget as the step starts. Smoke mode multiplies every figure by
# GPU_CHECK_TIME_SCALE (default 10, for a busy CPU).
# Output: each step writes <name>.json (train_bench, train_compile: <name>.jsonl, one JSON line per record as soon
# as it is measured, so a step stopped at its budget keeps what finished) and <name>.log to $OUT/gpu_check/ when
# $OUT is set, else to a temporary folder whose JSON files are printed at the end. gpu_check.json sums up each
# step's exit code, seconds and budget, the total against LIMIT, and the figures that judge the GPU goals
# (tools/gpu_check_summary.py).
#
#   tools/gpu_check.sh                        # on a GPU machine (make gpu-check)
#   GPU_CHECK_SMOKE=1 tools/gpu_check.sh      # the same steps at CPU-sized shapes, to check the script itself
#   GPU_CHECK_DRY_RUN=1 tools/gpu_check.sh    # print the budgets and commands, run nothing
#   GPU_CHECK_SKIP="train_compile study" tools/gpu_check.sh   # leave steps out (gpu_check.json marks them skipped)
# PY=path/to/python overrides the interpreter (default: .venv/bin/python if present, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."

STEP_BUDGETS=(  # step, seconds: in the order they run
  attention 40
  train_bench 110
  train_compile 135
  train_run 70
  study 85
)
KILL_GRACE=5   # timeout --kill-after: the most a step may outlive its budget
OVERHEAD=10    # the script's own work: folders, the JSON summaries between and after the steps
LIMIT=480      # 8 minutes

PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
SMOKE=${GPU_CHECK_SMOKE:-0}
DRY=${GPU_CHECK_DRY_RUN:-0}
SKIP=" ${GPU_CHECK_SKIP:-} "
SCALE=${GPU_CHECK_TIME_SCALE:-$([ "$SMOKE" = 1 ] && echo 10 || echo 1)}

budget_of() {  # budget_of NAME: the step's budget in seconds, unscaled
  local i
  for ((i = 0; i < ${#STEP_BUDGETS[@]}; i += 2)); do
    if [ "${STEP_BUDGETS[i]}" = "$1" ]; then echo "${STEP_BUDGETS[i + 1]}"; return 0; fi
  done
  return 1
}
BUDGET_SUM=0
for ((i = 1; i < ${#STEP_BUDGETS[@]}; i += 2)); do BUDGET_SUM=$((BUDGET_SUM + STEP_BUDGETS[i])); done
N_STEPS=$((${#STEP_BUDGETS[@]} / 2))
PLANNED=$((BUDGET_SUM + N_STEPS * KILL_GRACE + OVERHEAD))
if ((PLANNED > LIMIT)); then
  echo "gpu-check: budgets $BUDGET_SUM s + $N_STEPS x $KILL_GRACE s grace + $OVERHEAD s = $PLANNED s, over the" \
       "$LIMIT s limit: lower a budget in STEP_BUDGETS (tools/gpu_check.sh)" >&2
  exit 2
fi
echo "== gpu-check: $N_STEPS steps, budgets $((BUDGET_SUM * SCALE)) s + $N_STEPS x $((KILL_GRACE * SCALE)) s grace" \
     "+ $((OVERHEAD * SCALE)) s script = $((PLANNED * SCALE)) s, limit $((LIMIT * SCALE)) s (time scale $SCALE)" >&2

WORK=$(mktemp -d -t salgl-gpu-check-XXXXXX)   # run folders and checkpoints: large, never copied out
trap 'rm -rf "$WORK"' EXIT
if [ -n "${OUT:-}" ] && [ "$DRY" != 1 ]; then DEST="$OUT/gpu_check"; else DEST="$WORK/out"; fi
mkdir -p "$DEST"
SUMMARY="$DEST/steps.tsv"
: > "$SUMMARY"
T_START=$(date +%s)

# step NAME OUTPUT CMD...: run CMD within NAME's budget. OUTPUT json or jsonl: stdout is NAME.json / NAME.jsonl
# and stderr the log; log: both go to the log, which keeps its last 300 lines.
step() {
  local name=$1 output=$2 budget limit t0 rc
  shift 2
  if ! budget=$(budget_of "$name"); then echo "gpu-check: step $name has no budget in STEP_BUDGETS" >&2; exit 2; fi
  limit=$((budget * SCALE))
  if [[ "$SKIP" == *" $name "* ]]; then
    echo "== $name: skipped (GPU_CHECK_SKIP)" >&2
    [ "$DRY" = 1 ] || printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >> "$SUMMARY"
    return 0
  fi
  echo "== $name: budget $limit s (at $(($(date +%s) - T_START)) s of $((LIMIT * SCALE)) s): $*" >&2
  if [ "$DRY" = 1 ]; then return 0; fi
  t0=$(date +%s)
  if [ "$output" = log ]; then
    timeout --kill-after=$((KILL_GRACE * SCALE)) "$limit" "$@" > "$WORK/$name.log" 2>&1; rc=$?
  else
    timeout --kill-after=$((KILL_GRACE * SCALE)) "$limit" "$@" > "$DEST/$name.$output" 2> "$WORK/$name.log"; rc=$?
  fi
  tail -n 300 "$WORK/$name.log" > "$DEST/$name.log"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$limit" >> "$SUMMARY"
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s of $limit s" >&2
}

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu
  ATTENTION=(--device cpu --batch 2 --step-batch 1 --labels 4 --tokens 9 --dim 16 --embed-dim 8 --rank 8
             --image-size 32 --backbone small_cnn --warmup 0 --repeats 1)
  BENCH=(--device cpu --compile off --warmup 1 --steps 1 --loader-batches 1 --batch 2)
  COMPILE=(--device cpu --compile on --compile-backend eager --channels-last on --loader-batches 0 --warmup 1
           --steps 1 --batch 2)
  RUN=(--backbone resnet18 --image-size 64 --att-dim 16 --enc-heads 2 --enc-ffn 32 --batch-size 8 --amp none
       --num-workers 0 --synthetic-train-images 32 --synthetic-val-images 16 --synthetic-classes 8
       --synthetic-scenes 2)
  STUDY=(--smoke --gpus-per-trial 0)
else
  DEVICE=cuda
  ATTENTION=(--device cuda --amp bf16)
  BENCH=(--device cuda --compile off)
  COMPILE=(--device cuda --compile on --amp bf16 --channels-last on --loader-batches 0)
  RUN=(--backbone resnet101 --image-size 448 --att-dim 1024 --enc-heads 8 --enc-ffn 2048 --batch-size 64 --amp fp16
       --channels-last --num-workers 8 --synthetic-train-images 2048 --synthetic-val-images 512)
  STUDY=(--epochs 1 --gpus-per-trial 0.5)
fi
SUMMARIZE=("$PY" tools/gpu_check_summary.py)

step attention json "$PY" -m salgl_core.bench attention "${ATTENTION[@]}"
step train_bench jsonl "$PY" -m salgl_core.bench train --recipe paper-coco-r101-448 "${BENCH[@]}"
step train_compile jsonl "$PY" -m salgl_core.bench train --recipe paper-coco-r101-448 "${COMPILE[@]}"
step train_run log "$PY" -m salgl_core.train --dataset synthetic --backbone-weights none --epochs 1 \
  --device "$DEVICE" --cache-dir "$WORK/cache" --out "$WORK/train_run" --no-progress "${RUN[@]}"
[ "$DRY" = 1 ] || "${SUMMARIZE[@]}" run "$WORK/train_run" "$DEST/train_run.json"
step study log "$PY" studies/scene_count.py --values 1 4 --seeds 0 --name gpu-check --no-dashboard \
  --results-dir "$WORK/results" --storage-path "$WORK/ray" --cache-dir "$WORK/cache" "${STUDY[@]}"
[ "$DRY" = 1 ] || "${SUMMARIZE[@]}" study "$WORK/results/scene_count/gpu-check" "$DEST/study.json"
if [ "$DRY" = 1 ]; then exit 0; fi

"${SUMMARIZE[@]}" check "$DEST" "$SMOKE" "$(($(date +%s) - T_START))" "$((LIMIT * SCALE))"
rm -f "$SUMMARY"

if [ -z "${OUT:-}" ]; then
  for f in "$DEST"/*.json "$DEST"/*.jsonl; do echo "--- $(basename "$f")"; cat "$f"; done
fi
"$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$DEST/gpu_check.json"
