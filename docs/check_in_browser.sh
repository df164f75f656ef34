#!/usr/bin/env bash
# Look at the built site in a real browser, offline: headless Chromium opens pages of the
# site from disk, with the network switched off, and saves screenshots to look at (are the
# formulas typeset, do the figures show?).
#
#   bash docs/check_in_browser.sh [SITE_DIR] [OUT_DIR]
#
# SITE_DIR defaults to a fresh `mkdocs build --strict` into site/ (notebooks executed
# unless CONTROLDL_DOCS_EXECUTE=false); OUT_DIR defaults to site-screenshots/.
# Needs Chromium (Debian: apt-get install chromium). Exits 0 with a note when there is
# none, so CI may run it without a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
site=${1:-}
out=${2:-site-screenshots}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z "$browser" ]]; then
  echo "check_in_browser: no Chromium found (apt-get install chromium); nothing checked"
  exit 0
fi
if [[ -z "$site" ]]; then
  site=site
  python -m mkdocs build --strict --site-dir "$site"
fi
mkdir -p "$out"
pages=(
  "index.html home"
  "formulation/index.html formulation"
  "solvers/index.html solvers"
  "tutorials/index.html tutorials"
  "notebooks/01_first_control/index.html notebook_01"
)
for entry in "${pages[@]}"; do
  read -r page name <<<"$entry"
  [[ -f "$site/$page" ]] || { echo "check_in_browser: $site/$page is missing"; exit 1; }
  # --proxy-server to a closed port and no DNS: nothing outside the disk can load.
  timeout 120 "$browser" --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
    --proxy-server="127.0.0.1:9" --host-resolver-rules="MAP * ~NOTFOUND" \
    --window-size=1280,2400 --virtual-time-budget=5000 \
    --screenshot="$out/$name.png" "file://$(realpath "$site/$page")" 2>/dev/null
  echo "$out/$name.png"
done
