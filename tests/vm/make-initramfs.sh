#!/usr/bin/env bash
# Builds the initramfs of the vivid VM test (tests/tests/vivid.rs):
#   make-initramfs.sh KERNEL_DIR CHECK_BINARY OUTPUT.cpio.gz
# KERNEL_DIR is a Debian linux-image package unpacked by scripts/setup.sh (boot/vmlinuz-*,
# lib/modules/VERSION/). The image holds busybox (static), CHECK_BINARY (stripped) with the
# shared libraries ldd lists and the dynamic loader, the vivid module with its dependencies
# (resolved from each module's `depends=`, in loading order) and an /init that loads them,
# runs the check and reports through qemu's isa-debug-exit device (port 0xf4): 1 when the
# check passes, 2 when it fails (qemu exits with 3 and 5).
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 KERNEL_DIR CHECK_BINARY OUTPUT.cpio.gz" >&2
  exit 2
fi
kernel_dir=$1
check=$2
output=$3
busybox=/bin/busybox
for tool in cpio gzip ldd; do
  command -v "$tool" >/dev/null || { echo "$0: $tool not found: run scripts/setup.sh" >&2; exit 1; }
done
if ! "$busybox" --list 2>/dev/null | grep -x insmod >/dev/null; then
  echo "$0: $busybox (busybox-static) not found: run scripts/setup.sh" >&2
  exit 1
fi
mods=$(find "$kernel_dir/lib/modules" -mindepth 1 -maxdepth 1 -type d | sed -n 1p)
if [ -z "$mods" ] || [ ! -f "$mods/modules.order" ]; then
  echo "$0: no kernel modules under $kernel_dir/lib/modules: run scripts/setup.sh" >&2
  exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}

# The module file of a module name (names use - or _ interchangeably).
module_file() {
  local want=${1//-/_} path name
  while read -r path; do
    name=$(basename "$path")
    name=${name%%.ko*}
    if [ "${name//-/_}" = "$want" ]; then
      find "$mods/$(dirname "$path")" -maxdepth 1 -name "$name.ko*" | sed -n 1p
      return
    fi
  done < "$mods/modules.order"
}

# Copies a module (decompressing .ko.xz) after its dependencies; appends it to load order.
declare -A done_mods=()
order=()
add_module() {
  local name=${1//-/_} file deps dep
  [ -n "${done_mods[$name]:-}" ] && return
  done_mods[$name]=1
  file=$(module_file "$1")
  if [ -z "$file" ]; then
    echo "$0: module $1 not found under $mods" >&2
    exit 1
  fi
  case $file in
    *.ko.xz) xz -dc "$file" > "$root/lib/modules/$name.ko" ;;
    *.ko) cp "$file" "$root/lib/modules/$name.ko" ;;
    *) echo "$0: unsupported module file $file" >&2; exit 1 ;;
  esac
  deps=$(tr '\0' '\n' < "$root/lib/modules/$name.ko" | sed -n 's/^depends=//p' | tr ',' ' ')
  for dep in $deps; do
    add_module "$dep"
  done
  order+=("$name")
}
add_module vivid
# vivid itself is loaded by vivid-load (the check unloads and reloads it).
printf '%s\n' "${order[@]}" | grep -vx vivid > "$root/lib/modules/order"

cp "$busybox" "$root/bin/busybox"
strip -o "$root/bin/caer-vivid-check" "$check" 2>/dev/null || cp "$check" "$root/bin/caer-vivid-check"
for lib in $(ldd "$check" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# One webcam-like capture device (node_types bit 0: video capture only).
cat > "$root/bin/vivid-load" <<'EOF'
#!/bin/sh
exec insmod /lib/modules/vivid.ko n_devs=1 node_types=0x1
EOF

cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# Tells qemu the result (isa-debug-exit at 0xf4 = 244) and stops.
finish() {
  echo "VIVID-VM exit $1"
  printf "\\00$1" | dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
  poweroff -f
}

for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || { echo "VIVID-CHECK fail insmod $m"; finish 2; }
done
vivid-load || { echo "VIVID-CHECK fail insmod vivid"; finish 2; }
i=0
while [ ! -e /dev/video0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "VIVID-VM booted in $(cut -d' ' -f1 /proc/uptime) s"
if caer-vivid-check /dev/video0; then finish 1; else finish 2; fi
EOF
chmod +x "$root/init" "$root/bin/vivid-load" "$root/bin/caer-vivid-check"

(cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 > "$output"
