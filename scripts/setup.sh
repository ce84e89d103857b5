#!/usr/bin/env bash
# Set up speechgw on a Debian machine with Python >= 3.11: system packages, a virtual environment
# in .venv, and speechgw installed into it (editable). Safe to run again; it skips what is done.
#
#   scripts/setup.sh          # what the gateway needs
#   scripts/setup.sh --test   # plus what the tests need (espeak-ng, sox, chromium, node, pytest)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
with_tests=false
[[ "${1:-}" == "--test" ]] && with_tests=true

packages=()
"$python" -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
if $with_tests; then
    command -v espeak-ng >/dev/null || packages+=(espeak-ng)
    command -v sox >/dev/null || packages+=(sox)
    # the browser test of the page at /, and the Node.js example's test
    command -v chromium >/dev/null || packages+=(chromium)
    command -v node >/dev/null || packages+=(nodejs)
    command -v npm >/dev/null || packages+=(npm)
fi
if ((${#packages[@]})); then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo=sudo
    echo "setup: installing system packages: ${packages[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: speechgw needs Python 3.11 or newer ($python is $("$python" -V 2>&1))" >&2
    exit 1
}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
if $with_tests; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
else
    .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
echo "setup: done (.venv)"
