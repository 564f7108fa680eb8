#!/usr/bin/env bash
# Checks the source (ruff, mypy, lint-imports), then runs every test: unit, property and
# end-to-end (real uvicorn with TLS, curl, nginx doing SSL termination, redis-server),
# after installing what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash scripts/setup.sh | tail -n 1)
export PATH="$(dirname "$(command -v "$py")"):$PATH"
# the source first: lint, format, types, import layers (configuration in pyproject.toml)
"$py" -m ruff check .
"$py" -m ruff format --check .
"$py" -m mypy
"$py" -c "from importlinter.cli import lint_imports_command; lint_imports_command()"
exec "$py" -m pytest "$@"
