#!/usr/bin/env bash
# The GPU check: what a run on one GPU should confirm, in one script that ends in under 8 minutes.
#   attention   python -m salgl_core.bench attention --amp bf16   bilinear attention + whole train step, ref vs fast
#   train_bench python -m salgl_core.bench train                   recipe paper-coco-r101-448: images/s and peak
#               memory on device tensors and through the real loader (fp16/bf16 x channels_last x compile)
#   train_run   a one-epoch synthetic training run at 448 px with ResNet-101 (random init), fp16, channels_last
#   study       a two-trial scene-count study with --gpus-per-trial 0.5 (both trials share the GPU)
# Each step writes <name>.json (and its log, <name>.log) to $OUT/gpu_check/ when $OUT is set, else to a
# temporary folder whose JSON files are printed at the end; gpu_check.json sums up exit codes and seconds.
# Every step has its own time limit, so the whole check stays under 10 minutes even when one step hangs
# (smoke mode: 10 times longer, for a busy CPU; GPU_CHECK_TIME_SCALE sets the factor).
#
#   tools/gpu_check.sh                    # on a GPU machine (make gpu-check)
#   GPU_CHECK_SMOKE=1 tools/gpu_check.sh  # the same steps at CPU-sized shapes, to check the script itself
# PY=path/to/python overrides the interpreter (default: .venv/bin/python if present, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
SMOKE=${GPU_CHECK_SMOKE:-0}
SCALE=${GPU_CHECK_TIME_SCALE:-$([ "$SMOKE" = 1 ] && echo 10 || echo 1)}
WORK=$(mktemp -d -t salgl-gpu-check-XXXXXX)   # run folders and checkpoints: large, never copied out
trap 'rm -rf "$WORK"' EXIT
if [ -n "${OUT:-}" ]; then DEST="$OUT/gpu_check"; else DEST="$WORK/out"; fi
mkdir -p "$DEST"
SUMMARY="$DEST/steps.tsv"
: > "$SUMMARY"
T_START=$(date +%s)

# step NAME LIMIT_S JSON_ON_STDOUT CMD...: run CMD with a time limit; stdout goes to NAME.json when it is one
# JSON object (JSON_ON_STDOUT=1), else to the log with stderr; the log keeps its last 300 lines.
step() {
  local name=$1 limit=$(( $2 * SCALE )) json=$3; shift 3
  local t0 rc
  t0=$(date +%s)
  echo "== $name: $*" >&2
  if [ "$json" = 1 ]; then
    timeout --kill-after=10 "$limit" "$@" > "$DEST/$name.json" 2> "$WORK/$name.log"; rc=$?
  else
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1; rc=$?
  fi
  tail -n 300 "$WORK/$name.log" > "$DEST/$name.log"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$SUMMARY"
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s" >&2
}

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu
  ATTENTION=(--device cpu --batch 2 --step-batch 1 --labels 4 --tokens 9 --dim 16 --embed-dim 8 --rank 8
             --image-size 32 --backbone small_cnn --warmup 0 --repeats 1)
  BENCH=(--device cpu --warmup 0 --steps 1 --loader-batches 1 --batch 2)
  RUN=(--backbone resnet18 --image-size 64 --att-dim 16 --enc-heads 2 --enc-ffn 32 --batch-size 8 --amp none
       --num-workers 0 --synthetic-train-images 32 --synthetic-val-images 16 --synthetic-classes 8
       --synthetic-scenes 2)
  STUDY=(--smoke --gpus-per-trial 0)
else
  DEVICE=cuda
  ATTENTION=(--device cuda --amp bf16)
  BENCH=(--device cuda)
  RUN=(--backbone resnet101 --image-size 448 --att-dim 1024 --enc-heads 8 --enc-ffn 2048 --batch-size 64 --amp fp16
       --channels-last --num-workers 8 --synthetic-train-images 2048 --synthetic-val-images 512)
  STUDY=(--epochs 1 --gpus-per-trial 0.5)
fi

step attention 60 1 "$PY" -m salgl_core.bench attention "${ATTENTION[@]}"
step train_bench 210 1 "$PY" -m salgl_core.bench train --recipe paper-coco-r101-448 "${BENCH[@]}"
step train_run 120 0 "$PY" -m salgl_core.train --dataset synthetic --backbone-weights none --epochs 1 \
  --device "$DEVICE" --cache-dir "$WORK/cache" --out "$WORK/train_run" --no-progress "${RUN[@]}"
"$PY" - "$WORK/train_run" "$DEST/train_run.json" <<'EOF'
import csv, json, sys
from pathlib import Path
run, dest = Path(sys.argv[1]), Path(sys.argv[2])
out = {"config": None, "epochs": []}
if (run / "config.json").is_file():
    out["config"] = json.loads((run / "config.json").read_text())
if (run / "epochs.csv").is_file():
    out["epochs"] = list(csv.DictReader(open(run / "epochs.csv")))
dest.write_text(json.dumps(out, indent=2) + "\n")
EOF
step study 150 0 "$PY" studies/scene_count.py --values 1 4 --seeds 0 --name gpu-check --no-dashboard \
  --results-dir "$WORK/results" --storage-path "$WORK/ray" --cache-dir "$WORK/cache" "${STUDY[@]}"
"$PY" - "$WORK/results/scene_count/gpu-check" "$DEST/study.json" <<'EOF'
import csv, json, sys
from pathlib import Path
run, dest = Path(sys.argv[1]), Path(sys.argv[2])
out = {"study": None, "trials": []}
if (run / "study.json").is_file():
    out["study"] = json.loads((run / "study.json").read_text())
if (run / "trials.csv").is_file():
    out["trials"] = list(csv.DictReader(open(run / "trials.csv")))
dest.write_text(json.dumps(out, indent=2) + "\n")
EOF

"$PY" - "$SUMMARY" "$DEST/gpu_check.json" "$SMOKE" "$(( $(date +%s) - T_START ))" <<'EOF'
import json, sys
summary, dest, smoke, total = sys.argv[1:]
steps = [dict(zip(("name", "rc", "seconds"), line.split("\t"))) for line in open(summary).read().splitlines()]
steps = [{"name": s["name"], "rc": int(s["rc"]), "seconds": int(s["seconds"])} for s in steps]
out = {"smoke": smoke == "1", "ok": all(s["rc"] == 0 for s in steps), "total_seconds": int(total), "steps": steps}
open(dest, "w").write(json.dumps(out, indent=2) + "\n")
EOF
rm -f "$SUMMARY"

if [ -z "${OUT:-}" ]; then
  for f in "$DEST"/*.json; do echo "--- $(basename "$f")"; cat "$f"; done
fi
"$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$DEST/gpu_check.json"
