#!/usr/bin/env bash
# Install everything the test suite needs, then run it: the README's second quick-start command.
#
#   scripts/test.sh                  # the whole suite (what CI runs)
#   scripts/test.sh tests/ir -x -q   # arguments go to pytest
#
# It makes .venv (python3, or $PYTHON) with Dandelion installed in editable mode and every
# feature's extra ("all"), installs the system programs that tests run for real (as root, with
# apt-get; elsewhere it says what is missing and those tests skip), and runs pytest. A pytest
# run that collects no test fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# System programs the tests start themselves (command -> Debian package).
declare -A SYSTEM_PROGRAMS=(
    [redis-server]=redis-server
    [gcc]=gcc
    [clang]=clang
    [wasm-ld]=lld
)

missing=()
for program in "${!SYSTEM_PROGRAMS[@]}"; do
    command -v "$program" >/dev/null 2>&1 || missing+=("${SYSTEM_PROGRAMS[$program]}")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "test.sh: warning: not installed: ${missing[*]}; the tests that need them skip" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all]'

status=0
.venv/bin/python -m pytest "$@" || status=$?
if ((status == 5)); then
    echo "test.sh: error: pytest collected no test" >&2
    exit 1
fi
exit "$status"
