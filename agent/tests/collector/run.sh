#!/usr/bin/env bash
# agent → real collector (embedded PostgreSQL), through a forwarding proxy that can lose an
# answer, under the faults a host really has. Every kill is SIGKILL: nothing gets to clean up.
#   1. the collector is killed while spans are being sent, then restarted;
#   2. the collector is killed between committing a batch and answering it (the proxy holds
#      the answer, then drops it): the agent resends a batch that is already stored;
#   3. a burst arrives while the collector is down: it must come from the spool;
#   4. the agent is killed with a burst in its spool and restarted on the same spool.
# Checks that the collector's aggregates count every span exactly once, that no kept span is
# stored twice (each span id counted: a multiset, not a set), and that the agent dropped
# nothing. Installs the Python SDK into a venv under target/ (shared with ../clients/run.sh).
# Prints "N passed, N failed" and exits non-zero on any failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
# Where cargo puts the binaries (CARGO_TARGET_DIR when set, as cargo itself does).
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${STORMWATCH_CLIENTS_VENV:-$TARGET/otel-venv}
WORK=$(mktemp -d)
chmod 755 "$WORK" # the embedded PostgreSQL runs as `postgres` and must reach its data dir
mkdir "$WORK/ctl"
# Under the read API's 10,000-span page, so a duplicate would show.
N=${STORMWATCH_E2E_SPANS:-8000}
TOKEN=e2e-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
AGENT_PID=; COLLECTOR_PID=; PROXY_PID=
cleanup() {
  for p in $AGENT_PID $PROXY_PID $COLLECTOR_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  # A SIGKILLed collector leaves its embedded PostgreSQL running: stop it.
  for d in "$WORK"/collector/postgres; do
    [ -f "$d/postmaster.pid" ] && su postgres -s /bin/sh -c "$(ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1) -D '$d' stop -m immediate" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
(cd "$ROOT" && cargo build -q -p stormwatch-agent --bin stormwatch-agent && cargo build -q -p stormwatch-collector)
port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CPORT=$(port); PPORT=$(port); HTTP=$(port); ADMIN=$(port)

# Waits up to $1 seconds for the command after it to succeed.
await() {
  local secs=$1; shift
  for _ in $(seq 1 $((secs * 10))); do "$@" && return 0; sleep 0.1; done
  echo "timed out after ${secs}s waiting for: $*"; return 1
}
start_collector() {
  "$TARGET/debug/stormwatch-collector" --listen "127.0.0.1:$CPORT" --data-dir "$WORK/collector" \
    --ingest-tokens "$TOKEN" >>"$WORK/collector.log" 2>&1 &
  COLLECTOR_PID=$!
  await 60 curl -fs "http://127.0.0.1:$CPORT/healthz" -o /dev/null || { cat "$WORK/collector.log"; return 1; }
}
kill_collector() { kill -9 "$COLLECTOR_PID"; wait "$COLLECTOR_PID" 2>/dev/null || true; COLLECTOR_PID=; }
start_agent() {
  STORMWATCH_AGENT_LOG=warn "$TARGET/debug/stormwatch-agent" --agent-id e2e --collector "http://127.0.0.1:$PPORT" \
    --token "$TOKEN" --otlp-http "127.0.0.1:$HTTP" --otlp-grpc "" --zipkin "" --admin "127.0.0.1:$ADMIN" \
    --spool-dir "$WORK/spool" >>"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
  await 20 curl -fs "http://127.0.0.1:$ADMIN/healthz" -o /dev/null
}
kill_agent() { kill -9 "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=; }
metric() { curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
collector_metric() { curl -fs "http://127.0.0.1:$CPORT/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
# Stored kept spans of a service: their number when every span id occurs once, else how many
# ids occur more than once.
stored_spans() { curl -fs "http://127.0.0.1:$CPORT/api/v1/spans?service=$1&limit=10000" | "$VENV/bin/python" -c \
  "import collections,json,sys; s=json.load(sys.stdin)['spans']; c=collections.Counter(x['span_id'] for x in s); d=[k for k,n in c.items() if n>1]; print(len(s) if not d else f'{len(d)} duplicated span ids')"; }
count_of() { curl -fs "http://127.0.0.1:$CPORT/api/v1/services" | "$VENV/bin/python" -c \
  "import json,sys; print(sum(s['count'] for s in json.load(sys.stdin)['services'] if s['service']=='$1'))"; }
counted_some() { [ "$(count_of "$1" 2>/dev/null || echo 0)" -gt 0 ]; }
spool_empty() { [ "$(metric stormwatch_agent_spool_batches)" = 0 ]; }
# Kept spans and spans counted by aggregates in the spool's batches (SWB2 header: bytes
# 16..20 and 20..28), as "KEPT AGGREGATED".
spooled_counts() { "$VENV/bin/python" - "$WORK/spool" <<'PY'
import glob, struct, sys
kept = agg = 0
for f in glob.glob(sys.argv[1] + '/*.swb'):
    try:
        k, a = struct.unpack_from('<IQ', open(f, 'rb').read(28), 16)
    except (OSError, struct.error):
        continue  # renamed or being written: counted at the next try
    kept, agg = kept + k, agg + a
print(kept, agg)
PY
}
load() { "$VENV/bin/python" "$HERE/load.py" "$N" "$1" "http://127.0.0.1:$HTTP"; }
# Conditions for `await`, evaluated at each try.
spooled_some() { [ "$(metric stormwatch_agent_spool_batches)" -ge 1 ]; }
counted_all() { [ "$(count_of "$1")" = "$N" ]; }
all_spooled() { [ "$(spooled_counts)" = "$N $N" ]; }

start_collector
"$VENV/bin/python" "$HERE/proxy.py" "$PPORT" "http://127.0.0.1:$CPORT" "$WORK/ctl" >>"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
await 10 curl -s "http://127.0.0.1:$PPORT/healthz" -o /dev/null
start_agent

# 1. SIGKILL the collector once it has stored some of a burst; restart it.
load e2e-during >/dev/null &
LOAD=$!
await 60 counted_some e2e-during
kill_collector
wait $LOAD
start_collector
# 2. SIGKILL the collector between a batch's commit and its answer.
touch "$WORK/ctl/lose"
load e2e-lost >/dev/null &
LOAD=$!
await 60 test -f "$WORK/ctl/committed"
kill_collector
touch "$WORK/ctl/killed"
wait $LOAD
start_collector
await 120 counted_all e2e-lost
await 120 spool_empty
DUPLICATES=$(collector_metric 'stormwatch_collector_batches_total{result="duplicate"}')
# 3. A burst while the collector is down: it must come from the spool.
kill_collector
load e2e-down >/dev/null
await 30 spooled_some
SPOOLED=$(metric stormwatch_agent_spool_batches)
start_collector
await 120 spool_empty
# 4. SIGKILL the agent with a whole burst in its spool (the collector down, so it stays
#    there); restart it on the same spool, then bring the collector back. The burst before
#    must be delivered whole first: an empty spool alone does not say so, since the agent
#    holds kept spans up to a flush interval before spooling them.
await 120 counted_all e2e-down
kill_collector
load e2e-agent >/dev/null
await 30 all_spooled
kill_agent
start_agent
start_collector
await 120 spool_empty
# Everything sent is counted: wait for the last flush of aggregates.
for s in e2e-during e2e-lost e2e-down e2e-agent; do await 30 counted_all "$s" || true; done

passed=0; failed=0
check() { if "$@"; then passed=$((passed + 1)); echo "ok   ${CHECK}"; else failed=$((failed + 1)); echo "FAIL ${CHECK}"; fi; }
eq() { [ "$1" = "$2" ] || { echo "  got ${1:-nothing}, expected $2"; return 1; }; }
CHECK="spans sent during a collector SIGKILL are each counted once"; check eq "$(count_of e2e-during)" "$N"
CHECK="spans of a batch whose answer was lost to a SIGKILL are each counted once"; check eq "$(count_of e2e-lost)" "$N"
CHECK="spans sent while the collector was down are each counted once"; check eq "$(count_of e2e-down)" "$N"
CHECK="spans spooled by a SIGKILLed agent are each counted once"; check eq "$(count_of e2e-agent)" "$N"
for s in e2e-during e2e-lost e2e-down e2e-agent; do
  CHECK="every kept span of $s is stored once"; check eq "$(stored_spans $s)" "$N"
done
CHECK="the resent batch was recognised as stored"; check test "${DUPLICATES:-0}" -ge 1
CHECK="the agent spooled batches during the outage"; check test "${SPOOLED:-0}" -ge 1
CHECK="the spool is empty after recovery"; check eq "$(metric stormwatch_agent_spool_batches)" 0
for r in invalid queue_full spool_full rejected too_large spool_corrupt spool_write; do
  CHECK="no span dropped ($r)"; check eq "$(metric "stormwatch_agent_spans_dropped_total{reason=\"$r\"}")" 0
done
if [ "$failed" -gt 0 ]; then echo "--- agent log"; tail -50 "$WORK/agent.log"; echo "--- collector log"; tail -50 "$WORK/collector.log"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
