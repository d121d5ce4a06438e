#!/usr/bin/env bash
# The corpus scale check (issue 31, item 4): tokenizes a corpus of SIZE_MB megabytes (default
# 2048; half .txt, half .jsonl, made by make_corpus.py from the repository's public-domain
# texts) with a 49,152-entry BPE tokenizer, through `genas data inspect` of an experiment, and
# prints the time, MB/s and peak RSS of the first run (encoding into the token cache) and of a
# second (the cache mapped). Target: peak RSS ≤ 1 GB while tokenizing 2 GB.
#
#   bash experiments/scale/corpus.sh [OUT_DIR]     (default /tmp/genas-corpus)
#
# Environment: SIZE_MB, PYTHON (needs transformers and tokenizers: .ci/venv/bin/python3),
# TEACHER (a folder with config.json and tokenizer.json; default: made by make_teacher.py
# under OUT_DIR), GENAS (default target/release/genas, built here first).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/genas-corpus}
SIZE_MB=${SIZE_MB:-2048}
PYTHON=${PYTHON:-python3}
if [ -z "${GENAS:-}" ]; then
  cargo build --release --quiet --bin genas
  GENAS=target/release/genas
fi
mkdir -p "$OUT"
TEACHER=${TEACHER:-$OUT/teacher}
if [ ! -f "$TEACHER/tokenizer.json" ]; then
  "$PYTHON" experiments/scale/make_teacher.py "$TEACHER" --context 2048 >"$OUT/make.out" 2>&1
fi
if [ ! -f "$OUT/corpus.done" ] || [ "$(cat "$OUT/corpus.done")" != "$SIZE_MB" ]; then
  rm -rf "$OUT/corpus"
  "$PYTHON" experiments/scale/make_corpus.py "$OUT/corpus" --size-mb "$SIZE_MB"
  echo "$SIZE_MB" >"$OUT/corpus.done"
fi
sed -e "s|@TEACHER@|$TEACHER|" -e "s|@DATA@|$OUT/corpus|" -e "s|@SEQ_LEN@|2048|" \
  experiments/scale/scale.toml >"$OUT/corpus.toml"
export GENAS_CACHE_DIR="$OUT/cache"
rm -rf "$OUT/cache"
bytes=$(du -cb "$OUT"/corpus/* | tail -1 | cut -f1)
for run in encode mapped; do
  /usr/bin/time -f "%e %M" -o "$OUT/$run.time" "$GENAS" data inspect "$OUT/corpus.toml" --json \
    >"$OUT/$run.json" 2>"$OUT/$run.err"
  read -r secs kib <"$OUT/$run.time"
  printf '%-7s %8.1f s  %7.1f MB/s  peak RSS %5d MB\n' "$run" "$secs" \
    "$(echo "$bytes / 1000000 / $secs" | bc -l)" $((kib / 1024))
done
"$PYTHON" - "$OUT" "$bytes" "$TEACHER/tokenizer.json" <<'PY'
import json, os, sys, time
out, nbytes, tok_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
d = json.load(open(f"{out}/mapped.json"))
tokens = d["train_tokens"] + d["validation_tokens"]
cache = sum(os.path.getsize(f"{out}/cache/{f}") for f in os.listdir(f"{out}/cache"))
print(f"corpus {nbytes / 1e6:.0f} MB, {tokens:,} tokens ({d['tokens_per_char']:.3f} per "
      f"character), token cache {cache / 1e6:.0f} MB ({(cache - 32) / tokens:.0f} bytes a token)")
# The same tokenizer in Hugging Face's tokenizers (Python), on the first .txt file, cut into
# lines and encoded in a batch (its threads), in the same run: the reference speed.
from tokenizers import Tokenizer
tok = Tokenizer.from_file(tok_path)
first = sorted(f for f in os.listdir(f"{out}/corpus") if f.endswith(".txt"))[0]
text = open(f"{out}/corpus/{first}", encoding="utf-8").read()
lines = text.splitlines(keepends=True)
t = time.perf_counter()
tok.encode_batch(lines, add_special_tokens=False)
secs = time.perf_counter() - t
print(f"tokenizers (Python) on {first}: {len(text.encode()) / 1e6 / secs:.1f} MB/s")
PY
