#!/usr/bin/env bash
# Runs every test: unit, property and end-to-end (real uvicorn with TLS, curl,
# nginx doing SSL termination, redis-server), after installing what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash scripts/setup.sh | tail -n 1)
export PATH="$(dirname "$(command -v "$py")"):$PATH"
exec "$py" -m pytest "$@"
