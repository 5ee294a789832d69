#!/usr/bin/env bash
# Runs the BENCHMARKS.md measurements: wisp pinned to core 0, wisp-load to core 1.
#
#   scripts/run_benchmarks.sh [BIN_DIR] [OUT_DIR]
#
# BIN_DIR holds release builds of `wisp` and `wisp-load` (default target/release);
# OUT_DIR receives runs.jsonl (one JSON object per run, per-second samples
# included) and server.log. LABEL (default: git commit) tags every record.
# TARGET_PPS (default 250000) is the forwarded rate aimed at in the viewer
# series; DURATION (default 10) the seconds per run; NICE (default -19, needs
# root, ignored otherwise) keeps neighbours on a shared machine from starving
# the two processes. MAX_LOAD, if set, is the server's WISP_MAX_LOAD (`off`
# disables overload control); step 5 (not in the default STEPS) runs the
# overload curve at OVERLOAD_VIEWERS × 500 video + 50 audio pps and tags its
# rooms with MAX_LOAD, e.g. `MAX_LOAD=off STEPS=5 scripts/run_benchmarks.sh`.
# WISP_LOG (default warn) is the server's RUST_LOG, e.g. `warn,wisp::sfu::shed=debug`
# for its load model once a second.
set -euo pipefail
# shellcheck source=scripts/bench_session.sh
source "$(dirname "$0")/bench_session.sh"
BIN=${1:-target/release}
OUT=${2:-bench-results}
TARGET_PPS=${TARGET_PPS:-250000}
DURATION=${DURATION:-10}
VIEWERS=${VIEWERS:-"10 50 100 200 500 1000"}
STEPS=${STEPS:-1234}  # which of the numbered steps below to run
OVERLOAD_VIEWERS=${OVERLOAD_VIEWERS:-"100 200 400 800 1600"}
HTTP=127.0.0.1:18080
mkdir -p "$OUT"
JSONL="$OUT/runs.jsonl"


[ -n "${MAX_LOAD:-}" ] && export WISP_MAX_LOAD=$MAX_LOAD
WISP_HTTP_ADDR=$HTTP WISP_UDP_ADDR=127.0.0.1:18189 RUST_LOG=${WISP_LOG:-warn} \
  nice -n "$NICE" taskset -c 0 "$BIN/wisp" 2>"$OUT/server.log" &
PID=$!
SCRAPER=
trap 'kill $SCRAPER $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf "http://$HTTP/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://$HTTP/healthz" >/dev/null || { echo "wisp did not start" >&2; exit 1; }

load() {
  echo "+ wisp-load $*" >&2
  echo "loadavg $(cat /proc/loadavg)" >&2
  WISP_LOAD_LOG="$JSONL" nice -n "$NICE" taskset -c 1 "$BIN/wisp-load" \
    --url "http://$HTTP" --server-pid "$PID" --server-core 0 --label "$LABEL" "$@"
}

# 1. Setup rate and RSS per idle session (500 idle WHEP sessions, no publisher).
case $STEPS in *1*) load --setup-rate 500 --room setup ;; esac
# 2. Viewer series at about TARGET_PPS forwarded packets/s.
[[ $STEPS == *2* ]] && for v in $VIEWERS; do
  pps=$(( (TARGET_PPS + v - 1) / v ))
  load --viewers "$v" --video-pps "$pps" --duration "$DURATION" --room "series-$v" || true
  sleep 1
done
# 3. Ramp at the default 1000 video pps (9.6 Mbit/s) until loss > 0.1 %.
[[ $STEPS == *3* ]] && { load --ramp --duration "$DURATION" --room ramp || true; }
# 5. Overload curve: offered viewers × 550 pps against delivered pps and loss
#    (admitted viewers only), with the server's overload metrics scraped each
#    second into overload-metrics-<MAX_LOAD>.log.
if [[ $STEPS == *5* ]]; then
  CFG=${MAX_LOAD:-default}; CFG=${CFG//./_}  # room names take no dots
  while :; do
    echo "t $(date +%s.%N)"
    curl -sf "http://$HTTP/metrics" | grep -E '^wisp_(loop_busy_ratio|loop_load_ratio|send_batch|cost_per|load_headroom|viewers_paused|shed_actions_total|admission_refusals_total|sessions|udp_receive|ingress_delay|fanout_skip|packets_dropped_total\{reason="overload"\})' || true
    sleep 1
  done > "$OUT/overload-metrics-$CFG.log" 2>/dev/null &
  SCRAPER=$!
  for v in $OVERLOAD_VIEWERS; do
    load --viewers "$v" --video-pps 500 --duration "$DURATION" --room "overload-$CFG-$v" || true
    sleep 5  # the server's load window and admission's pending time pass
  done
  kill $SCRAPER; SCRAPER=
fi
# 4. Maximum load at 100 viewers (video pps ramp), then latency at half of it.
[[ $STEPS == *4* ]] || exit 0
SUMMARY=$(load --ramp-pps 2000,2500,3000,3500,4000,5000,6000,8000 --viewers 100 \
  --duration "$DURATION" --room maxload --json | tail -1) || true
HALF=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(int((s.get("held_video_pps") or 2000)/2))' "$SUMMARY")
load --viewers 100 --video-pps "$HALF" --duration "$DURATION" --room halfload --full-viewers 4 || true
