#!/usr/bin/env python3
"""Writes experiments/data/kjv/: the first twelve books of the King James Version (Genesis to
2 Kings), one file per book, one verse per line without its reference.

The text comes from Debian's `bible-kjv` program and its `bible-kjv-text` data (the KJV of
1611, out of copyright; the package's copyright file says so):

    apt-get install bible-kjv
    python3 experiments/data/make_kjv.py

It is genas's second text corpus, beside Shakespeare: a different author, century and register,
for checking that what the benchmarks measure is not a property of one corpus.
"""

import re
import subprocess
from pathlib import Path

# (file name, the program's name of the book)
BOOKS = [
    ("01_genesis", "Genesis"),
    ("02_exodus", "Exodus"),
    ("03_leviticus", "Leviticus"),
    ("04_numbers", "Numbers"),
    ("05_deuteronomy", "Deuteronomy"),
    ("06_joshua", "Joshua"),
    ("07_judges", "Judges"),
    ("08_ruth", "Ruth"),
    ("09_1_samuel", "1Samuel"),
    ("10_2_samuel", "2Samuel"),
    ("11_1_kings", "1Kings"),
    ("12_2_kings", "2Kings"),
]

REFERENCE = re.compile(r"^\S+?\d+:\d+ ")


def book(name: str) -> str:
    # -f: one verse per line, "Ge1:1 In the beginning ..."; a chapter range past the book's
    # end stops at its end.
    out = subprocess.run(
        ["bible", "-f", f"{name}1:1-{name}999:999"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    verses = [REFERENCE.sub("", line).strip() for line in out.splitlines()]
    verses = [v for v in verses if v]
    if not verses:
        raise SystemExit(f"bible printed nothing for {name}")
    return "\n".join(verses) + "\n"


def main() -> None:
    dest = Path(__file__).resolve().parent / "kjv"
    dest.mkdir(exist_ok=True)
    total = 0
    for file, name in BOOKS:
        text = book(name)
        (dest / f"{file}.txt").write_text(text, encoding="utf-8")
        total += len(text)
        print(f"{file}.txt: {len(text):,} characters")
    print(f"{total:,} characters in {dest}")


if __name__ == "__main__":
    main()
