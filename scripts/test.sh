#!/usr/bin/env bash
# The test suite: first the static checks (ruff lint and format, mypy --strict on shared/ and
# services/, the import-linter contracts of pyproject.toml that keep the layers apart), then
# pytest: unit, integration (real RabbitMQ, PostgreSQL, SeaweedFS, clamd; started if needed, a
# failure if one cannot be had), end-to-end and fault tests. Installs first if needed
# (scripts/bootstrap.sh). Arguments go to pytest, e.g.  scripts/test.sh tests/unit -k compose
# SLUICE_TEST_CHECKS=0 skips the static checks (for a quick subset while working).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [[ ${SLUICE_TEST_CHECKS:-1} != 0 ]]; then
    echo "checks: ruff, mypy, import contracts"
    .venv/bin/ruff check --quiet .
    .venv/bin/ruff format --check --quiet .
    .venv/bin/mypy shared services
    .venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
fi
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
