#!/usr/bin/env bash
# Install the project and its pinned Python packages into a virtualenv: the one way, used by
# deploy/local/setup.sh (the local stack, tests) and deploy/docker/Dockerfile (the cluster
# image), so that both run the same pins (pyproject.toml + constraints.txt).
#   deploy/install-python.sh VENV_DIR [EXTRAS]     e.g. deploy/install-python.sh .venv dev
# Run from the project root. PYTHON picks the interpreter (default python3.11, else python3).
set -euo pipefail
VENV=${1:?usage: deploy/install-python.sh VENV_DIR [EXTRAS]}
EXTRAS=${2:-}
PIP_VERSION=24.3.1
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "install-python: Python 3.11 is required (apache-flink 2.0.2 wheels); found $("$PY" --version)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-cache-dir --upgrade "pip==$PIP_VERSION"
"$VENV/bin/python" -m pip install -q --no-cache-dir -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"
