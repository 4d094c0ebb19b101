#!/usr/bin/env bash
# Prints the ONNX Runtime shared library of the onnxruntime wheel in the Python environment
# ($CAER_VENV, made by scripts/setup.sh): what the `ort` feature loads (ORT_DYLIB_PATH).
set -euo pipefail
venv=${CAER_VENV:-/opt/caer/venv}
exec "$venv/bin/python" -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))[-1])'
