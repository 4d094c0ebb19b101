#!/usr/bin/env bash
# Installs what building the Rust workspace needs beyond cargo (Debian packages), if missing:
# cmake and nasm build the bundled libjpeg-turbo of the turbojpeg crate (JPEG decoded as
# Pillow decodes it). Called by run.sh and setup.sh; quick when done before.
set -euo pipefail
build_packages=(cmake nasm)
missing=()
for p in "${build_packages[@]}"; do
  command -v "$p" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "build-deps: please install ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "build-deps: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
