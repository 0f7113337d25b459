#!/usr/bin/env bash
# Installs what the tests need and runs every test, as root: lint, the unit
# and host tests here, and the kernel suite inside Debian's 6.1 and 6.12
# kernels and the newest one Debian ships, booted with virtme-ng. Exits non-zero if anything failed, skipped
# in a guest, or did not run. Options: see `scripts/run_tests.py --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python scripts/run_tests.py "$@"
