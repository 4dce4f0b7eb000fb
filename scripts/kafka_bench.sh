#!/usr/bin/env bash
# Kafka ingest benchmark (BENCHMARKS.md): fill a fresh 6-partition topic on
# a tansu broker, start `incidentd serve` consuming it into a fresh SQLite
# data dir (or PostgreSQL with STORE=postgres://...), and time the group
# draining it with `kafka_load drain`.
#
#   scripts/kafka_bench.sh BIN KAFKA_LOAD BROKERS ALERTS FINGERPRINTS [BROKER_PID]
#
# BIN: an incidentd binary; KAFKA_LOAD: target/release/examples/kafka_load.
# Prints kafka_load's drain line. Stops only the daemon it started.
set -euo pipefail
BIN=$1 LOAD=$2 BROKERS=$3 ALERTS=$4 FPS=$5 BROKER_PID=${6:-}
T="bench-$(date +%s%N)"
W=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$W"' EXIT
PID=""
tansu topic create --broker "tcp://$BROKERS" --partitions 6 "$T" >/dev/null
"$LOAD" produce "$BROKERS" "$T" "$ALERTS" "$FPS" >"$W/produce.log"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
STORE_LINE=""
if [[ -n "${STORE:-}" ]]; then STORE_LINE="url = \"$STORE\""; fi
cat >"$W/c.toml" <<TOML
listen = "127.0.0.1:$PORT"
[store]
$STORE_LINE
[kafka]
brokers = "$BROKERS"
group_id = "$T"
[[kafka.topics]]
name = "$T"
format = "canonical"
TOML
RULES="$(cd "$(dirname "$0")/.." && pwd)/rules"
# exec: $! is the daemon itself, so the trap stops it.
(cd "$W" && exec env RUST_LOG=warn "$BIN" serve --config c.toml --data-dir "$W/data" \
    --rules "$RULES" >"$W/daemon.log" 2>&1) &
PID=$!
"$LOAD" drain "$BROKERS" "$T" "$T" $BROKER_PID
if grep -q '"level":"ERROR"\|ERROR' "$W/daemon.log"; then
    echo "daemon logged errors:" >&2
    grep ERROR "$W/daemon.log" | head -5 >&2
fi
