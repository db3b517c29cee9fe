#!/usr/bin/env bash
# One script for 15 minutes on one GPU: the figures that drr's CUDA paths have never given, in order
# of value, each step with its own time limit and log, the rest skipped once the total budget is spent.
#
#   benchmarks/gpu_check.sh                      # on a GPU node, from anywhere in the repository
#   OUT=/scratch/gpu-check benchmarks/gpu_check.sh
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh     # the CPU and tiny sizes (tests/test_gpu_check.py)
#
# Steps (benchmarks/gpu_check.py does the work; its CALLS section holds the calls into drr):
#   1 device       nvidia-smi, torch and its CUDA, the driver, a bf16 and an fp32 matmul
#   2 train-loop   python -m drr.transformer.train, small config, bf16 + torch.compile: stopped by
#                  SIGUSR2 (as submitit's SLURM jobs are before their time limit) and resumed
#   3 train-1400m  the 1.4B model's step time, MFU and peak memory at the per-GPU batch of 8 and of
#                  32 GPUs (random weights)
#   4 sample-821m  821M sampling at Table 4's settings, T_draft 8 and 64, bf16 and fp32 (random weights)
#   5 inception    Inception images/s at batch 100
#   6 decode       the tokenizer decoder's GPU memory per 256-px image
# Results: $OUT (else results/gpu-check/): <step>.log, <step>.json, steps.tsv, summary.md, summary.json.
# Nothing needs the network. Environment: OUT, GPU_CHECK_BUDGET_S (total seconds; default 840, the
# tiny mode 1800), GPU_CHECK_STEP_LIMIT_S (a cap on every step's limit), GPU_CHECK_TINY, PYTHON
# (default: the repository's .venv, else python3).
set -u
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT_DIR=${OUT:-results/gpu-check}
TINY=${GPU_CHECK_TINY:-0}
if [[ $TINY == 1 ]]; then BUDGET=${GPU_CHECK_BUDGET_S:-1800}; else BUDGET=${GPU_CHECK_BUDGET_S:-840}; fi
CAP=${GPU_CHECK_STEP_LIMIT_S:-0}
TINY_FLAG=()
[[ $TINY == 1 ]] && TINY_FLAG=(--tiny)
mkdir -p "$OUT_DIR"
: > "$OUT_DIR/steps.tsv"
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# step NAME LIMIT_S COMMAND...: run COMMAND under `timeout` (TERM at the limit, KILL 15 s later),
# stdout and stderr to $OUT_DIR/NAME.log; skipped when less than 10 s of the budget is left; the
# limit is cut to what is left. One line per step in steps.tsv: name, status, seconds, limit, exit code.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if ((left < 10)); then
    printf '%s\tskipped (budget spent)\t0\t%s\t\n' "$name" "$limit" >> "$OUT_DIR/steps.tsv"
    echo "== $name: skipped, the ${BUDGET} s budget is spent"
    return
  fi
  ((limit > left)) && limit=$left
  ((CAP > 0 && limit > CAP)) && limit=$CAP
  echo "== $name (limit ${limit} s)"
  local t0 t1 rc status
  t0=$(date +%s.%N)
  timeout --signal=TERM --kill-after=15 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  case $rc in
    0) status=ok ;;
    124 | 137) status="timed out" ;;
    *) status="failed" ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")" "$limit" "$rc" \
    >> "$OUT_DIR/steps.tsv"
  echo "   $status ($rc); log: $OUT_DIR/$name.log"
  tail -n 3 "$OUT_DIR/$name.log" | sed 's/^/   | /'
}

PY_STEP=("$PY" benchmarks/gpu_check.py)
# seconds per step; the tiny mode's are generous: it runs on a shared CPU in tests
if [[ $TINY == 1 ]]; then LIMITS=(300 600 300 300 300 300); else LIMITS=(60 240 300 180 90 60); fi
i=0
for name in device train-loop train-1400m sample-821m inception decode; do
  step "$name" "${LIMITS[$i]}" "${PY_STEP[@]}" "$name" --out "$OUT_DIR" "${TINY_FLAG[@]}"
  i=$((i + 1))
done
"$PY" benchmarks/gpu_check.py summary --out "$OUT_DIR" "${TINY_FLAG[@]}" > /dev/null
echo "summary: $OUT_DIR/summary.md ($(($(date +%s) - START)) s in all)"
