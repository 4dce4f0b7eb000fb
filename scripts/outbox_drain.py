#!/usr/bin/env python3
"""Outbox drain benchmark (BENCHMARKS.md): how fast a release build delivers
a burst of incidents to one PagerDuty-like destination on 127.0.0.1.

Starts a sink that answers 202 like the Events API, starts
`target/release/incidentd serve` on a fresh data dir with one `pagerduty`
destination pointing at the sink (rate_limit high enough not to bound the
run), posts N distinct critical alerts in one request (N incidents, N
`opened` messages in the outbox), and times until the daemon's
`incidentd_outbound_requests_total{operation="opened",outcome="success"}`
reaches N; also the daemon's CPU time per delivery (less sensitive to a
busy machine than the rate). Stops the daemon it started, by its PID.

    cargo build --release --locked
    python3 scripts/outbox_drain.py [N] [RUNS]   # INCIDENTD_BIN=… for another build
"""

import http.server
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("INCIDENTD_BIN") or os.path.join(ROOT, "target", "release", "incidentd")


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def setup(self):
        super().setup()
        # Without this the header and body writes meet delayed ACKs and
        # every answer takes 40 ms: the sink's cost, not the daemon's.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        with Sink.lock:
            Sink.count += 1
        body = b'{"status":"success","message":"Event processed"}'
        self.send_response(202)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def delivered(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(
                'incidentd_outbound_requests_total{destination="pd",operation="opened",outcome="success"}'
            ):
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def cpu_seconds(pid):
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(n, sink_port):
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "incidentd.toml")
        with open(conf, "w") as f:
            f.write(
                "[[outbound.destinations]]\n"
                'name = "pd"\nkind = "pagerduty"\n'
                f'url = "http://127.0.0.1:{sink_port}"\n'
                'routing_key = "R0UTINGKEY"\nrate_limit = 100000.0\nburst = 1000\n'
            )
        log = open(os.path.join(d, "daemon.log"), "w")
        daemon = subprocess.Popen(
            [BINARY, "serve", "--config", conf, "--listen", f"127.0.0.1:{port}",
             "--data-dir", os.path.join(d, "data"), "--rules", os.path.join(ROOT, "rules")],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    break
                except Exception:
                    if time.time() > deadline or daemon.poll() is not None:
                        raise SystemExit("daemon did not become ready; see its log")
                    time.sleep(0.1)
            alerts = [
                {"labels": {"alertname": f"Drain{i}", "instance": f"d{i}:9100", "severity": "critical"},
                 "status": "firing", "startsAt": "2026-11-30T10:00:00Z"}
                for i in range(n)
            ]
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/alerts", data=json.dumps(alerts).encode(),
                headers={"content-type": "application/json"}, method="POST")
            cpu0 = cpu_seconds(daemon.pid)
            start = time.time()
            urllib.request.urlopen(req, timeout=60).read()
            while delivered(port) < n:
                if time.time() - start > 300 or daemon.poll() is not None:
                    raise SystemExit("the outbox did not drain")
                time.sleep(0.02)
            rate = n / (time.time() - start)
            return rate, (cpu_seconds(daemon.pid) - cpu0) * 1e6 / n
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
            log.close()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if not os.access(BINARY, os.X_OK):
        raise SystemExit(f"{BINARY} missing: cargo build --release --locked")
    sink_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", sink_port), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    results = [run_once(n, sink_port) for _ in range(runs)]
    rates = [r for r, _ in results]
    cpu = [c for _, c in results]
    print(f"{n} incidents, {runs} runs: deliveries/s " + ", ".join(f"{r:,.0f}" for r in rates)
          + f"; median {statistics.median(rates):,.0f}; daemon CPU per delivery (µs) "
          + ", ".join(f"{c:,.0f}" for c in cpu) + f"; median {statistics.median(cpu):,.0f}")
    server.shutdown()


if __name__ == "__main__":
    main()
