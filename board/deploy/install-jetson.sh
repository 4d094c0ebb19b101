#!/usr/bin/env bash
# Installs caerd on a Jetson (JetPack) from its Debian package, with a model bundle; or stages
# both into a root filesystem with --root.
#
# The package (scripts/package.sh builds it: caerd_<version>_arm64.deb) holds:
#   /usr/bin/caerd                                the daemon
#   /usr/lib/systemd/system/caerd.service         the unit
#   /usr/lib/sysusers.d/caer.conf                 the caer user and the gpio group
#   /usr/lib/tmpfiles.d/caer.conf                 ownership of /etc/caer and /var/lib/caer
#   /lib/udev/rules.d/99-caer-gpio.rules          /dev/gpiochip* to the gpio group
#   /etc/caer/caerd.toml                          the example config (a conffile: kept on upgrade)
#   /usr/share/caer/models/demo/                  the demo model (caerd --demo)
#   /usr/share/caer/jetson-gpu.conf               the Jetson GPU drop-in (installed with --gpu)
# This script adds:
#   /var/lib/caer/models/<bundle>/                the model bundle (--models), replaced as a whole
#   /etc/systemd/system/caerd.service.d/jetson-gpu.conf   with --gpu (TensorRT / CUDA path)
# and enables caerd.service.
#
# On the live system (no --root) the package is installed with apt-get (dpkg registers it;
# its postinst creates the account and the ownership). With --root DIR the package's files
# are unpacked into DIR (dpkg-deb -x, for building an image; the package is then not
# registered in DIR's dpkg database) and the account and ownership are applied at first boot
# by systemd-sysusers.service and systemd-tmpfiles-setup.service; an existing
# DIR/etc/caer/caerd.toml is kept.
#
# Idempotent: a second run gives the same result and keeps an existing /etc/caer/caerd.toml.

set -euo pipefail

readonly PROG=install-jetson.sh
readonly UNIT=caerd.service

usage() {
    cat <<'EOF'
Usage: install-jetson.sh [OPTIONS]

Options:
  --deb FILE              the caerd Debian package (default: the only ./caerd_*.deb)
  --models DIR            model bundle directory (with manifest.json), installed as
                          /var/lib/caer/models/<name of DIR> (default: ./models)
  --root DIR              install into DIR (a staged root filesystem) instead of /
  --gpu                   also install the Jetson GPU device drop-in (TensorRT / CUDA path)
  --no-enable             do not enable caerd.service
  --start                 (re)start caerd.service after installing (live system only)
  --dry-run               print what would be done, change nothing
  -h, --help              this help
EOF
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

log() {
    printf '%s: %s\n' "$PROG" "$*"
}

DEB=
MODELS=./models
ROOT=/
GPU=0
ENABLE=1
START=0
DRY_RUN=0

need_value() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        printf '%s: error: %s needs a value\n' "$PROG" "$1" >&2
        usage >&2
        exit 2
    fi
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --deb) need_value "$@"; DEB=$2; shift ;;
        --models) need_value "$@"; MODELS=$2; shift ;;
        --root) need_value "$@"; ROOT=$2; shift ;;
        --gpu) GPU=1 ;;
        --no-enable) ENABLE=0 ;;
        --start) START=1 ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        *)
            printf '%s: error: unknown option %s\n' "$PROG" "$1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done

# Runs a command that changes something, or prints it under --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# Inputs.
if [ -z "$DEB" ]; then
    shopt -s nullglob
    debs=(./caerd_*.deb)
    shopt -u nullglob
    [ "${#debs[@]}" = 1 ] || die "pass the package with --deb FILE (found ${#debs[@]} ./caerd_*.deb)"
    DEB=${debs[0]}
fi
[ -f "$DEB" ] || die "package '$DEB' is missing (--deb FILE)"
command -v dpkg-deb >/dev/null || die "'dpkg-deb' not found: is this a Debian or Ubuntu system?"
PACKAGE=$(dpkg-deb --field "$DEB" Package 2>/dev/null) || die "'$DEB' is not a Debian package"
[ "$PACKAGE" = caerd ] || die "'$DEB' is the package '$PACKAGE', not caerd"
DEB=$(cd -- "$(dirname -- "$DEB")" && pwd)/$(basename -- "$DEB")
[ -d "$MODELS" ] || die "model bundle '$MODELS' is not a directory (--models DIR)"
MODELS=$(cd -- "$MODELS" && pwd)
[ -f "$MODELS/manifest.json" ] || die "model bundle '$MODELS' has no manifest.json"
BUNDLE=$(basename -- "$MODELS")

