#!/usr/bin/env bash
# The memory table (issue 31, item 6): `genas teacher import` of eight teachers (about 1M to
# 135M parameters, contexts 64 to 2048, vocabularies 256 to 49,152), each made here by
# make_teacher.py with weights drawn, imported against the shipped Shakespeare corpus at its
# context. Prints, per teacher, what the process held at the preflight (the program, the
# corpus and its tokenizer, as loaded), the preflight's estimate of the peak (that plus the cost
# model's estimate for the teacher: `estimated_peak_bytes`), the measured peak RSS
# (/usr/bin/time), their ratio, and the peak before the preflight (the corpus's encoding).
#
#   bash experiments/scale/memory.sh [OUT_DIR]        (default /tmp/genas-memory)
#
# Environment: PYTHON (default python3, with torch, transformers and tokenizers), GENAS
# (default target/release/genas, built here first).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/genas-memory}
PYTHON=${PYTHON:-python3}
if [ -z "${GENAS:-}" ]; then
  cargo build --release --quiet --bin genas
  GENAS=target/release/genas
fi
mkdir -p "$OUT"
export GENAS_CACHE_DIR="$OUT/cache"
# name hidden layers heads kv intermediate vocab context
CONFIGS="
t1m-v256-t64 128 4 4 2 384 256 64
t1m-v4k-t256 128 4 4 2 384 4096 256
t6m-v8k-t512 256 6 8 4 768 8192 512
t6m-v8k-t2048 256 6 8 4 768 8192 2048
t30m-v16k-t1024 384 12 6 2 1024 16384 1024
t135m-v49k-t64 576 30 9 3 1536 49152 64
t135m-v49k-t512 576 30 9 3 1536 49152 512
t135m-v49k-t2048 576 30 9 3 1536 49152 2048
"
printf '%-18s %12s %8s %10s %10s %7s %12s\n' teacher params held estimate measured ratio "before (enc)"
echo "$CONFIGS" | while read -r name d l h kv ffn v t; do
  [ -n "$name" ] || continue
  dir="$OUT/$name"
  if [ ! -f "$dir/model.safetensors" ]; then
    "$PYTHON" experiments/scale/make_teacher.py "$dir" --context "$t" --hidden "$d" \
      --layers "$l" --heads "$h" --kv-heads "$kv" --intermediate "$ffn" --vocab "$v" >/dev/null 2>&1
  fi
  sed -e "s|@TEACHER@|$dir|" -e "s|@DATA@|$PWD/experiments/data/shakespeare|" \
    -e "s|@SEQ_LEN@|$t|" experiments/scale/scale.toml >"$dir.toml"
  /usr/bin/time -f "%M" -o "$dir.time" "$GENAS" teacher import "$dir" --experiment "$dir.toml" \
    --out "$dir.check" --json >"$dir.json" 2>"$dir.err"
  "$PYTHON" - "$name" "$dir" <<'PY'
import json, sys
name, d = sys.argv[1], sys.argv[2]
r = json.load(open(f"{d}.json"))
measured = int(open(f"{d}.time").read().split()[-1]) * 1024
est = r["estimated_peak_bytes"]
held, before = r["held_bytes"], r["peak_before_bytes"]
print(f"{name:<18} {r['params']:>12,} {held / 2**20:>5.0f} MB {est / 2**20:>7.0f} MB "
      f"{measured / 2**20:>7.0f} MB {est / measured:>7.2f} {before / 2**20:>9.0f} MB")
PY
done
