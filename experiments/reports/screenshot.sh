#!/usr/bin/env bash
# Screenshots of a report written by `genas report`, as a reader's browser shows it: Debian's
# chromium, headless, at 1280 and 800 pixels wide, the first HEIGHT pixels (default 1400).
#   bash experiments/reports/screenshot.sh experiments/reports/quick-r1 [HEIGHT]
# writes DIR/screenshot-1280.png and DIR/screenshot-800.png. The report's own test checks the
# layout of every page it renders (search/tests/report.rs); these are for looking at.
set -euo pipefail
dir=$(cd "$1" && pwd)
height=${2:-1400}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
for width in 1280 800; do
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size="$width,$height" \
    --screenshot="$dir/screenshot-$width.png" "file://$dir/report.html" 2>/dev/null
done
ls -l "$dir"/screenshot-*.png
