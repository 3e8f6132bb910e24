#!/usr/bin/env bash
# Real clients against a running stormwatch-agent:
#   - the OpenTelemetry Python SDK over OTLP/HTTP (protobuf) and OTLP/gRPC: spans, metrics, logs,
#   - the OpenTelemetry JS SDK over OTLP/HTTP (JSON): spans, metrics, logs,
#   - Zipkin's own v2 JSON example with curl.
# Installs what it needs (a venv under target/, `npm ci`), starts the agent on free loopback
# ports with no collector (batches stay in a temporary spool), and checks the agent's
# /metrics. Prints "N passed, N failed" and exits non-zero on any failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
# Where cargo puts the binaries (CARGO_TARGET_DIR when set, as cargo itself does).
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${STORMWATCH_CLIENTS_VENV:-$TARGET/otel-venv}
WORK=$(mktemp -d)
AGENT_PID=
cleanup() {
  if [ -n "$AGENT_PID" ]; then kill "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== installing clients"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check \
  opentelemetry-sdk opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc
(cd "$HERE/node" && npm ci --no-audit --no-fund --silent)

echo "== building the agent"
(cd "$ROOT" && cargo build -q -p stormwatch-agent --bin stormwatch-agent)
BIN="$TARGET/debug/stormwatch-agent"

port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(port); GRPC=$(port); ZIPKIN=$(port); ADMIN=$(port)
STORMWATCH_AGENT_LOG=warn "$BIN" --agent-id clients-test --otlp-http "127.0.0.1:$HTTP" --otlp-grpc "127.0.0.1:$GRPC" \
  --zipkin "127.0.0.1:$ZIPKIN" --admin "127.0.0.1:$ADMIN" --spool-dir "$WORK/spool" >"$WORK/agent.log" 2>&1 &
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
check "batches spooled while no collector is set" test "$(metric stormwatch_agent_spool_batches)" -ge 1

if [ "$failed" -gt 0 ]; then echo "--- agent log"; cat "$WORK/agent.log"; echo "--- metrics"; cat "$WORK/metrics"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
