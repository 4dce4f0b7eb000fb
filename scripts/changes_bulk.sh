#!/usr/bin/env bash
# Bulk change-calendar import under ingest load (BENCHMARKS.md entry 11).
#
#   scripts/changes_bulk.sh BIN BODIES MODE [PORT]
#
# BIN: a release incidentd; BODIES: amwebhook.jsonl from
# `python3 ../shared/bench/gen_workload.py -n 4000 -g 20 -o DIR`;
# MODE: `unloaded` (the standard load alone, 8 connections, 10 s) or
# `loaded` (the same, with 100,000 change records POSTed 3 s in, timed).
# Prints the load summary line, the import's status and time, and how many
# WARN/ERROR lines the daemon logged. Everything on 127.0.0.1.
set -euo pipefail
BIN=$(realpath "$1"); BODIES=$(realpath "$2"); MODE=$3; PORT=${4:-18104}
HERE=$(cd "$(dirname "$0")/.." && pwd)
LOAD=${LOAD_SH:-$HERE/../shared/bench/load.sh}
D=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$D"' EXIT
# 100k records on 10k CIs, ~111 bytes each: above the default 10 MiB body
# limit, so the run raises it.
python3 - "$D/changes.json" <<'PY'
import json, sys
states = ["approved", "implementing", "completed", "requested"]
recs = [{"id": f"C{i:06d}", "ci": f"h-{i % 10000}", "state": states[i % 4],
         "start": f"2026-12-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
         "end": f"2026-12-{1 + i % 28:02d}T{i % 24:02d}:40:00Z"} for i in range(100000)]
open(sys.argv[1], "w").write(json.dumps(recs, separators=(",", ":")))
PY
cat >"$D/incidentd.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$D/data"
rules_dir = "$HERE/rules"
[http]
max_body_bytes = 16777216
TOML
(cd "$D" && exec "$BIN" serve --config "$D/incidentd.toml" >"$D/daemon.log" 2>&1) &
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
if [ "$MODE" = loaded ]; then
    (sleep 3; curl -s -o /dev/null -w 'import: http=%{http_code} time=%{time_total}s\n' \
        -H 'content-type: application/json' --data-binary "@$D/changes.json" \
        "http://127.0.0.1:$PORT/api/v1/changes") &
    IMPORT=$!
fi
TARGETS="incidentd=$PID" bash "$LOAD" "http://127.0.0.1:$PORT/api/v1/alerts/alertmanager" \
    "$BODIES" 20 10 8 | tail -n 1
if [ "$MODE" = loaded ]; then wait "$IMPORT"; fi
echo "warn/error lines: $(grep -c -E ' (WARN|ERROR) ' "$D/daemon.log" || true)"
