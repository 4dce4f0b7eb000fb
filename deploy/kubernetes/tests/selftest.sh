#!/usr/bin/env bash
# Self-test of validate.py on the fixtures: the valid one must pass, each
# invalid-*.yaml must fail at its one defect. Exits non-zero if any
# expectation is not met.
# Needs: pip install -r requirements.txt; npm ci (both in this directory).
set -u
cd "$(dirname "$0")"
passed=0 failed=0

# check WANT_EXIT "ARGS" [TEXT...]: run validate.py ARGS (word-split; stdin
# from $STDIN if set), expect exit code WANT_EXIT and each TEXT in the output.
check() {
  local want=$1 args=$2 out rc problem="" text
  shift 2
  # shellcheck disable=SC2086
  out=$(python3 validate.py $args <"${STDIN:-/dev/null}" 2>&1)
  rc=$?
  [ "$rc" -eq "$want" ] || problem="exit $rc, expected $want"
  for text in "$@"; do
    grep -qF -- "$text" <<<"$out" || problem="${problem:+$problem; }output lacks: $text"
  done
  if [ -z "$problem" ]; then
    echo "ok   validate.py $args"
    passed=$((passed + 1))
  else
    echo "FAIL validate.py $args: $problem"
    sed 's/^/     | /' <<<"$out"
    failed=$((failed + 1))
  fi
}

F=fixtures
check 0 "$F/valid.yaml" "8 passed, 0 failed"
STDIN=$F/valid.yaml check 0 "-" "8 passed, 0 failed"

check 1 "$F/invalid-container-unknown-field.yaml" \
  "FAIL apps/v1 Deployment/incidentd: spec.template.spec.containers[0]:" "'imagePullPolice' was unexpected"
check 1 "$F/invalid-replicas-type.yaml" "FAIL apps/v1 Deployment/incidentd: spec.replicas:"
check 1 "$F/invalid-servicemonitor-unknown-field.yaml" \
  "ServiceMonitor/incidentd: spec.endpoints[0].scrapeInterval: tsc: unknown field 'scrapeInterval'"
check 1 "$F/invalid-prometheusrule-missing-expr.yaml" \
  "PrometheusRule/incidentd: spec.groups[0].rules[0]: schema: must have required property expr"
check 1 "$F/invalid-alertmanagerconfig-receiver-field.yaml" \
  "AlertmanagerConfig/incidentd: spec.receivers[0].webhookConfig: tsc: unknown field 'webhookConfig'"
check 1 "$F/invalid-unknown-kind.yaml" "FAIL example.com/v1 Widget/incidentd: (root): no schema"
check 1 "$F/invalid-too-new-for-1.29.yaml" "'trafficDistribution' was unexpected) [Kubernetes 1.29.0]"
check 0 "--kubernetes-version 1.37.0 $F/invalid-too-new-for-1.29.yaml" "1 passed, 0 failed"
check 1 "$F/invalid-missing-name.yaml" "ConfigMap/<no name>: metadata.name:"
check 1 "$F/invalid-duplicate.yaml" "1 passed, 1 failed" "metadata.name: duplicate of the object in"

# Every unknown field of one custom resource is listed, at any depth.
check 1 "$F/several-unknown-crd-fields.yaml" "metadata.lables:" "spec.endpoints[1].scrapeInterval:" \
  "spec.endpoints[1].timeout:" "spec.endpoints[1].tlsConfig.verify:"
# All files at once: only the valid objects pass.
check 1 "$F/valid.yaml $F/invalid-replicas-type.yaml $F/invalid-servicemonitor-unknown-field.yaml" \
  "8 passed, 2 failed"

# Usage errors.
check 2 "-" "no Kubernetes objects"
check 2 "--kubernetes-version 1.10.0 $F/valid.yaml" "not supported"

echo "selftest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
