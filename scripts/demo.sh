#!/usr/bin/env bash
# Set up (if needed) and invent a handful of micro-genres.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/microgenre generate -n 10 "$@"
