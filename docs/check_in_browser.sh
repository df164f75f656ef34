#!/usr/bin/env bash
# Look at the built site in a real browser, offline: headless Chromium opens pages of the
# site from disk (file://), with the network switched off, and saves screenshots to look
# at (are the formulas typeset, do the figures show?). Then it follows every link of the
# home page's navigation from disk and fails unless each one opens a page of the site
# (not a directory listing, not an error page).
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
# --proxy-server to a closed port and no DNS: nothing outside the disk can load.
offline=(--headless=new --no-sandbox --disable-gpu --hide-scrollbars
         --proxy-server="127.0.0.1:9" --host-resolver-rules="MAP * ~NOTFOUND")
pages=(
  "index.html home"
  "formulation.html formulation"
  "solvers.html solvers"
  "tutorials.html tutorials"
  "design.html design"
  "notebooks/01_first_control.html notebook_01"
)
for entry in "${pages[@]}"; do
  read -r page name <<<"$entry"
  [[ -f "$site/$page" ]] || { echo "check_in_browser: $site/$page is missing"; exit 1; }
  timeout 120 "$browser" "${offline[@]}" --window-size=1280,2400 --virtual-time-budget=5000 \
    --screenshot="$out/$name.png" "file://$(realpath "$site/$page")" 2>/dev/null
  echo "$out/$name.png"
done
# Every link of the home page's navigation, as the browser resolves it from disk.
home="file://$(realpath "$site/index.html")"
links=$(timeout 120 "$browser" "${offline[@]}" --dump-dom "$home" 2>/dev/null \
  | grep -o '<a [^>]*md-nav__link[^>]*>' | grep -o 'href="[^"#][^"]*"' \
  | sed 's/^href="//; s/"$//' | sort -u || true)
[[ -n "$links" ]] || { echo "check_in_browser: no navigation links on the home page"; exit 1; }
bad=0
for link in $links; do
  page=$(realpath -m "$site/$link")
  dom=$(timeout 120 "$browser" "${offline[@]}" --dump-dom "file://$page" 2>/dev/null || true)
  if [[ "$dom" != *'class="md-content"'* ]]; then
    echo "check_in_browser: $link does not open a page from disk"
    bad=1
  fi
done
[[ $bad -eq 0 ]] || exit 1
echo "check_in_browser: $(wc -w <<<"$links") navigation links open from disk"
