#!/usr/bin/env bash
# Vendor the upload page's browser library: install web/package-lock.json exactly (npm ci) and
# copy tus-js-client's browser bundle and its licence into services/gateway/static/vendor/,
# which is committed and shipped in the package (no build step, nothing from a CDN).
# To upgrade: change the version in web/package.json, `npm install` in web/ (updates the lock),
# run this script, run tests/e2e/test_upload_page.py, commit web/ and the vendor directory.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd web && npm ci --no-audit --no-fund --loglevel=error)
src=web/node_modules/tus-js-client
dest=services/gateway/static/vendor
mkdir -p "$dest"
cp "$src/dist/tus.min.js" "$dest/tus.min.js"
cp "$src/LICENSE" "$dest/tus-js-client.LICENSE"
# The browser bundle also carries these packages (browserify); their licences ship beside it.
for bundled in js-base64 url-parse querystringify requires-port; do
    cp web/node_modules/$bundled/LICENSE* "$dest/$bundled.LICENSE"
done
version=$(node -p "require('./$src/package.json').version")
echo "tus-js-client $version" > "$dest/VERSION"
echo "vendor-web: tus-js-client $version -> $dest/tus.min.js"
