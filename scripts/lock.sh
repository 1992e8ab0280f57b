#!/usr/bin/env bash
# Regenerate requirements.lock: exact pins of every runtime and dev dependency of pyproject.toml
# and of everything they pull in, for CPython 3.11 on Linux (what scripts/bootstrap.sh installs
# from). Run it after changing a dependency in pyproject.toml, or to take newer releases within
# its ranges (--upgrade, or --upgrade-package NAME); then run scripts/test.sh and commit both
# files. tests/unit/test_lockfile.py fails while they disagree.
# pip-tools runs in a throwaway virtualenv, so neither .venv nor the lock depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_TOOLS_VERSION=7.6.2
python=${PYTHON:-.venv/bin/python}
[[ -x $python ]] || {
    echo "lock: no $python: run scripts/bootstrap.sh first, or set PYTHON=/path/to/python3.11" >&2
    exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$work/venv/bin/pip" install -q "pip-tools==$PIP_TOOLS_VERSION"
# The extra `samples` (scikit-image, for scripts/make_samples.py) is left out: bootstrap does not
# install it. No index or find-links line is written: the lock installs from pip's configured
# index, whatever it is on the machine.
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$work/venv/bin/pip-compile" \
    --quiet --extra dev --strip-extras --no-emit-index-url --no-emit-find-links \
    --output-file requirements.lock "$@" pyproject.toml
echo "lock: wrote requirements.lock ($(grep -c '==' requirements.lock) pins)"