[ -d "$ROOT" ] || die "root '$ROOT' is not a directory"
ROOT=$(cd -- "$ROOT" && pwd)
R=${ROOT%/}
if [ -z "$R" ]; then
    LIVE=1
else
    LIVE=0
    [ "$START" = 0 ] || die "--start works on the live system only, not with --root"
fi
if [ "$LIVE" = 1 ] && [ "$DRY_RUN" = 0 ]; then
    [ "$(id -u)" = 0 ] || die "must run as root on the live system (or use --dry-run, or --root DIR)"
    for tool in apt-get systemd-tmpfiles systemctl install; do
        command -v "$tool" >/dev/null || die "'$tool' not found: is this a systemd Debian system?"
    done
fi

log "installing $(dpkg-deb --field "$DEB" Version) ($(dpkg-deb --field "$DEB" Architecture)) into ${ROOT}$([ "$DRY_RUN" = 1 ] && printf ' (dry run: nothing is changed)')"

# The package: installed (live), or its files unpacked (staged root).
if [ "$LIVE" = 1 ]; then
    run apt-get install -y --no-install-recommends "$DEB"
else
    if [ "$DRY_RUN" = 1 ]; then
        STAGE='<staging dir>'
    else
        STAGE=$(mktemp -d)
        trap 'rm -rf -- "$STAGE"' EXIT
    fi
    run dpkg-deb -x "$DEB" "$STAGE"
    if [ -e "$R/etc/caer/caerd.toml" ]; then
        log "keeping the existing config $R/etc/caer/caerd.toml"
        run rm "$STAGE/etc/caer/caerd.toml"
    fi
    run cp -a "$STAGE/." "$R/"
    log "accounts and ownership: applied at first boot (systemd-sysusers, systemd-tmpfiles)"
fi

# The GPU drop-in (from the package).
DROPIN=$R/etc/systemd/system/$UNIT.d/jetson-gpu.conf
if [ "$GPU" = 1 ]; then
    run install -D -m 0644 "$R/usr/share/caer/jetson-gpu.conf" "$DROPIN"
elif [ -e "$DROPIN" ]; then
    log "keeping the GPU drop-in from an earlier --gpu install: $DROPIN"
fi

# Model bundle: copied next to the old one, then swapped in.
MODELS_DIR=$R/var/lib/caer/models
DEST=$MODELS_DIR/$BUNDLE
run install -d -m 0750 "$R/var/lib/caer" "$MODELS_DIR"
run rm -rf "$DEST.new" "$DEST.old"
run cp -R "$MODELS" "$DEST.new"
run chmod -R u=rwX,g=rX,o= "$DEST.new"
if [ -e "$DEST" ]; then
    run mv "$DEST" "$DEST.old"
fi
run mv "$DEST.new" "$DEST"
run rm -rf "$DEST.old"

# Ownership and systemd on the live system.
if [ "$LIVE" = 1 ]; then
    run systemd-tmpfiles --create caer.conf
    run systemctl daemon-reload
    if [ "$ENABLE" = 1 ]; then
        run systemctl enable "$UNIT"
    else
        run systemctl disable "$UNIT"
    fi
    if [ "$START" = 1 ]; then
        run systemctl restart "$UNIT"
    fi
elif [ "$ENABLE" = 1 ]; then
    # What `systemctl enable` does for WantedBy=multi-user.target.
    run install -d -m 0755 "$R/etc/systemd/system/multi-user.target.wants"
    run ln -sfn "/usr/lib/systemd/system/$UNIT" "$R/etc/systemd/system/multi-user.target.wants/$UNIT"
fi

log "done: caerd -> $R/usr/bin/caerd, models -> $DEST, config $R/etc/caer/caerd.toml"
