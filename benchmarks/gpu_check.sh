#!/usr/bin/env bash
# The GPU check: one command that records, in at most 8 minutes on one H100 or H200, what only a GPU shows.
#
#   1. the CUDA tests (tests/test_cuda.py: label step, scoring loop and a mixed-precision training run on the
#      GPU, each against the CPU);
#   2. the label step at ImageNet scale on the GPU: 1.28M images x 3000 clusters, bfloat16 storage, on
#      standard-normal and on realistic scores (benchmarks/bench_sinkhorn.py; target: at most 1 s per head);
#   3. training throughput of the cifar-paper recipe (224 px AlexNet, 10 heads x 128 clusters) on 50,000
#      synthetic CIFAR-shaped images: images per second and the hours of the 400-epoch schedule
#      (benchmarks/bench_training.py), with the preset's float16 autocast;
#   4. the same with bfloat16 autocast and channels-last memory (amp_dtype, channels_last), SeLa only, to
#      see whether they help.
#
# Usage (from the repository root, after `make venv`):
#   bash benchmarks/gpu_check.sh [OUT]             the check; the log goes to OUT/gpu_check.txt (default results/gpu_check)
#   bash benchmarks/gpu_check.sh --dry-run [OUT]   the four steps at toy sizes on the CPU (about a minute):
#                                                  proves the script, measures nothing of a GPU
# Exit status: 0 when every step passed, else the number of failed steps. Each step has its own time limit,
# so the whole check stays within 8 minutes (460 s of limits) even when a step hangs.
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
: > "$LOG"

if (( DRY )); then
    DEVICE=cpu
    export SELA_TEST_DEVICE=cpu
    SINKHORN_SIZES=5000x100
    # the 32 px variant of the recipe: the same code path at a size a CPU trains in seconds
    TRAIN_ARGS=(--preset cifar-32 --synthetic 256 --epochs 1 --batch-size 128 --device cpu)
    LIMITS=(240 120 240 240)
else
    DEVICE=cuda
    SINKHORN_SIZES=1280000x3000
    TRAIN_ARGS=(--preset cifar-paper --synthetic 50000 --epochs 1 --device cuda)
    LIMITS=(80 140 150 90)
fi

say() { echo "$*" | tee -a "$LOG"; }
failed=0
step() {   # step NAME LIMIT_SECONDS COMMAND...
    local name="$1" limit="$2"; shift 2
    say ""
    say "== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if (( rc == 124 || rc == 137 )); then say "== $name: TIMED OUT after ${limit} s"; failed=$((failed + 1))
    elif (( rc != 0 )); then say "== $name: FAILED (exit $rc)"; failed=$((failed + 1))
    else say "== $name: ok in $((SECONDS - start)) s"; fi
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

step "1. CUDA tests" "${LIMITS[0]}" "$PY" -m pytest -q -rs tests/test_cuda.py
step "2. label step at ImageNet scale" "${LIMITS[1]}" "$PY" benchmarks/bench_sinkhorn.py --device "$DEVICE" \
    --sizes "$SINKHORN_SIZES" --kinds normal,realistic --storage bfloat16 --large-storage bfloat16 --lam 25 --no-reference
step "3. cifar-paper training throughput" "${LIMITS[2]}" "$PY" benchmarks/bench_training.py "${TRAIN_ARGS[@]}" \
    --json "$OUT/bench_training.json"
step "4. the same in bfloat16, channels last" "${LIMITS[3]}" "$PY" benchmarks/bench_training.py "${TRAIN_ARGS[@]}" \
    --no-supervised --set amp_dtype='"bfloat16"' --set channels_last=true --json "$OUT/bench_training_bf16.json"

say ""
say "GPU check done in $SECONDS s: $((4 - failed)) of 4 steps passed; log: $LOG"
exit "$failed"
