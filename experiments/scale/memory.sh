#!/usr/bin/env bash
# The memory table (issue 31, item 6): eight teachers (about 1M to 135M parameters, contexts 64
# to 2048, vocabularies 256 to 49,152), each made here by make_teacher.py with weights drawn,
# against the shipped Shakespeare corpus at its context. For each, three commands:
#
#   import   `genas teacher import` (the teacher read, measured, checked in f64)
#   search   `genas search` of memory.toml: the teacher measured, its soft targets cached, the
#            proxies calibrated on 10 students, 12 candidates distilled, two side by side
#   distill  `genas distill --front --steps 4` of that search's front
#
# and, per command, the preflight's estimate of its peak resident memory (what the process held
# at the preflight plus its largest phase, as the command says it: `estimated_peak_bytes`, or
# its "estimated peak memory" line), the measured peak RSS (/usr/bin/time), and their ratio.
#
#   bash experiments/scale/memory.sh [OUT_DIR]        (default /tmp/genas-memory)
#
# Environment: PYTHON (default python3, with torch, transformers and tokenizers), GENAS
# (default target/release/genas, built here first), ONLY (a pattern: only the teachers it
# matches).
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
# name hidden layers heads kv intermediate vocab context init
CONFIGS="
t1m-v256-t64 128 4 4 2 384 256 64 teacher
t1m-v4k-t256 128 4 4 2 384 4096 256 teacher
t6m-v8k-t512 256 6 8 4 768 8192 512 teacher
t6m-v8k-t2048 256 6 8 4 768 8192 2048 random
t30m-v16k-t1024 384 12 6 2 1024 16384 1024 teacher
t135m-v49k-t64 576 30 9 3 1536 49152 64 teacher
t135m-v49k-t512 576 30 9 3 1536 49152 512 teacher
t135m-v49k-t2048 576 30 9 3 1536 49152 2048 random
"
# Peak RSS in bytes from /usr/bin/time's file.
measured() { echo $(($(tail -1 "$1") * 1024)); }
# The estimate a command printed on standard error, bytes.
said() { sed -n 's/.*estimated peak memory \([0-9]*\) MB.*/\1/p' "$1" | head -1 | awk '{print $1 * 1000000}'; }
row() {
  "$PYTHON" -c 'import sys; n, s, p, e, m = sys.argv[1:]; e, m = float(e), float(m); print(f"{n:<18} {s:<8} {int(p):>12,} {e / 1e6:>8.0f} MB {m / 1e6:>8.0f} MB {e / m:>6.2f}")' "$@"
}
printf '%-18s %-8s %12s %11s %11s %6s\n' teacher command params estimate measured ratio
echo "$CONFIGS" | while read -r name d l h kv ffn v t init; do
  [ -n "$name" ] || continue
  [[ -z "${ONLY:-}" || $name =~ $ONLY ]] || continue
  dir="$OUT/$name"
  if [ ! -f "$dir/model.safetensors" ]; then
    "$PYTHON" experiments/scale/make_teacher.py "$dir" --context "$t" --hidden "$d" \
      --layers "$l" --heads "$h" --kv-heads "$kv" --intermediate "$ffn" --vocab "$v" >/dev/null 2>&1
  fi
  sed -e "s|@TEACHER@|$dir|" -e "s|@DATA@|$PWD/experiments/data/shakespeare|" \
    -e "s|@SEQ_LEN@|$t|" experiments/scale/scale.toml >"$dir.toml"
  /usr/bin/time -f "%M" -o "$dir.time" "$GENAS" teacher import "$dir" --experiment "$dir.toml" \
    --out "$dir.check" --json >"$dir.json" 2>"$dir.err"
  params=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["params"])' "$dir.json")
  est=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["estimated_peak_bytes"])' "$dir.json")
  row "$name" import "$params" "$est" "$(measured "$dir.time")"

  sed -e "s|@TEACHER@|$dir|" -e "s|@DATA@|$PWD/experiments/data/shakespeare|" \
    -e "s|@SEQ_LEN@|$t|" -e "s|@INIT@|$init|" experiments/scale/memory.toml >"$dir.memory.toml"
  rm -rf "$dir.archive"
  /usr/bin/time -f "%M" -o "$dir.search.time" "$GENAS" search "$dir.memory.toml" \
    --archive "$dir.archive" >"$dir.search.out" 2>"$dir.search.err"
  row "$name" search "$params" "$(said "$dir.search.err")" "$(measured "$dir.search.time")"

  /usr/bin/time -f "%M" -o "$dir.distill.time" "$GENAS" distill r1 --front --steps 4 \
    --archive "$dir.archive" >"$dir.distill.out" 2>"$dir.distill.err"
  row "$name" distill "$params" "$(said "$dir.distill.err")" "$(measured "$dir.distill.time")"
done
