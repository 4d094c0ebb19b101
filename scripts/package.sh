#!/usr/bin/env bash
# The Debian packages of the daemon (cargo-deb, metadata in firmware/Cargo.toml), and their
# checks.
#
#   scripts/package.sh deps           installs cargo-deb (pinned, from crates.io) and lintian
#   scripts/package.sh build [ARCH]   amd64 and/or arm64 (default both) into target/debian/:
#                                     caerd_<version>_<arch>.deb, the binary stripped, and
#                                     caerd-dbgsym_<version>_<arch>.ddeb with its debug info.
#                                     arm64 packages the binary of `scripts/aarch64.sh build`.
#   scripts/package.sh check [ARCH]   lintian on both, or on those named (errors fail; the warnings we accept are
#                                     listed in board/debian/lintian-overrides with why), the
#                                     contents and control fields; then, as root, installs the
#                                     amd64 package on this machine: the caer user, the state
#                                     directory and the config's ownership exist, the unit
#                                     passes systemd-analyze verify, `caerd --demo` runs from
#                                     the installed files, and remove and purge leave
#                                     /var/lib/caer alone.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly CARGO_DEB_VERSION=3.8.0
tools=${CAER_TOOLS:-/opt/caer/tools}
cargo_deb=$tools/bin/cargo-deb
out=target/debian
aarch64_target_dir=${CAER_AARCH64_TARGET_DIR:-target/aarch64}

deps() {
  if [ ! -x "$cargo_deb" ] || ! "$cargo_deb" --version | grep -q "$CARGO_DEB_VERSION"; then
    echo "package: installing cargo-deb $CARGO_DEB_VERSION into $tools"
    cargo install --quiet --locked --version "$CARGO_DEB_VERSION" --root "$tools" cargo-deb
  fi
  if ! command -v lintian >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "package: please install lintian (apt-get install lintian)" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
  fi
}

build() {
  deps
  local arches=("$@")
  ((${#arches[@]})) || arches=(amd64 arm64)
  mkdir -p "$out"
  for arch in "${arches[@]}"; do
    local start=$SECONDS
    case "$arch" in
      amd64)
        "$cargo_deb" --locked -p caer-firmware --dbgsym --output "$out"
        ;;
      arm64)
        local bin=$aarch64_target_dir/aarch64-unknown-linux-gnu/release/caerd
        [ -x "$bin" ] || { echo "package: no $bin: run scripts/aarch64.sh build first" >&2; exit 1; }
        CARGO_TARGET_DIR=$aarch64_target_dir \
          "$cargo_deb" --locked -p caer-firmware --target aarch64-unknown-linux-gnu \
          --no-build --dbgsym --output "$out"
        ;;
      *)
        echo "package: unknown architecture $arch (amd64, arm64)" >&2
        exit 2
        ;;
    esac
    echo "package: $arch in $((SECONDS - start)) s"
  done
  ls -l "$out"
}

# The one package of `arch` in target/debian.
deb_of() {
  local found=("$out"/caerd_*_"$1".deb)
  if [ ! -f "${found[0]}" ] || [ "${#found[@]}" != 1 ]; then
    echo "package: expected one $out/caerd_*_$1.deb" >&2
    exit 1
  fi
  printf '%s\n' "${found[0]}"
}

fail() {
  echo "package check: $*" >&2
  exit 1
}

