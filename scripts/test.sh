#!/usr/bin/env bash
# Runs the test suite: sets up .venv (scripts/setup.sh), installs Chromium for the report's
# browser test where it is missing, lints, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the report's browser test" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# shellcheck disable=SC1091
. .venv/bin/activate
ruff check qbench tests benchmarks
python -m pytest "$@"
