#!/usr/bin/env bash
# Runs the test suite: sets up .venv (scripts/setup.sh), installs Chromium for the report's
# browser test and OpenSSH's server for the ssh transport's test where they are missing,
# lints, then runs pytest on the default set: every test but those marked slow (whole real
# models and long end-to-end grids; `-m slow` runs them, `-m ""` everything). Extra arguments
# go to pytest and come after the default marker, so a `-m` given here wins.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The ssh test starts its own sshd on loopback with throw-away keys; it needs only the binary.
# (On a host run by systemd, Debian's package also starts its sshd service on port 22.)
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian's ${missing[*]} for the tests" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# shellcheck disable=SC1091
. .venv/bin/activate
ruff check qbench tests benchmarks
python -m pytest -m "not slow" "$@"
