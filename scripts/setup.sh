#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent, quick when done before):
# the Debian packages listed below (none yet: the daemon's tests, which need mosquitto and
# strace, have not landed) and the Python environment of model-export (pinned in
# model-export/requirements.lock) at $CAER_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CAER_VENV:-/opt/caer/venv}

apt_packages=()
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
