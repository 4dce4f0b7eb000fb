#!/usr/bin/env python3
"""RSS per active alert (BENCHMARKS.md entries 1 and 17).

  rss_per_alert.py PORT PID [REQUESTS]

PORT/PID: a fresh `incidentd serve` (repo rules, no CMDB) whose limits allow
the load, e.g. a config with
    [limits]
    max_active_incidents = 200000
    max_active_alerts = 500000
Sends REQUESTS (default 5,000) Alertmanager webhooks of 20 distinct firing
alerts each (9 labels, 3 annotations: every alert its own incident, the
worst shape), then prints VmRSS idle, right after the load, 5 s and 20 s
later, and the growth per alert at 20 s; and the marginal cost: the growth
from 5 s after the first half of the load to 20 s after the second, per
alert of the second half (fixed caps such as SQLite's page cache are full
by then, so this is what each further active alert costs). Loopback only.
"""
import json
import sys
import time
import urllib.error
import urllib.request

port, pid = int(sys.argv[1]), int(sys.argv[2])
requests = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
base = f"http://127.0.0.1:{port}"


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


for _ in range(100):
    try:
        if urllib.request.urlopen(base + "/readyz").status == 200:
            break
    except (urllib.error.URLError, ConnectionError):
        time.sleep(0.1)
idle = rss_kib()
now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
names = ["HostDown", "DiskFull", "HighCPU", "HighMemory", "ServiceDown"]
half = None
for r in range(requests):
    if r == requests // 2:
        time.sleep(5)
        half = rss_kib()
    alerts = []
    for k in range(20):
        i = r * 20 + k
        host, name = i // 5, names[i % 5]
        alerts.append({
            "status": "firing",
            "labels": {"alertname": name, "instance": f"host-{host}.prod.example.com:9100",
                       "job": "node", "severity": "critical", "env": "prod",
                       "service": f"svc-{host % 40}", "team": "sre", "region": "eu-west-1",
                       "cluster": "prod-1"},
            "annotations": {"summary": f"{name} on host-{host}",
                            "description": "The host has been failing for more than 5 minutes; "
                                           "see the runbook for the usual causes and what to check first.",
                            "runbook_url": "https://runbooks.example.com/" + name},
            "startsAt": now, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
            "fingerprint": "%016x" % (i * 2654435761 % (1 << 64)),
        })
    body = json.dumps({"version": "4", "status": "firing", "receiver": "incidentd",
                       "groupKey": "{}:{}", "groupLabels": {}, "commonLabels": {},
                       "commonAnnotations": {}, "externalURL": "http://am:9093",
                       "alerts": alerts}).encode()
    req = urllib.request.Request(base + "/api/v1/alerts/alertmanager", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req)
    except urllib.error.HTTPError as e:
        sys.exit(f"request {r}: {e.code} {e.read()[:300]!r}")
n = requests * 20
loaded = rss_kib()
time.sleep(5)
after5 = rss_kib()
time.sleep(15)
after20 = rss_kib()
print(f"alerts={n} idle={idle / 1024:.1f}MiB loaded={loaded / 1024:.1f}MiB "
      f"after5s={after5 / 1024:.1f}MiB after20s={after20 / 1024:.1f}MiB "
      f"half={half / 1024:.1f}MiB per_alert={(after20 - idle) * 1024 / n:.0f}B "
      f"marginal={(after20 - half) * 1024 / (n - requests // 2 * 20):.0f}B")