check_contents() {
  local deb=$1 arch=$2
  [ "$(dpkg-deb --field "$deb" Architecture)" = "$arch" ] || fail "$deb is not $arch"
  local contents
  contents=$(dpkg-deb --contents "$deb")
  for path in ./usr/bin/caerd ./usr/lib/systemd/system/caerd.service ./usr/lib/sysusers.d/caer.conf \
    ./usr/lib/tmpfiles.d/caer.conf ./lib/udev/rules.d/99-caer-gpio.rules ./etc/caer/caerd.toml \
    ./usr/share/caer/models/demo/manifest.json ./usr/share/caer/jetson-gpu.conf; do
    grep -q " $path\$" <<<"$contents" || fail "$deb lacks $path"
  done
  grep -q " ./var/lib/caer" <<<"$contents" && fail "$deb ships /var/lib/caer (the state directory belongs to tmpfiles, never to dpkg)"
  dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/caer/caerd.toml ||
    fail "$deb: /etc/caer/caerd.toml is not a conffile"
  local work
  work=$(mktemp -d)
  dpkg-deb -x "$deb" "$work"
  local machine
  machine=$(file -b "$work/usr/bin/caerd")
  if ! grep -q ", stripped" <<<"$machine"; then
    fail "$deb: caerd is not stripped ($machine)"
  fi
  rm -rf -- "$work"
  case "$arch" in
    amd64) grep -q "x86-64" <<<"$machine" || fail "$deb: caerd is $machine" ;;
    arm64) grep -q "aarch64" <<<"$machine" || fail "$deb: caerd is $machine" ;;
  esac
  local dbgsym=${deb/caerd_/caerd-dbgsym_}
  dbgsym=${dbgsym%.deb}.ddeb
  [ -f "$dbgsym" ] || fail "no debug symbols package $dbgsym"
  dpkg-deb --contents "$dbgsym" | grep -q "/usr/lib/debug/.build-id/" || fail "$dbgsym has no .build-id debug file"
  printf 'package: %s: %s KiB (installed %s KiB), debug symbols %s KiB\n' "$(basename "$deb")" \
    "$(($(stat -c %s "$deb") / 1024))" "$(dpkg-deb --field "$deb" Installed-Size)" \
    "$(($(stat -c %s "$dbgsym") / 1024))"
}

check_lintian() {
  local deb=$1
  # --fail-on error: warnings are printed, and accepted only through the overrides file.
  lintian --fail-on error,warning --suppress-tags-from-file board/debian/lintian-overrides "$deb"
  echo "package: lintian: $(basename "$deb") clean (with board/debian/lintian-overrides)"
}

check_install() {
  local deb=$1
  if [ "$(id -u)" -ne 0 ]; then
    echo "package: not root: the install test is skipped (it installs the package on this machine)"
    return 0
  fi
  echo "== installing $deb on this machine"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "./$deb" >/dev/null
  getent passwd caer | grep -q ":/var/lib/caer:/usr/sbin/nologin$" || fail "no caer user"
  [ "$(stat -c '%U:%G %a' /var/lib/caer)" = "caer:caer 750" ] || fail "/var/lib/caer is $(stat -c '%U:%G %a' /var/lib/caer)"
  [ "$(stat -c '%U:%G %a' /etc/caer/caerd.toml)" = "root:caer 640" ] ||
    fail "/etc/caer/caerd.toml is $(stat -c '%U:%G %a' /etc/caer/caerd.toml)"
  systemd-analyze verify /usr/lib/systemd/system/caerd.service 2>&1 |
    { grep -v "Failed to parse system call" || true; } | tee /tmp/caer-verify.log
  [ ! -s /tmp/caer-verify.log ] || fail "systemd-analyze verify complained"
  caerd --version | grep -q "^caerd " || fail "installed caerd does not run"
  # The installed binary finds the installed demo model (no source tree beside it).
  local demo
  demo=$(cd / && caerd --demo --lockstep --frames 20 | { grep -c '"caer.engagement.v2"' || true; })
  [ "$demo" -ge 1 ] || fail "the installed caerd --demo published no record"
  echo "marker" > /var/lib/caer/models/kept
  dpkg --remove caerd >/dev/null
  [ -f /var/lib/caer/models/kept ] || fail "remove deleted the state directory"
  dpkg --purge caerd >/dev/null
  [ -f /var/lib/caer/models/kept ] || fail "purge deleted the state directory"
  [ ! -e /usr/bin/caerd ] || fail "/usr/bin/caerd left after purge"
  rm -f /var/lib/caer/models/kept
  echo "package: installed, verified, removed and purged; /var/lib/caer kept"
}

check() {
  deps
  local arches=("$@") arch deb
  ((${#arches[@]})) || arches=(amd64 arm64)
  for arch in "${arches[@]}"; do
    deb=$(deb_of "$arch")
    check_contents "$deb" "$arch"
    check_lintian "$deb"
    # Only the package of this machine's architecture can be installed here.
    [ "$arch" != amd64 ] || check_install "$deb"
  done
}

case "${1:-}" in
  deps) deps ;;
  build) shift; build "$@" ;;
  check) shift; check "$@" ;;
  *)
    echo "usage: scripts/package.sh deps|build [amd64|arm64]...|check [amd64|arm64]..." >&2
    exit 2
    ;;
esac
