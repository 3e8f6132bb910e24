#!/usr/bin/env bash
# agent → real collector (embedded PostgreSQL): the collector is killed while spans are being
# sent and again before a second burst, then restarted. Checks that the collector's aggregates
# count every span exactly once and that the agent dropped nothing.
# Installs the Python SDK into a venv under target/ (shared with ../clients/run.sh).
# Prints "N passed, N failed" and exits non-zero on any failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
# Where cargo puts the binaries (CARGO_TARGET_DIR when set, as cargo itself does).
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${STORMWATCH_CLIENTS_VENV:-$TARGET/otel-venv}
WORK=$(mktemp -d)
chmod 755 "$WORK" # the embedded PostgreSQL runs as `postgres` and must reach its data dir
# Under the read API's 10,000-span page, so a duplicate would show.
N=${STORMWATCH_E2E_SPANS:-8000}
TOKEN=e2e-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
AGENT_PID=; COLLECTOR_PID=
cleanup() {
  for p in $AGENT_PID $COLLECTOR_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
(cd "$ROOT" && cargo build -q -p stormwatch-agent --bin stormwatch-agent && cargo build -q -p stormwatch-collector)
port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CPORT=$(port); HTTP=$(port); ADMIN=$(port)

start_collector() {
  "$TARGET/debug/stormwatch-collector" --listen "127.0.0.1:$CPORT" --data-dir "$WORK/collector" \
    --ingest-tokens "$TOKEN" >>"$WORK/collector.log" 2>&1 &
  COLLECTOR_PID=$!
  for _ in $(seq 1 120); do curl -fs "http://127.0.0.1:$CPORT/healthz" >/dev/null && return 0; sleep 0.5; done
  echo "collector did not start"; cat "$WORK/collector.log"; return 1
}
stop_collector() { kill "$COLLECTOR_PID"; wait "$COLLECTOR_PID" 2>/dev/null || true; COLLECTOR_PID=; }
metric() { curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
stored_spans() { curl -fs "http://127.0.0.1:$CPORT/api/v1/spans?service=$1&limit=10000" | "$VENV/bin/python" -c \
  "import json,sys; s=json.load(sys.stdin)['spans']; ids={x['span_id'] for x in s}; print(len(s) if len(ids)==len(s) else 'duplicates')"; }
count_of() { curl -fs "http://127.0.0.1:$CPORT/api/v1/services" | "$VENV/bin/python" -c \
  "import json,sys; print(sum(s['count'] for s in json.load(sys.stdin)['services'] if s['service']=='$1'))"; }

start_collector
STORMWATCH_AGENT_LOG=warn "$TARGET/debug/stormwatch-agent" --agent-id e2e --collector "http://127.0.0.1:$CPORT" \
  --token "$TOKEN" --otlp-http "127.0.0.1:$HTTP" --otlp-grpc "" --zipkin "" --admin "127.0.0.1:$ADMIN" \
  --spool-dir "$WORK/spool" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.1; done

# 1. Kill the collector while spans are being sent, restart it.
"$VENV/bin/python" "$HERE/load.py" "$N" e2e-during "http://127.0.0.1:$HTTP" &
LOAD=$!
sleep 1.5; stop_collector
wait $LOAD
sleep 2; start_collector
# 2. A burst while the collector is down: it must come from the spool.
stop_collector
"$VENV/bin/python" "$HERE/load.py" "$N" e2e-down "http://127.0.0.1:$HTTP"
sleep 2
SPOOLED=$(metric stormwatch_agent_spool_batches)
start_collector
for _ in $(seq 1 120); do [ "$(metric stormwatch_agent_spool_batches)" = 0 ] && break; sleep 0.5; done
sleep 2 # a last flush of aggregates

passed=0; failed=0
check() { if "$@"; then passed=$((passed + 1)); echo "ok   ${CHECK}"; else failed=$((failed + 1)); echo "FAIL ${CHECK}"; fi; }
eq() { [ "$1" = "$2" ] || { echo "  got ${1:-nothing}, expected $2"; return 1; }; }
CHECK="spans sent during a collector kill are each counted once"; check eq "$(count_of e2e-during)" "$N"
CHECK="spans sent while the collector was down are each counted once"; check eq "$(count_of e2e-down)" "$N"
CHECK="every kept span of the first burst is stored once"; check eq "$(stored_spans e2e-during)" "$N"
CHECK="every kept span of the second burst is stored once"; check eq "$(stored_spans e2e-down)" "$N"
CHECK="the agent spooled batches during the outage"; check test "${SPOOLED:-0}" -ge 1
CHECK="the spool is empty after recovery"; check eq "$(metric stormwatch_agent_spool_batches)" 0
for r in invalid queue_full spool_full rejected spool_corrupt; do
  CHECK="no span dropped ($r)"; check eq "$(metric "stormwatch_agent_spans_dropped_total{reason=\"$r\"}")" 0
done
if [ "$failed" -gt 0 ]; then echo "--- agent log"; tail -50 "$WORK/agent.log"; echo "--- collector log"; tail -50 "$WORK/collector.log"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
