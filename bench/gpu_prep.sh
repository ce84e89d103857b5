#!/usr/bin/env bash
# The carried folders for issue 17's device run (bench/gpu_issue17.sh): ../shared/gpu/prep.sh,
# then two wheels it does not carry. uvloop goes into .gpu1/whl, which call 1 installs: it is a
# dependency of speechgw on Linux (server.event_loop auto), and without it the gateway on the
# GPU machine ran asyncio's loop, a fifth more GIL per stream than users get. py-spy goes into
# .gpu2 for bench/gil_budget.py. Run from the checkout's root, with its .venv.
set -euo pipefail
bash ../shared/gpu/prep.sh
download=(.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12
  --platform manylinux2014_x86_64)
"${download[@]}" -d .gpu1/whl uvloop 2> >(grep -v "^WARNING: Location" >&2)
"${download[@]}" -d .gpu2 py-spy 2> >(grep -v "^WARNING: Location" >&2)
du -sh .gpu1 .gpu2
for carry in .gpu1 .gpu2; do
  total=$(( $(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1) + $(du -sb "$carry" | cut -f1) ))
  echo "a call carrying $carry: $((total / 1048576)) MiB of 64"
  [ "$total" -lt $((64 * 1048576)) ] || { echo "gpu_prep: $carry makes a call over 64 MiB" >&2; exit 1; }
done
