#!/usr/bin/env bash
# The quickstart: install, start the services, migrate, run every stage and the gateway,
# upload samples/ over HTTP and print what became of each file.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/sluice demo "$@"
