#!/usr/bin/env python3
"""Labelled alert storms on a scenario's CMDB, for tuning correlation beyond the example
scenarios.

    scripts/gen_storm.py CMDB.yaml OUT_DIR SEED [SILENT_SHARE]

32 causes, 12 minutes apart: a database or cache failing with half or more of its
applications alerting, its own alert missing (a "silent-root", share SILENT_SHARE,
default 0.4) or present and sometimes late; a database host going down; a lone
application failing; and, a quarter of the time, an unrelated lone application
failure at the same moment. Every alert resolves 20 minutes after it starts; deliveries
are jittered by up to 40 s and batched into bodies as Alertmanager does (10 s). Writes OUT_DIR/{alerts.jsonl, changes.json, cmdb.yaml,
expected.json} in the example scenarios' format, scored the same way:

    incidentd replay --rules rules --cmdb OUT_DIR/cmdb.yaml OUT_DIR/alerts.jsonl > out.json
    python3 ../shared/tools/score_incidents.py OUT_DIR out.json
"""
import json, random, sys, yaml, math, shutil, os
from datetime import datetime, timedelta, timezone
src, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
silent_share = float(sys.argv[4]) if len(sys.argv) > 4 else 0.4
rng = random.Random(seed)
c = yaml.safe_load(open(src))
cis = {x['id']: x for x in c['cis']}
up = {k: list(v.get('depends_on') or []) for k, v in cis.items()}
down = {}
for k, v in up.items():
    for d in v: down.setdefault(d, []).append(k)
def below(r):
    seen, st = set([r]), [r]
    while st:
        x = st.pop()
        for d in down.get(x, []):
            if d not in seen: seen.add(d); st.append(d)
    return seen
def impacted(r):
    return sorted({cis[x]['service'] for x in below(r) if cis[x].get('service')})
apps = [k for k, v in cis.items() if v['class'] == 'application']
roots = [k for k, v in cis.items() if v['class'] in ('database', 'cache') and len(down.get(k, [])) >= 2]
t0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
def iso(t): return t.strftime('%Y-%m-%dT%H:%M:%S.000Z')
deliveries, expected = [], []
CAUSE = [0]
def fp(labels):
    h = 0xcbf29ce484222325
    for k in sorted(labels):
        for b in k.encode() + b'\xff' + labels[k].encode() + b'\xff':
            h ^= b; h = (h * 0x100000001b3) & 0xffffffffffffffff
    return f"{h:016x}"
def alert(labels, start):
    labels = dict(labels, severity=labels.get('severity', 'warning'), env='prod', attempt=str(CAUSE[0]))
    f = fp(labels)
    a = {"status": "firing", "labels": labels, "annotations": {"summary": f"{labels['alertname']}"},
         "startsAt": iso(start), "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://p", "fingerprint": f}
    deliveries.append((start + timedelta(seconds=rng.randint(0, 40)), a))
    r = dict(a, status="resolved", endsAt=iso(start + timedelta(minutes=20)))
    deliveries.append((start + timedelta(minutes=20, seconds=rng.randint(0, 40)), r))
    return f
def app_alerts(app, start, n=None):
    fs = []
    for name in rng.sample(['HighErrorRate', 'HighLatencyP99', 'PodCrashLooping'], n or rng.randint(1, 2)):
        fs.append(alert({"alertname": name, "service": app, "severity": "critical" if name == 'HighErrorRate' else 'warning'},
                        start + timedelta(seconds=rng.randint(0, 150))))
    return fs
def root_alert(r, start):
    m = cis[r]['match']
    name = 'PostgresDown' if m.get('job') == 'postgres' else 'RedisDown'
    return alert(dict(m, alertname=name, severity='critical'), start)
for i in range(32):
    CAUSE[0] = i
    start = t0 + timedelta(minutes=12 * i)
    kind = rng.random()
    if kind < silent_share or kind < silent_share + 0.3:
        r = rng.choice(roots)
        deps = [d for d in down[r] if cis[d]['class'] == 'application']
        k = rng.randint(max(2, math.ceil(0.5 * len(deps))), len(deps))
        fs = []
        for a in rng.sample(deps, k): fs += app_alerts(a, start)
        silent = kind < silent_share
        if not silent:
            fs.append(root_alert(r, start + timedelta(seconds=rng.randint(0, 200))))
        expected.append({"kind": "silent-root" if silent else "failure", "root_ci": r, "alert_fingerprints": fs,
                         "impacted_services": impacted(r), "final_state": "resolved"})
    elif kind < silent_share + 0.45:
        r = rng.choice(roots)
        h = rng.choice(up[r])
        host = cis[h]['hostnames'][0]
        fs = [alert({"alertname": "HostDown", "instance": f"{host}:9100", "job": "node", "severity": "critical"},
                    start + timedelta(seconds=rng.randint(0, 200)))]
        deps = [d for d in down[r] if cis[d]['class'] == 'application']
        for a in rng.sample(deps, rng.randint(1, len(deps))): fs += app_alerts(a, start)
        expected.append({"kind": "failure", "root_ci": h, "alert_fingerprints": fs,
                         "impacted_services": impacted(h), "final_state": "resolved"})
    else:
        a = rng.choice(apps)
        fs = app_alerts(a, start)
        expected.append({"kind": "failure", "root_ci": a, "alert_fingerprints": fs,
                         "impacted_services": impacted(a), "final_state": "resolved"})
    # Sometimes an unrelated lone app failure at the same time.
    if rng.random() < 0.25:
        used = set(x for e in expected[-1:] for x in [e['root_ci']]) | set(below(expected[-1]['root_ci']))
        cands = [a for a in apps if a not in used]
        a = rng.choice(cands)
        fs = app_alerts(a, start + timedelta(seconds=rng.randint(0, 120)))
        expected.append({"kind": "failure", "root_ci": a, "alert_fingerprints": fs,
                         "impacted_services": impacted(a), "final_state": "resolved"})
deliveries.sort(key=lambda d: d[0])
# Alertmanager-like bodies: deliveries within 10 s of a body's first go in it.
bodies = []
for at, a in deliveries:
    if bodies and (at - bodies[-1][0]).total_seconds() <= 10:
        bodies[-1][1].append(a)
    else:
        bodies.append((at, [a]))
os.makedirs(out, exist_ok=True)
with open(f'{out}/alerts.jsonl', 'w') as f:
    for _, alerts in bodies:
        status = "firing" if any(a['status'] == "firing" for a in alerts) else "resolved"
        f.write(json.dumps({"version": "4", "status": status, "receiver": "incidentd", "groupLabels": {},
                            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                            "alerts": alerts}) + "\n")
shutil.copy(src, f'{out}/cmdb.yaml')
json.dump([], open(f'{out}/changes.json', 'w'))
json.dump({"incidents": expected, "suppressed": []}, open(f'{out}/expected.json', 'w'), indent=1)
