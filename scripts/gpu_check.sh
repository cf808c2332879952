#!/usr/bin/env bash
# One prepared GPU check of ddadlib (at most 8 minutes): correctness, then the speed of Table 1's
# protocol; everything goes to one folder: OUT (first argument, else $OUT, else ./gpu_check_out).
# Extra arguments go to scripts/gpu_check.py (e.g. --device cpu --epochs 1 --tiny on a CPU).
set -u
out="${1:-${OUT:-gpu_check_out}}"
[ $# -gt 0 ] && shift
mkdir -p "$out"
here="$(cd "$(dirname "$0")/.." && pwd)"
{
  date -u
  nvidia-smi 2>&1 | head -15 || true
  PYTHONPATH="$here" TQDM_DISABLE=1 timeout 470 python "$here/scripts/gpu_check.py" --out "$out" "$@"
  echo "exit status $?"
} > "$out/gpu_check.log" 2>&1
tail -40 "$out/gpu_check.log"
