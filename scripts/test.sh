#!/usr/bin/env bash
# Set everything up on a fresh machine, lint, and run the test suite (what .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
# the browser test drives Debian's chromium (no browser download)
if ! command -v chromium >/dev/null 2>&1; then export FMNIST_APT_EXTRA="${FMNIST_APT_EXTRA:-} chromium"; fi
# the scale-out tests start a throwaway PostgreSQL server from Debian's package on loopback
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  export FMNIST_APT_EXTRA="${FMNIST_APT_EXTRA:-} postgresql"
fi
bash scripts/setup.sh dev
.venv/bin/ruff check src tests benchmarks
set +e
.venv/bin/python -m pytest -q -m "" "$@"  # every tier: slow, browser and postgres too
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "test.sh: pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
