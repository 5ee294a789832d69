#!/usr/bin/env bash
# Issue 16's measurement: server CPU per forwarded packet with N workers
# against one, at the same fan-out (one publisher at 500 video + 50 audio
# pps, VIEWERS viewers spread by the dispatcher over the workers).
#
#   scripts/run_workers_bench.sh [BIN_DIR] [OUT_DIR]
#
# ORDER (default "1 2 2 1": alternating cancels drift on a shared machine) is
# the worker counts, one server per run; VIEWERS (default 400) and DURATION
# (default 10) the load. Neither process is pinned: two workers need both
# cores. Overload control is off, so both runs carry the same load.
set -euo pipefail
# shellcheck source=scripts/bench_session.sh
source "$(dirname "$0")/bench_session.sh"
BIN=${1:-target/release}
OUT=${2:-bench-results/workers}
ORDER=${ORDER:-"1 2 2 1"}
VIEWERS=${VIEWERS:-400}
DURATION=${DURATION:-10}
HTTP=127.0.0.1:18080
mkdir -p "$OUT"
PID=
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
run=0
for w in $ORDER; do
  run=$((run + 1))
  WISP_WORKERS=$w WISP_MAX_LOAD=off WISP_HTTP_ADDR=$HTTP WISP_UDP_ADDR=127.0.0.1:18189 RUST_LOG=warn \
    nice -n "$NICE" "$BIN/wisp" 2>"$OUT/server-$run-w$w.log" &
  PID=$!
  for _ in $(seq 100); do curl -sf "http://$HTTP/healthz" >/dev/null && break; sleep 0.1; done
  echo "run $run workers $w loadavg $(cat /proc/loadavg)" | tee -a "$OUT/loadavg.log" >&2
  WISP_LOAD_LOG="$OUT/runs.jsonl" nice -n "$NICE" "$BIN/wisp-load" --url "http://$HTTP" \
    --server-pid "$PID" --label "$LABEL-w$w" --viewers "$VIEWERS" --video-pps 500 \
    --duration "$DURATION" --room "workers-$w-$run" || true
  curl -sf "http://$HTTP/metrics" | grep -E '^wisp_(worker_|packets_dropped_total)' > "$OUT/metrics-$run-w$w.txt" || true
  kill $PID; wait $PID 2>/dev/null || true; PID=
  sleep 2
done
