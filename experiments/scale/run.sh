#!/usr/bin/env bash
# The scale check (issue 31): a teacher of SmolLM2-135M's shape with its tokenizer, made here by
# transformers (make_teacher.py, nothing downloaded or committed), imported at a long context,
# then a search with a deliberately small budget from it, end to end. Prints the time and peak
# RSS of each stage (the search's stages each with their own), the teacher's forward tokens/s in
# genas and in PyTorch CPU (same model, f32, same threads, same run), and the memory target for
# the import and the soft targets: 2 × the teacher's f32 weights + 2 GB.
#
#   bash experiments/scale/run.sh [OUT_DIR]        (default /tmp/genas-scale)
#
# Environment: SEQ_LEN (default 2048), PYTHON (default python3; needs torch, transformers,
# tokenizers: .ci/venv/bin/python3 has them), GENAS (default target/release/genas, built
# here first), THREADS (default: every core).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/genas-scale}
SEQ_LEN=${SEQ_LEN:-2048}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-$(nproc)}
if [ -z "${GENAS:-}" ]; then
  cargo build --release --quiet --bin genas
  GENAS=target/release/genas
fi
mkdir -p "$OUT"
export GENAS_CACHE_DIR="$OUT/cache"

stage() {
  local name=$1
  shift
  /usr/bin/time -f "%e %M" -o "$OUT/$name.time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || {
    echo "$name failed:" >&2
    tail -5 "$OUT/$name.err" >&2
    exit 1
  }
  read -r secs kib <"$OUT/$name.time"
  printf '%-10s %8.1f s  peak RSS %6d MB\n' "$name" "$secs" $((kib / 1024))
}

if [ ! -f "$OUT/teacher/model.safetensors" ]; then
  stage make "$PYTHON" experiments/scale/make_teacher.py "$OUT/teacher" --context "$SEQ_LEN"
fi
# The experiment: the shipped corpus in the teacher's vocabulary at SEQ_LEN tokens, students in
# the teacher's own block, 4 candidates, one 10-step rung of batch 4.
sed -e "s|@TEACHER@|$OUT/teacher|" -e "s|@DATA@|$PWD/experiments/data/shakespeare|" \
  -e "s|@SEQ_LEN@|$SEQ_LEN|" experiments/scale/scale.toml >"$OUT/scale.toml"
rm -rf "$OUT/archive" "$OUT/check"
stage import "$GENAS" teacher import "$OUT/teacher" --experiment "$OUT/scale.toml" \
  --out "$OUT/check" --json
# The search, stage by stage (the teacher measured, its soft targets cached, the proxies
# calibrated, the run): time and the peak resident memory sampled within each.
"$PYTHON" experiments/scale/stages.py search "$OUT" -- "$GENAS" search "$OUT/scale.toml" \
  --archive "$OUT/archive" --threads 1 --plot "$OUT/front.svg" | tee "$OUT/search.stages"
# The import's check in transformers (two sequences of SEQ_LEN, 16 positions each).
"$PYTHON" "$OUT/check/genas_check.py" >"$OUT/check.out" 2>"$OUT/check.err" || true
printf 'check      %s\n' "$(cat "$OUT/check.out")"
"$PYTHON" experiments/scale/torch_forward.py "$OUT/teacher" "$SEQ_LEN" "$THREADS" >"$OUT/torch.out"
"$PYTHON" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
imp = json.load(open(f"{out}/import.out"))
torch = float(open(f"{out}/torch.out").read().split()[1])
params = imp["params"]
target = 2 * 4 * params + 2 * 2**30
imp_peak = int(open(f"{out}/import.time").read().split()[1]) * 1024
# The search's peak up to the end of caching the soft targets (its next stage's line).
soft = 0
for line in open(f"{out}/search.stages"):
    soft = max(soft, float(line.split()[3]) * 2**20)
    if "soft targets" in line:
        break
peak = max(imp_peak, soft)
print(f"teacher    {params:,} params, context {imp['measured_context']}, vocabulary {imp['vocab_size']:,}")
print(f"forward    genas {imp['tokens_per_s']:.0f} tokens/s, PyTorch CPU {torch:.0f} tokens/s "
      f"(ratio {imp['tokens_per_s'] / torch:.2f})")
print(f"memory     import and soft targets: peak {peak / 2**20:.0f} MB against the target "
      f"{target / 2**20:.0f} MB (2 x f32 weights + 2 GB): {'within' if peak <= target else 'OVER'}")
PY
