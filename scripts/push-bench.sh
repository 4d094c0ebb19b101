#!/usr/bin/env bash
# Times `caer-fleet model push` of a bundle to one caerd over a local mosquitto: the transfer
# time and the switch gap (time without inference), as the device reports them.
#   scripts/push-bench.sh [BUNDLE]     (default: build/vit-b-32-random/bundle, written by
#                                       scripts/full-size-bundle.sh; about 560 MB)
# The bundle is signed in place with a throw-away key (its manifest.json.sig is replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=$(realpath "${1:-build/vit-b-32-random/bundle}")
cargo build --release --locked -p caer-firmware --bin caerd -p caer-fleet --bin caer-fleet
fleet=target/release/caer-fleet
work=$(mktemp -d)
cleanup() { jobs -p | xargs -r kill 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
key=$("$fleet" bundle keygen --out "$work/key" 2>/dev/null)
"$fleet" bundle sign --key "$work/key" "$bundle" > /dev/null
cat > "$work/caerd.toml" <<TOML
state_dir = "$work/state"
[device]
site = "bench"
room = "r1"
id = "dev-1"
[source]
kind = "generated"
fps = 2.0
[source.generated]
width = 320
height = 240
students = 2
[model]
bundle = "$bundle"
trusted_keys = ["$key"]
[policy]
min_group_size = 2
[mqtt]
url = "mqtt://127.0.0.1:$port"
TOML
CAER_LOG=warn target/release/caerd --config "$work/caerd.toml" 2> "$work/caerd.log" &
caerd=$!
for _ in $(seq 600); do
  kill -0 "$caerd" 2>/dev/null || { cat "$work/caerd.log"; exit 1; }
  "$fleet" --broker "mqtt://127.0.0.1:$port" devices --json --wait 1s | grep -q '"state":"running"' && break
done
bytes=$(du -sb --exclude='*.sig' "$bundle" | cut -f1)
echo "device running; pushing $bundle ($bytes bytes)"
start=$(date +%s.%N)
"$fleet" --broker "mqtt://127.0.0.1:$port" model push "$bundle" --device dev-1 --timeout 30m --json
end=$(date +%s.%N)
python3 -c "print(f'push took {$end - $start:.1f} s end to end')"
