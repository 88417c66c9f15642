#!/usr/bin/env bash
# Vendor the viewer's JavaScript (Leaflet) from npm into globalflux/serve/static/vendor/, so that
# `globalflux serve` ships it in the wheel and never fetches anything from a CDN at run time.
#
#   bash scripts/vendor_js.sh            # re-vendor the versions pinned in scripts/js/package-lock.json
#
# To upgrade: change the version in scripts/js/package.json, run `npm install --ignore-scripts`
# in scripts/js (updates package-lock.json), then this script; commit all three and the vendor folder.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp scripts/js/package.json scripts/js/package-lock.json "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund)
src="$work/node_modules/leaflet"
dest="globalflux/serve/static/vendor/leaflet"
rm -rf "$dest"
mkdir -p "$dest/images"
cp "$src/dist/leaflet.js" "$src/dist/leaflet.css" "$dest/"
cp "$src/dist/images/"*.png "$dest/images/"
cp "$src/LICENSE" "$dest/LICENSE"
version="$(node -p "require('$src/package.json').version")"
echo "leaflet $version (npm, BSD-2-Clause); vendored by scripts/vendor_js.sh" > "$dest/VERSION"
echo "vendored leaflet $version into $dest"
