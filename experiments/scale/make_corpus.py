"""Writes a corpus of about SIZE megabytes for the corpus scale check (corpus.sh): alternately
.txt files and .jsonl files of one 20-line document per record. The text is the repository's
public-domain corpora (experiments/data: Shakespeare, the King James Bible, ~7 MB of
non-blank lines), its lines reshuffled per file with a fixed seed, so no two files are the
same text.

    python experiments/scale/make_corpus.py OUT_DIR [--size-mb 2048]
"""
import argparse
import json
import pathlib
import random

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--size-mb", type=int, default=2048)
args = ap.parse_args()
root = pathlib.Path(__file__).resolve().parent.parent / "data"
lines = []
for folder in ("shakespeare", "kjv"):
    for f in sorted((root / folder).glob("*.txt")):
        lines.extend(l for l in f.read_text(encoding="utf-8").splitlines() if l.strip())
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)
target = args.size_mb << 20
per_file = 64 << 20
written, n = 0, 0
rng = random.Random(31)
while written < target:
    rng.shuffle(lines)
    size = min(per_file, target - written)
    if n % 2 == 0:
        path = out / f"part-{n:04d}.txt"
        with open(path, "w", encoding="utf-8") as f:
            got = 0
            for l in lines:
                if got >= size:
                    break
                f.write(l + "\n")
                got += len(l) + 1
    else:
        # Documents of 20 lines, one per record.
        path = out / f"part-{n:04d}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            got = 0
            for i in range(0, len(lines), 20):
                if got >= size:
                    break
                rec = json.dumps({"text": "\n".join(lines[i:i + 20]), "id": i}) + "\n"
                f.write(rec)
                got += len(rec)
    written += path.stat().st_size
    n += 1
print(f"{n} files, {written / 1e6:.0f} MB in {out}")
