#!/usr/bin/env bash
# Runs every test of the project: the Python model pipeline, including the full-size ViT-B/32
# export. Installs what it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CAER_PYTHON=${CAER_VENV:-/opt/caer/venv}/bin/python
"$CAER_PYTHON" -m pytest model-export -q -p no:cacheprovider
