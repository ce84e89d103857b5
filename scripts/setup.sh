#!/usr/bin/env bash
# Set up speechgw on a Debian machine with Python >= 3.11: system packages, a virtual environment
# in .venv, and speechgw installed into it (editable). Safe to run again; it skips what is done.
#
#   scripts/setup.sh          # what the gateway needs
#   scripts/setup.sh --test   # plus what the tests need (espeak-ng, sox, chromium, node,
#                             # postgresql, nginx, pytest)
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
    # the fleet tests: a private PostgreSQL cluster where none listens, nginx in front
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || packages+=(nginx)
    # an HTTP/2 client for the TLS tests
    command -v curl >/dev/null || packages+=(curl)
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

# Installed already for this pyproject.toml (and, for --test, with the test extras)? Then there
# is nothing to do: a second start goes straight to serving.
digest=$(sha256sum pyproject.toml | cut -c1-16)
stamp_test=.venv/.speechgw-installed-$digest-test
stamp_base=.venv/.speechgw-installed-$digest-base
if [[ -x .venv/bin/speechgw && ( -f $stamp_test || ( $with_tests == false && -f $stamp_base ) ) ]]; then
    exit 0
fi

target=.
stamp=$stamp_base
if $with_tests; then
    target='.[test]'
    stamp=$stamp_test
fi
echo "setup: installing speechgw and its Python packages into .venv (the first time takes a minute)"
# pip and setuptools talk at length about things a user cannot act on (editable-install
# notices); their output is shown only when the install fails.
if ! log=$(.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 &&
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$target" 2>&1); then
    echo "$log" >&2
    echo "setup: installing the Python packages failed (output above)" >&2
    exit 1
fi
rm -f .venv/.speechgw-installed-*
touch "$stamp"
echo "setup: done (.venv)"
