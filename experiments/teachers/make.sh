#!/usr/bin/env bash
# Makes experiments/teachers/quick.safetensors, the teacher the default experiment
# (experiments/quick.toml) distils from: its [teacher] config trained by genas on the shipped
# Shakespeare corpus, then written with `genas teacher export`. The file holds the teacher's
# key (corpus fingerprint, architecture, steps, batch, learning rate, seed), so genas takes it
# only for exactly that teacher. Deterministic: the same genas gives the same bytes.
#
# Usage: bash experiments/teachers/make.sh [GENAS]   (default: target/release/genas, built here)
set -euo pipefail
cd "$(dirname "$0")/../.."
genas=${1:-target/release/genas}
if [ "$genas" = target/release/genas ]; then
  cargo build --release --bin genas
fi
work=$(mktemp -d)
# The experiment without its checkpoint line (the file it names is what this makes), beside
# the original so its relative data path still resolves.
exp=experiments/.quick-teacher-make.toml
trap 'rm -rf "$work" "$exp"' EXIT
sed '/^checkpoint = /d' experiments/quick.toml > "$exp"
"$genas" teacher train "$exp" --archive "$work/archive"
"$genas" teacher export "$exp" --archive "$work/archive" --out experiments/teachers/quick.safetensors
