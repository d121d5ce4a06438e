#!/usr/bin/env bash
# The GPU check of genas's PyTorch runner, on a machine with an NVIDIA GPU and PyTorch:
# parity with the genas engine for every space choice, steps/s against plain PyTorch eager,
# and candidates per hour for the default experiment's rung. Prints one table and writes it as
# JSON (OUT/gpu-check.json). See experiments/gpu/README.md.
#
# usage: experiments/gpu/check.sh [--device cuda|cpu] [--jobs K,K,...] [--candidates N]
#                                 [--fixtures DIR] [--out DIR]
# The fixtures (jobs with the engine's own results) are written by genas bench runner: by the
# genas at $GENAS (default target/release/genas) unless --fixtures names a folder it wrote
# elsewhere (carry it to a machine without Rust).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
device=cuda jobs=1,2,4,8 candidates=8 fixtures="" out=gpu-check
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --candidates) candidates=$2; shift 2 ;;
    --fixtures) fixtures=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "error: unknown argument $1 (see the top of $0)" >&2; exit 2 ;;
  esac
done
python=${GENAS_PYTHON:-python3}
"$python" -c "import torch" 2>/dev/null || { echo "error: $python cannot import torch" >&2; exit 1; }
mkdir -p "$out"
start=$(date +%s)
if [ -z "$fixtures" ]; then
  genas=${GENAS:-$root/target/release/genas}
  [ -x "$genas" ] || { echo "error: no genas at $genas (build it, set GENAS, or pass --fixtures)" >&2; exit 1; }
  fixtures="$out/fixtures"
  "$genas" bench runner --out "$fixtures" --candidates "$candidates" --repo "$root"
fi
"$python" "$here/check.py" "$fixtures" --device "$device" --jobs "$jobs" --out "$out/gpu-check.json"
echo "check took $(( $(date +%s) - start )) s"
