#!/usr/bin/env bash
# Real clients against a running stormwatch-agent:
#   - the OpenTelemetry Python SDK over OTLP/HTTP (protobuf) and OTLP/gRPC: spans, metrics, logs,
#   - the OpenTelemetry JS SDK over OTLP/HTTP (JSON): spans, metrics, logs,
#   - Zipkin's own v2 JSON example with curl.
# Installs what it needs (a venv under target/, `npm ci`), starts a real collector (its own
# embedded PostgreSQL under a temporary directory) and the agent on free loopback ports, checks
# the agent's /metrics, and reads the metrics and logs back through the collector's API.
# Prints "N passed, N failed" and exits non-zero on any failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
# Where cargo puts the binaries (CARGO_TARGET_DIR when set, as cargo itself does).
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${STORMWATCH_CLIENTS_VENV:-$TARGET/otel-venv}
WORK=$(mktemp -d)
AGENT_PID=
COLLECTOR_PID=
cleanup() {
  if [ -n "$AGENT_PID" ]; then kill "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; fi
  if [ -n "$COLLECTOR_PID" ]; then kill "$COLLECTOR_PID" 2>/dev/null || true; wait "$COLLECTOR_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== installing clients"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check \
  opentelemetry-sdk opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc
(cd "$HERE/node" && npm ci --no-audit --no-fund --silent)

echo "== building the agent and the collector"
(cd "$ROOT" && cargo build -q -p stormwatch-agent --bin stormwatch-agent -p stormwatch-collector --bin stormwatch-collector)
BIN="$TARGET/debug/stormwatch-agent"

port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(port); GRPC=$(port); ZIPKIN=$(port); ADMIN=$(port); COLLECTOR=$(port)
# The collector runs its own PostgreSQL under its data directory (as `postgres` when root).
chmod 755 "$WORK"
STORMWATCH_LOG=warn "$TARGET/debug/stormwatch-collector" --listen "127.0.0.1:$COLLECTOR" --data-dir "$WORK/collector" \
  --ingest-tokens clients-ingest-token --read-tokens clients-read-token >"$WORK/collector.log" 2>&1 &
COLLECTOR_PID=$!
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$COLLECTOR/healthz" >/dev/null && break
  sleep 0.1
done
STORMWATCH_AGENT_LOG=warn "$BIN" --agent-id clients-test --otlp-http "127.0.0.1:$HTTP" --otlp-grpc "127.0.0.1:$GRPC" \
  --zipkin "127.0.0.1:$ZIPKIN" --admin "127.0.0.1:$ADMIN" --spool-dir "$WORK/spool" \
  --collector "http://127.0.0.1:$COLLECTOR" --token clients-ingest-token >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break
  sleep 0.1
done

passed=0; failed=0
check() { # name, command...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}

check "python sdk, OTLP/HTTP protobuf" "$VENV/bin/python" "$HERE/python/export.py" http "http://127.0.0.1:$HTTP"
check "python sdk, OTLP/gRPC" "$VENV/bin/python" "$HERE/python/export.py" grpc "http://127.0.0.1:$GRPC"
check "node sdk, OTLP/HTTP JSON" node "$HERE/node/export.js" "http://127.0.0.1:$HTTP"
check "python sdk metrics and logs, OTLP/HTTP protobuf" "$VENV/bin/python" "$HERE/python/signals.py" http "http://127.0.0.1:$HTTP"
check "python sdk metrics and logs, OTLP/gRPC" "$VENV/bin/python" "$HERE/python/signals.py" grpc "http://127.0.0.1:$GRPC"
check "node sdk metrics and logs, OTLP/HTTP JSON" node "$HERE/node/signals.js" "http://127.0.0.1:$HTTP"
check "zipkin v2 JSON example" test "$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
  --data-binary @"$HERE/zipkin/sample.json" "http://127.0.0.1:$ZIPKIN/api/v2/spans")" = 202

sleep 1.5 # one flush interval
curl -fs "http://127.0.0.1:$ADMIN/metrics" >"$WORK/metrics"
metric() { awk -v k="$1" '$1 == k { print $2 }' "$WORK/metrics"; }
expect() { # metric, expected
  local got; got=$(metric "$1")
  if [ "$got" = "$2" ]; then return 0; fi
  echo "  $1 = ${got:-missing}, expected $2"; return 1
}
check "received over OTLP/HTTP (10 python + 15 node)" expect 'stormwatch_agent_spans_received_total{receiver="otlp_http"}' 25
check "received over OTLP/gRPC" expect 'stormwatch_agent_spans_received_total{receiver="otlp_grpc"}' 10
check "received over Zipkin" expect 'stormwatch_agent_spans_received_total{receiver="zipkin"}' 1
check "no span refused as invalid" expect 'stormwatch_agent_spans_dropped_total{reason="invalid"}' 0
check "failed spans kept as errors" expect 'stormwatch_agent_spans_kept_total{reason="error"}' 15
check "slow node roots kept as slow" expect 'stormwatch_agent_spans_kept_total{reason="slow"}' 5
# Children are kept with their trace ("forced"), unless the band sampler kept them first
# ("sampled", ~2 % of random trace ids): together they are all 15.
kept_with_trace() {
  local f s; f=$(metric 'stormwatch_agent_spans_kept_total{reason="forced"}'); s=$(metric 'stormwatch_agent_spans_kept_total{reason="sampled"}')
  # The Zipkin example span may itself be sampled (1 of 1).
  [ $((f + s)) -ge 15 ] && [ $((f + s)) -le 16 ] || { echo "  forced $f + sampled $s, expected 15 or 16"; return 1; }
}
check "children kept with their traces" kept_with_trace
# Python: 4 series x 2 collections per protocol; node: 3 series x 2 or 3 collections.
metric_points() {
  local n; n=$(metric stormwatch_agent_metric_points_received_total)
  [ "$n" -ge 22 ] && [ "$n" -le 25 ] || { echo "  metric points received $n, expected 22-25"; return 1; }
}
check "metric points received" metric_points
check "no metric point dropped" expect stormwatch_agent_metric_points_dropped_total 0
check "log records received (3 + 3 python, 2 node)" expect stormwatch_agent_log_records_received_total 8
check "INFO records outside a trace filtered" expect stormwatch_agent_log_records_filtered_total 2
check "no log record dropped" expect stormwatch_agent_log_records_dropped_total 0

# What the collector stored, through its read API.
api() { curl -fs -H "Authorization: Bearer clients-read-token" "http://127.0.0.1:$COLLECTOR$1"; }
json() { "$VENV/bin/python" -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
increase() { # service, counter: its increase over the last hour, summed over series and steps
  api "/api/v1/metrics?name=$2&service=$1" | json "int(sum(p['value'] for s in d['series'] for p in s['points']))"
}
logs() { api "/api/v1/logs?$1" | json "' | '.join(r['severity'] + ' ' + r['body'] for r in d['logs'])"; }
expect_eq() { # what, got, expected
  [ "$2" = "$3" ] && return 0; echo "  $1 = ${2:-missing}, expected $3"; return 1
}
# Shipped with the next batches: wait for the last exporter's records to be stored.
for _ in $(seq 1 100); do
  [ -n "$(logs 'trace_id=0af7651916cd43dd8448eb211c80319c' 2>/dev/null)" ] && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$ADMIN/metrics" >"$WORK/metrics"
check "batches shipped to the collector" test "$(metric stormwatch_agent_batches_shipped_total)" -ge 1
check "python counter stored as its increase (10 + 5, http)" expect_eq app.requests "$(increase py-signals-http app.requests)" 15
check "python counter stored as its increase (10 + 5, grpc)" expect_eq app.requests "$(increase py-signals-grpc app.requests)" 15
check "node counter stored as its increase (10 + 3)" expect_eq app.orders.served "$(increase node-signals app.orders.served)" 13
pool_used() { api "/api/v1/metrics?name=db.client.connections.usage&service=py-signals-http" | json "d['series'][0]['points'][-1]['value']"; }
check "python up-down counter stored as its value (8 - 3)" expect_eq usage "$(pool_used)" 5.0
check "node histogram stored with p95" test -n "$(api '/api/v1/metrics?name=http.server.request.duration&service=node-signals' | json "[p['p95'] for s in d['series'] for p in s['points'] if 'p95' in p][0]")"
check "python WARN stored, routine INFO not" expect_eq logs "$(logs 'service=py-signals-http&severity=TRACE')" \
  "INFO retrying payment for order 42 | WARN payment provider slow: 1800 ms"
check "node ERROR found by its trace id" expect_eq logs "$(logs 'trace_id=0af7651916cd43dd8448eb211c80319c')" \
  "ERROR pricing call timed out"

if [ "$failed" -gt 0 ]; then echo "--- agent log"; cat "$WORK/agent.log"; echo "--- collector log"; tail -50 "$WORK/collector.log"; echo "--- metrics"; cat "$WORK/metrics"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
