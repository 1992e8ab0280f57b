#!/usr/bin/env bash
# The test suite: unit, integration (real RabbitMQ, PostgreSQL, SeaweedFS, clamd; started if
# needed, a failure if one cannot be had) and end-to-end. Installs first if needed
# (scripts/bootstrap.sh). Arguments go to pytest, e.g.  scripts/test.sh tests/unit -k compose
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
