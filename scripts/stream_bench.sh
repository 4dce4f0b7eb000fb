#!/usr/bin/env bash
# Durable ingest on a realistic stream (BENCHMARKS.md, issue 19): every body
# is sent once, into a fresh store, so new and resolved alerts keep coming
# as they do in production (the standard procedure loops over 4,000 bodies
# and after the first pass measures the repeat path only).
#
#   scripts/stream_bench.sh BIN [CONNECTIONS...]        (default: 8 32)
#
# For each connection count: a fresh incidentd (repo rules, no CMDB), then,
# when installed, a fresh Prometheus Alertmanager, each loaded for DURATION
# seconds with wrk through ../shared/bench/load.sh. Prints one line per
# system and connection count:
#   system=incidentd c=8 alerts/s=… p50=… p99=… cpu=…% rss=…MB reqs=… [commits=… commit_s=… rss_rest=…MB]
# and fails if a run had errors or wrapped around the stream.
#
# Environment (all optional):
#   STREAM    directory with amwebhook.jsonl + amapi.jsonl (default
#             /tmp/bench/stream-N; generated with N bodies when missing)
#   N         bodies to generate (default 200000: ~3.5 GB per format, ~4 min;
#             at 280k alerts/s a 10 s run sends 140,000; wrk holds the file
#             in memory once per thread)
#   DURATION  seconds per run (default 10)
#   SYNC      full | normal (store.sqlite_synchronous, default full)
#   STORE     a PostgreSQL URL: incidentd writes there instead of SQLite
#             (every table is emptied before each run)
#   AM        Alertmanager binary (default: prometheus-alertmanager or
#             alertmanager on PATH; AM=none skips it)
#   BENCH     the shared bench directory (default ../shared/bench)
#   PERF      a directory: `perf record -g` of incidentd's run goes there
#   KEEP_LOGS a directory: the daemons' logs are copied there
# Everything listens on 127.0.0.1. Stops only the processes it started.
set -euo pipefail
BIN=$(realpath "$1")
shift
CONNS=("$@")
[[ ${#CONNS[@]} -gt 0 ]] || CONNS=(8 32)
HERE=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$HERE/../shared/bench}
N=${N:-200000}
STREAM=${STREAM:-/tmp/bench/stream-$N}
DURATION=${DURATION:-10}
SYNC=${SYNC:-full}
AM=${AM:-$(command -v prometheus-alertmanager || command -v alertmanager || echo none)}
W=$(mktemp -d)
PID=""
trap 'if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; rm -rf "$W"' EXIT

if [[ ! -s "$STREAM/amwebhook.jsonl" || ! -s "$STREAM/amapi.jsonl" ]]; then
    echo "generating $N bodies into $STREAM" >&2
    python3 "$BENCH/gen_workload.py" -n "$N" -g 20 -o "$STREAM" >/dev/null
fi
BODIES=$(wc -l <"$STREAM/amwebhook.jsonl")

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # URL
    local i
    for i in $(seq 1 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "not ready: $1" >&2
    return 1
}

# metric NAME PORT: the value of an unlabelled series on /metrics. awk reads
# to the end: exiting early made curl fail writing (exit 23), which under
# pipefail ended the whole script before the run's line was printed.
metric() {
    curl -fsS "http://127.0.0.1:$2/metrics" | awk -v n="$1" '$1 == n && !done { print $2; done = 1 }'
}

# run SYSTEM C URL BODIES: one load run against $PID; prints the result line.
run() {
    local system=$1 c=$2 url=$3 bodies=$4 out line
    out=$(TARGETS="$system=$PID" LABEL="$system stream c=$c" "$BENCH/load.sh" "$url" "$bodies" 20 "$DURATION" "$c" | tail -n1) || {
        echo "$out" >&2
        echo "system=$system c=$c FAILED" >&2
        return 1
    }
    line=$(python3 - "$system" "$c" "$BODIES" "$out" <<'PY'
import re, sys
system, c, bodies, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def f(pat):
    m = re.search(pat, out)
    return m.group(1) if m else "?"
reqs = int(f(r"reqs=(\d+)"))
print("system=%s c=%s alerts/s=%s p50=%sms p99=%sms cpu=%s%% rss=%sMB reqs=%d%s" % (
    system, c, f(r"alerts/s=(\d+)"), f(r"p50=([\d.]+)ms"), f(r"p99=([\d.]+)ms"),
    f(system + r"=(\d+)%"), f(r"rss\[" + system + r"\]=([\d.]+)MB"), reqs,
    " WRAPPED (more requests than bodies: generate more)" if reqs > bodies else ""))
PY
)
    echo "$line"
}

# A run that sent a body twice measured the repeat path, not the stream.
check_wrap() {
    if [[ "$1" == *WRAPPED* ]]; then
        WRAPPED=1
    fi
}
WRAPPED=0

for c in "${CONNS[@]}"; do
    PORT=$(free_port)
    rm -rf "$W/data"
    STORE_LINE=""
    if [[ -n "${STORE:-}" ]]; then
        STORE_LINE="url = \"$STORE\""
        psql -q "$STORE" -c "DO \$\$ DECLARE t text; BEGIN FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations' LOOP EXECUTE format('TRUNCATE %I CASCADE', t); END LOOP; END \$\$" >/dev/null 2>&1 || true
    fi
    cat >"$W/incidentd.toml" <<TOML
listen = "127.0.0.1:$PORT"
[store]
sqlite_synchronous = "$SYNC"
$STORE_LINE
TOML
    (cd "$W" && exec env RUST_LOG=warn "$BIN" serve --config incidentd.toml --data-dir "$W/data" \
        --rules "$HERE/rules" >"$W/incidentd-$c.log" 2>&1) &
    PID=$!
    wait_ready "http://127.0.0.1:$PORT/readyz"
    if [[ -n "${PERF:-}" ]]; then
        mkdir -p "$PERF"
        perf record -F 499 -g -p "$PID" -o "$PERF/incidentd-c$c.data" -- sleep $((DURATION + 30)) >/dev/null 2>&1 &
        PERF_PID=$!
    fi
    line=$(run incidentd "$c" "http://127.0.0.1:$PORT/api/v1/alerts/alertmanager" "$STREAM/amwebhook.jsonl")
    commits=$(metric incidentd_store_commit_duration_seconds_count "$PORT")
    commit_s=$(metric incidentd_store_commit_duration_seconds_sum "$PORT")
    # Resident memory once the load has stopped and the tables caught up
    # with the journal (what a quiet daemon holds after a burst).
    sleep 5
    rest=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status" 2>/dev/null || echo "?")
    echo "$line commits=${commits:-?} commit_s=${commit_s:-?} rss_rest=${rest}MB"
    check_wrap "$line"
    if [[ -n "${PERF:-}" ]]; then kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; fi
    if grep -q 'ERROR' "$W/incidentd-$c.log"; then
        echo "incidentd logged errors:" >&2
        grep ERROR "$W/incidentd-$c.log" | head -5 >&2
    fi
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    if [[ -n "${KEEP_LOGS:-}" ]]; then mkdir -p "$KEEP_LOGS" && cp "$W/incidentd-$c.log" "$KEEP_LOGS/"; fi

    if [[ "$AM" != none ]]; then
        AMPORT=$(free_port)
        rm -rf "$W/am"
        mkdir -p "$W/am"
        cat >"$W/am/am.yml" <<'YML'
route:
  receiver: none
receivers:
  - name: none
YML
        "$AM" --config.file="$W/am/am.yml" --storage.path="$W/am/data" \
            --web.listen-address="127.0.0.1:$AMPORT" --cluster.listen-address= \
            >"$W/am/log" 2>&1 &
        PID=$!
        wait_ready "http://127.0.0.1:$AMPORT/-/ready"
        line=$(run alertmanager "$c" "http://127.0.0.1:$AMPORT/api/v2/alerts" "$STREAM/amapi.jsonl")
        echo "$line"
        check_wrap "$line"
        kill "$PID"
        wait "$PID" 2>/dev/null || true
        PID=""
    fi
done
[[ $WRAPPED -eq 0 ]]
