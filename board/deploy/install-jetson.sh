#!/usr/bin/env bash
# Installs caerd on a Jetson (JetPack), or into a staged root filesystem with --root.
#
# Puts in place:
#   /usr/local/bin/caerd                         the daemon (--bin)
#   /etc/caer/caerd.toml                         from the example (--config-example), only if absent
#   /var/lib/caer/models/<bundle>/               the model bundle (--models), replaced as a whole
#   /etc/systemd/system/caerd.service            the unit (+ caerd.service.d/jetson-gpu.conf, --gpu)
#   /etc/sysusers.d/caer.conf                    the caer user and the gpio group
#   /etc/tmpfiles.d/caer.conf                    ownership of /etc/caer and /var/lib/caer
#   /etc/udev/rules.d/99-caer-gpio.rules         /dev/gpiochip* to the gpio group
# and enables caerd.service.
#
# On the live system (no --root) it also creates the accounts (systemd-sysusers), applies the
# ownership (systemd-tmpfiles), reloads udev and systemd. With --root DIR it only writes files
# under DIR (and the enable symlink); the accounts and ownership are then applied at first boot
# by systemd-sysusers.service and systemd-tmpfiles-setup.service.
#
# Idempotent: a second run gives the same result and keeps an existing /etc/caer/caerd.toml.
# The unit, sysusers, tmpfiles and udev files are taken from ../systemd next to this script.

set -euo pipefail

readonly PROG=install-jetson.sh
readonly UNIT=caerd.service

usage() {
    cat <<'EOF'
Usage: install-jetson.sh [OPTIONS]

Options:
  --bin FILE              caerd binary for aarch64 (default: ./caerd)
  --config-example FILE   example config, installed as /etc/caer/caerd.toml if absent
                          (default: ./caerd.example.toml)
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

BIN=./caerd
CONFIG_EXAMPLE=./caerd.example.toml
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
        --bin) need_value "$@"; BIN=$2; shift ;;
        --config-example) need_value "$@"; CONFIG_EXAMPLE=$2; shift ;;
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
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
SYSTEMD_DIR=$(cd -- "$SCRIPT_DIR/../systemd" 2>/dev/null && pwd) ||
    die "no systemd/ directory next to $SCRIPT_DIR (run the script from its source tree)"
for f in caerd.service caer.sysusers caer.tmpfiles 99-caer-gpio.rules \
    caerd.service.d/jetson-gpu.conf; do
    [ -f "$SYSTEMD_DIR/$f" ] || die "missing $SYSTEMD_DIR/$f (run the script from its source tree)"
done
if [ ! -f "$BIN" ] || [ ! -x "$BIN" ]; then
    die "caerd binary '$BIN' is missing or not executable (--bin FILE)"
fi
[ -f "$CONFIG_EXAMPLE" ] || die "example config '$CONFIG_EXAMPLE' is missing (--config-example FILE)"
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
    for tool in systemd-sysusers systemd-tmpfiles systemctl install; do
        command -v "$tool" >/dev/null || die "'$tool' not found: is this a systemd system?"
    done
fi

log "installing into ${ROOT}$([ "$DRY_RUN" = 1 ] && printf ' (dry run: nothing is changed)')"

# Accounts and ownership rules first: the live steps below need the caer user.
run install -D -m 0644 "$SYSTEMD_DIR/caer.sysusers" "$R/etc/sysusers.d/caer.conf"
run install -D -m 0644 "$SYSTEMD_DIR/caer.tmpfiles" "$R/etc/tmpfiles.d/caer.conf"
run install -D -m 0644 "$SYSTEMD_DIR/99-caer-gpio.rules" "$R/etc/udev/rules.d/99-caer-gpio.rules"
if [ "$LIVE" = 1 ]; then
    run systemd-sysusers /etc/sysusers.d/caer.conf
else
    log "accounts: created at first boot by systemd-sysusers from /etc/sysusers.d/caer.conf"
fi

# Binary and unit.
run install -D -m 0755 "$BIN" "$R/usr/local/bin/caerd"
run install -D -m 0644 "$SYSTEMD_DIR/caerd.service" "$R/etc/systemd/system/$UNIT"
DROPIN=$R/etc/systemd/system/$UNIT.d/jetson-gpu.conf
if [ "$GPU" = 1 ]; then
    run install -D -m 0644 "$SYSTEMD_DIR/caerd.service.d/jetson-gpu.conf" "$DROPIN"
elif [ -e "$DROPIN" ]; then
    log "keeping the GPU drop-in from an earlier --gpu install: $DROPIN"
fi

# Config: only from the example when there is none yet.
run install -d -m 0750 "$R/etc/caer"
if [ -e "$R/etc/caer/caerd.toml" ]; then
    log "keeping the existing config $R/etc/caer/caerd.toml"
else
    run install -m 0640 "$CONFIG_EXAMPLE" "$R/etc/caer/caerd.toml"
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

# Ownership, udev and systemd on the live system.
if [ "$LIVE" = 1 ]; then
    run systemd-tmpfiles --create /etc/tmpfiles.d/caer.conf
    if command -v udevadm >/dev/null || [ "$DRY_RUN" = 1 ]; then
        run udevadm control --reload-rules
        run udevadm trigger --subsystem-match=gpio --action=add
    fi
    run systemctl daemon-reload
    if [ "$ENABLE" = 1 ]; then
        run systemctl enable "$UNIT"
    fi
    if [ "$START" = 1 ]; then
        run systemctl restart "$UNIT"
    fi
else
    log "ownership: applied at first boot by systemd-tmpfiles from /etc/tmpfiles.d/caer.conf"
    if [ "$ENABLE" = 1 ]; then
        # What `systemctl enable` does for WantedBy=multi-user.target.
        run install -d -m 0755 "$R/etc/systemd/system/multi-user.target.wants"
        run ln -sfn "/etc/systemd/system/$UNIT" "$R/etc/systemd/system/multi-user.target.wants/$UNIT"
    fi
fi

log "done: caerd -> $R/usr/local/bin/caerd, models -> $DEST, config $R/etc/caer/caerd.toml"
