#!/usr/bin/env bash
# Installs what the agent needs (apt packages, .venv, filewarden) and runs it
# in the foreground with its embedded default configuration, as root.
# Extra arguments go to `filewarden run` (see `filewarden run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh agent
exec .venv/bin/filewarden run "$@"
