#!/usr/bin/env bash
# From a fresh checkout to a report: set up .venv, run the default suite (suites/cnn.yaml),
# write results/ and reports/cnn.html. Extra arguments go to `qbench run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
qbench run suites/cnn.yaml "$@"
