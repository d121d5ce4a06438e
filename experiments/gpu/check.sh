#!/usr/bin/env bash
# The GPU check of genas's PyTorch runner, on a machine with an NVIDIA GPU and PyTorch: parity
# with the genas engine (every space choice, and a 12M student at vocabulary 49,152 and context
# 1,024), steps/s against a plain PyTorch eager loop for students of 12M, 25M and 50M
# parameters in fp32 and bf16 with peak device memory against genas's model, a final
# distillation from a SmolLM2-135M-shaped teacher, and candidates per hour with 1, 2, 4, 8 runner
# slots per GPU (the `search.device_jobs` to ship). Prints tables and writes them as JSON
# (OUT/gpu-check.json). Under ten minutes on one H100. See experiments/gpu/README.md.
#
# usage: experiments/gpu/check.sh [--device cuda|cpu] [--jobs K,K,...] [--candidates N]
#                                 [--fixtures DIR] [--out DIR] [--small]
# The fixtures (jobs with the engine's own results) are written by `genas bench runner --real`:
# by the genas at $GENAS (default target/release/genas) unless --fixtures names a folder it
# wrote elsewhere (carry it to a machine without Rust). --small leaves out the real-scale part
# (what the CPU test runs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
device=cuda jobs=1,2,4,8 candidates=8 fixtures="" out=gpu-check real=--real
fail() { echo "check.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=${2:-}; shift 2 || fail "--device needs a value" ;;
    --jobs) jobs=${2:-}; shift 2 || fail "--jobs needs a value" ;;
    --candidates) candidates=${2:-}; shift 2 || fail "--candidates needs a value" ;;
    --fixtures) fixtures=${2:-}; shift 2 || fail "--fixtures needs a value" ;;
    --out) out=${2:-}; shift 2 || fail "--out needs a value" ;;
    --small) real=""; shift ;;
    *) fail "unknown argument $1 (see the top of $0)" ;;
  esac
done
case "$device" in cuda | cpu) ;; *) fail "--device must be cuda or cpu, not '$device'" ;; esac
[[ $jobs =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || fail "--jobs must be counts like 1,2,4,8, not '$jobs'"
[[ $candidates =~ ^[0-9]+$ ]] || fail "--candidates must be a count, not '$candidates'"
python=${GENAS_PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || fail "no $python (set GENAS_PYTHON)"
"$python" -c "import torch" 2>/dev/null || fail "$python cannot import torch"
if [ "$device" = cuda ]; then
  "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "torch ($python) sees no CUDA device; use --device cpu to try the check on the CPU"
fi
mkdir -p "$out" || fail "cannot make $out"
start=$(date +%s)
if [ -z "$fixtures" ]; then
  genas=${GENAS:-$root/target/release/genas}
  [ -x "$genas" ] || fail "no genas at $genas (build it, set GENAS, or pass --fixtures)"
  fixtures="$out/fixtures"
  "$genas" bench runner --out "$fixtures" --candidates "$candidates" --repo "$root" $real \
    || fail "genas bench runner could not write the fixtures"
fi
[ -d "$fixtures/parity" ] || fail "$fixtures holds no fixtures (genas bench runner --out DIR writes them)"
"$python" "$here/check.py" "$fixtures" --device "$device" --jobs "$jobs" --out "$out/gpu-check.json"
echo "check took $(( $(date +%s) - start )) s"
