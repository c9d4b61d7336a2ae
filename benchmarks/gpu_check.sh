#!/usr/bin/env bash
# The GPU check: one command that records, in at most 8 minutes on one H100 or H200, what only a GPU shows,
# and closes with one table of every figure beside its target (issue 26). How to run it, what each step
# measures and what is recorded so far: docs/gpu_check.md.
#
#   1. the CUDA tests (tests/test_cuda.py: label step, scoring loop and a mixed-precision training run on the
#      GPU, each against the CPU; no host wait inside a training step; exact resume on the device);
#   2. the device's own memory bandwidth: a device-to-device copy of 4 GB (benchmarks/device_bandwidth.py),
#      the floor every pass over P is set beside;
#   3. the label step at ImageNet scale, 1.28M x 3000, lambda 25, realistic scores generated ON THE DEVICE,
#      float32 and bfloat16 storage (benchmarks/gpu_label_step.py): seconds per head from scores on the GPU
#      to labels, passes, ms per pass beside one read of P, labels equal to the CPU path's (on a subsample);
#   4. the official GPU loop (optimize_L_sk_multi in float64, its stopping rule, a 40 s budget) beside the
#      kit on the same scores, with the share of equal labels (benchmarks/official_gpu_loop.py);
#   5. training throughput of the cifar-paper recipe (224 px AlexNet, 10 heads x 128 clusters) on 50,000
#      synthetic CIFAR-shaped images, with float16 autocast as the preset has it, and its ceiling
#      (benchmarks/bench_training.py);
#   6. the same with bfloat16 autocast and channels-last memory, SeLa only;
#   7. the classroom preset's whole schedule (20 epochs, 40 label optimisations) on 60,000 synthetic
#      Fashion-MNIST-shaped images, stopped by a 20 s budget and projected when slower;
#   8. the closing table (benchmarks/gpu_check_table.py): every figure, its target, met / missed / not measured.
#
# Usage (from the repository root, after `make venv`):
#   bash benchmarks/gpu_check.sh [OUT]             the check; the log goes to OUT/gpu_check.txt (default results/gpu_check)
#   bash benchmarks/gpu_check.sh --dry-run [OUT]   every step at toy sizes on the CPU (about a minute on an idle
#                                                  machine): proves the script, measures nothing of a GPU
# Exit status: 0 when every step passed, else the number of failed steps. Each step has its own time limit
# (445 s in all, each about twice the step's expected time), so the whole check stays within 8 minutes even
# when a step hangs.
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:-results/gpu_check}"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
STEPS="$OUT/steps.tsv"
: > "$LOG"
: > "$STEPS"
rm -f "$OUT"/bandwidth.json "$OUT"/label_step.json "$OUT"/official.json "$OUT"/bench_training.json \
      "$OUT"/bench_training_bf16.json "$OUT"/classroom.json

if (( DRY )); then
    DEVICE=cpu
    export SELA_TEST_DEVICE=cpu
    BANDWIDTH_ARGS=(--gb 0.1 --repeats 3)
    LABEL_ARGS=(--n 6000 --k 60 --agree-rows 2000)
    OFFICIAL_ARGS=(--n 6000 --k 60 --budget 0.5)
    # the 32 px variant of the recipe: the same code path at a size a CPU trains in seconds
    TRAIN_ARGS=(--preset cifar-32 --synthetic 128 --epochs 1 --batch-size 64 --ceiling-steps 1 --device cpu)
    CLASSROOM_ARGS=(--synthetic 400 --batch-size 64 --set epochs=2 --set nopts=4 --budget 5 --ceiling-steps 1)
    LIMITS=(300 60 240 240 300 300 300 60)
else
    DEVICE=cuda
    BANDWIDTH_ARGS=(--gb 4)
    LABEL_ARGS=(--n 1280000 --k 3000 --agree-rows 128000)
    OFFICIAL_ARGS=(--n 1280000 --k 3000 --budget 40)
    TRAIN_ARGS=(--preset cifar-paper --synthetic 50000 --epochs 1 --device cuda)
    CLASSROOM_ARGS=(--synthetic 60000 --budget 20)
    #       1  2  3  4   5  6  7  8    expected: about 20, 5, 35, 50, 30, 20, 25, 2 s
    LIMITS=(50 25 80 110 70 45 50 15)
fi

say() { echo "$*" | tee -a "$LOG"; }
failed=0
step() {   # step ID NAME LIMIT_SECONDS COMMAND...
    local id="$1" name="$2" limit="$3"; shift 3
    say ""
    say "== $name (limit ${limit} s): $*"
    local start=$SECONDS status
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    local took=$((SECONDS - start))
    if (( rc == 124 || rc == 137 )); then say "== $name: TIMED OUT after ${limit} s"; failed=$((failed + 1)); status="timed out"
    elif (( rc != 0 )); then say "== $name: FAILED (exit $rc)"; failed=$((failed + 1)); status="failed (exit $rc)"
    else say "== $name: ok in ${took} s"; status=ok; fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$name" "$status" "$took" "$limit" >> "$STEPS"
}

say "sela-edu GPU check$( ((DRY)) && echo ' (dry run on the CPU: toy sizes, no GPU figures)'), $(date -u '+%Y-%m-%d %H:%M UTC')"
say "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: "
      + (torch.cuda.get_device_name(0) if cuda else "none (CPU only)"))
EOF
if (( ! DRY )) && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "no CUDA device: run with --dry-run to check the script on a CPU"
    exit 1
fi

step a "1. CUDA tests" "${LIMITS[0]}" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py
step b "2. device bandwidth" "${LIMITS[1]}" "$PY" benchmarks/device_bandwidth.py --device "$DEVICE" \
    "${BANDWIDTH_ARGS[@]}" --json "$OUT/bandwidth.json"
step c "3. label step at ImageNet scale" "${LIMITS[2]}" "$PY" benchmarks/gpu_label_step.py --device "$DEVICE" \
    "${LABEL_ARGS[@]}" --lam 25 --storages float32,bfloat16 --bandwidth "$OUT/bandwidth.json" --json "$OUT/label_step.json"
step d "4. official GPU loop beside the kit" "${LIMITS[3]}" "$PY" benchmarks/official_gpu_loop.py --device "$DEVICE" \
    "${OFFICIAL_ARGS[@]}" --lam 25 --json "$OUT/official.json"
step e1 "5. cifar-paper training throughput" "${LIMITS[4]}" "$PY" benchmarks/bench_training.py "${TRAIN_ARGS[@]}" \
    --json "$OUT/bench_training.json"
step e2 "6. the same in bfloat16, channels last" "${LIMITS[5]}" "$PY" benchmarks/bench_training.py "${TRAIN_ARGS[@]}" \
    --no-supervised --set amp_dtype='"bfloat16"' --set channels_last=true --json "$OUT/bench_training_bf16.json"
step e3 "7. classroom preset, 20 epochs" "${LIMITS[6]}" "$PY" benchmarks/bench_training.py --preset classroom \
    --full-schedule --no-supervised --device "$DEVICE" "${CLASSROOM_ARGS[@]}" --json "$OUT/classroom.json"
say ""
say "GPU check's measuring steps done in $SECONDS s: $((7 - failed)) of 7 passed"
DRYFLAG=(); if (( DRY )); then DRYFLAG=(--dry-run); fi
step f "8. closing table" "${LIMITS[7]}" "$PY" benchmarks/gpu_check_table.py "$OUT" "${DRYFLAG[@]}"

say ""
say "GPU check done in $SECONDS s: $((8 - failed)) of 8 steps passed; log: $LOG"
exit "$failed"
