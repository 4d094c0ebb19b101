#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent, quick when done before):
# the Debian packages listed below and the Python environment of model-export (pinned in
# model-export/requirements.lock) at $CAER_VENV. The Rust toolchain (cargo with clippy and
# rustfmt, Rust >= 1.85) must already be there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CAER_VENV:-/opt/caer/venv}

# mosquitto: the real broker of the end-to-end tests; strace: the privacy test; systemd
# (systemd-analyze) and shellcheck: the board's unit file and install script tests;
# libclang-dev: the v4l crate's bindings (feature v4l2); python3-venv: the Python environment.
apt_packages=(mosquitto strace systemd shellcheck libclang-dev pkg-config python3-venv)

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust >= 1.85 with clippy and rustfmt (https://rustup.rs)" >&2
  exit 1
fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

want=$(sha256sum model-export/requirements.lock | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating the Python environment at $venv (torch is large: a few minutes)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r model-export/requirements.lock
  echo "$want" > "$venv/.requirements.sha256"
fi
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e model-export
