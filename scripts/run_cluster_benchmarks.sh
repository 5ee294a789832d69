#!/usr/bin/env bash
# Runs the BENCHMARKS.md "Cluster" measurements: a throwaway redis-server, an
# origin wisp (core ORIGIN_CORE) and an edge wisp (core EDGE_CORE) in cluster
# mode on loopback, and wisp-load (cores LOAD_CPUS) publishing to the origin.
#
#   scripts/run_cluster_benchmarks.sh [BIN_DIR] [OUT_DIR]
#
# BIN_DIR holds release builds of `wisp` and `wisp-load` (default
# target/release); OUT_DIR receives cluster-runs.jsonl (one JSON object per
# run), origin.log, edge.log and cluster-summary.json. Settings (environment):
# VIEWERS per node (default 100), VIDEO_PPS (default 400; at 500 and above
# wisp-load spins on its core), DURATION seconds per run (default 10), FULL
# decrypting viewers per node (default 2: the latency samples), EDGE_VIEWERS
# (default "1 10 100": the origin-cost step), NICE (default -19, needs root),
# LOAD_NICE (wisp-load's nice value, default NICE; a higher value keeps the
# load generator from delaying the nodes' wake-ups on this two-core box, as
# on separate machines; its latency clock is the kernel's receive timestamp),
# MAX_LOAD (the nodes' WISP_MAX_LOAD), LABEL (default: git commit), STEPS
# (default 123).
#
# Runs (every one: the publisher on the origin):
#   1. single: a room published and viewed on the edge node alone: the
#      single-node CPU per forwarded packet, same process and core as step 2's.
#   2. edge: VIEWERS viewers on the origin and VIEWERS on the edge, round robin
#      in one run: the edge's added one-way delay (p50/p99 of the edge's
#      viewers minus the origin's), the edge's CPU per forwarded packet, and
#      the origin's copies per sent packet (VIEWERS + 1 edge).
#   3. origin cost per edge: n viewers on the edge alone, n in EDGE_VIEWERS:
#      the origin writes one copy of each packet (forwarded_per_sent = 1)
#      whatever n.
# Every figure comes from wisp-load's JSON: view_urls[] (per-URL delivery,
# loss, latency) and nodes[] (per node: utime+stime from /proc/PID/stat and
# /metrics deltas over the send period).
set -euo pipefail
# shellcheck source=scripts/bench_session.sh
source "$(dirname "$0")/bench_session.sh"
BIN=${1:-target/release}
OUT=${2:-bench-results}
VIEWERS=${VIEWERS:-100}
VIDEO_PPS=${VIDEO_PPS:-400}
DURATION=${DURATION:-10}
FULL=${FULL:-2}
EDGE_VIEWERS=${EDGE_VIEWERS:-"1 10 100"}
STEPS=${STEPS:-123}
ORIGIN_CORE=${ORIGIN_CORE:-0}
EDGE_CORE=${EDGE_CORE:-1}
LOAD_CPUS=${LOAD_CPUS:-0,1}
TOKEN=${WISP_CLUSTER_TOKEN:-cluster-bench-token}
mkdir -p "$OUT"
JSONL="$OUT/cluster-runs.jsonl"

command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
O_HTTP=127.0.0.1:$(free_port)
E_HTTP=127.0.0.1:$(free_port)
O_UDP=127.0.0.1:$(free_port)
E_UDP=127.0.0.1:$(free_port)

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

[ -n "${MAX_LOAD:-}" ] && export WISP_MAX_LOAD=$MAX_LOAD
start_node() {  # HTTP UDP CORE LOG
  WISP_HTTP_ADDR=$1 WISP_UDP_ADDR=$2 WISP_REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
    WISP_NODE_URL=http://$1 WISP_CLUSTER_TOKEN=$TOKEN RUST_LOG=warn \
    nice -n "$NICE" taskset -c "$3" "$BIN/wisp" 2>"$4" &
  PIDS+=($!)
  LAST_PID=$!
}
start_node "$O_HTTP" "$O_UDP" "$ORIGIN_CORE" "$OUT/origin.log"; O_PID=$LAST_PID
start_node "$E_HTTP" "$E_UDP" "$EDGE_CORE" "$OUT/edge.log"; E_PID=$LAST_PID

# Both nodes up and each in the other's directory view.
for _ in $(seq 100); do
  n1=$(curl -sf "http://$O_HTTP/api/cluster" | jq '.nodes | length' 2>/dev/null || echo 0)
  n2=$(curl -sf "http://$E_HTTP/api/cluster" | jq '.nodes | length' 2>/dev/null || echo 0)
  [ "$n1" -ge 2 ] && [ "$n2" -ge 2 ] && break
  sleep 0.1
done
[ "${n1:-0}" -ge 2 ] && [ "${n2:-0}" -ge 2 ] || { echo "the two nodes did not see each other" >&2; exit 1; }

load() {
  echo "+ wisp-load $*" >&2
  echo "loadavg $(cat /proc/loadavg)" >&2
  WISP_LOAD_LOG="$JSONL" nice -n "${LOAD_NICE:-$NICE}" taskset -c "$LOAD_CPUS" "$BIN/wisp-load" \
    --url "http://$O_HTTP" --server-pid "$O_PID" --node-pid "http://$E_HTTP=$E_PID" \
    --video-pps "$VIDEO_PPS" --duration "$DURATION" --label "$LABEL" "$@"
}
RUN=$(date +%s)

# 1. Single node: the edge node serves a room of its own.
if [[ $STEPS == *1* ]]; then
  load --publish-url "http://$E_HTTP" --view-url "http://$E_HTTP" \
    --viewers "$VIEWERS" --full-viewers "$FULL" --room "cl-single-$RUN" || echo "run failed" >&2
  sleep 6  # an upstream closes at most 5 s after its last viewer
fi
# 2. Origin viewers and edge viewers in one run (round robin).
if [[ $STEPS == *2* ]]; then
  load --view-url "http://$O_HTTP" --view-url "http://$E_HTTP" \
    --viewers $((2 * VIEWERS)) --full-viewers $((2 * FULL)) --room "cl-edge-$RUN" || echo "run failed" >&2
  sleep 6
fi
# 3. Origin cost per edge, at several edge viewer counts.
if [[ $STEPS == *3* ]]; then
  for n in $EDGE_VIEWERS; do
    load --view-url "http://$E_HTTP" --viewers "$n" --full-viewers 1 \
      --room "cl-cost-$n-$RUN" || echo "run failed" >&2
    sleep 6
  done
fi

# The figures, from this session's records.
python3 - "$JSONL" "$RUN" "$O_HTTP" "$E_HTTP" > "$OUT/cluster-summary.json" <<'EOF'
import json, sys
path, run, o, e = sys.argv[1], sys.argv[2], "http://" + sys.argv[3], "http://" + sys.argv[4]
recs = [r for r in map(json.loads, open(path)) if str(r.get("room", "")).endswith("-" + run)]
by = lambda xs, url: next((x for x in xs if x["url"] == url), {})
out = {"run": run}
for r in recs:
    room = r["room"]
    nodes, views = r.get("nodes", []), r.get("view_urls", [])
    if room.startswith("cl-single-"):
        n = by(nodes, e)
        out["single"] = {"viewers": r["admitted"], "loss_ratio": r["loss_ratio"],
                         "cpu_us_per_forwarded": n.get("cpu_us_per_forwarded"),
                         "forwarded_pps": n.get("forwarded_pps"),
                         "latency_p50_us": by(views, e).get("latency_p50_us"),
                         "latency_p99_us": by(views, e).get("latency_p99_us")}
    elif room.startswith("cl-edge-"):
        vo, ve = by(views, o), by(views, e)
        no, ne = by(nodes, o), by(nodes, e)
        d = lambda k: (ve[k] - vo[k]) if ve.get(k) is not None and vo.get(k) is not None else None
        out["edge"] = {"viewers_per_node": vo.get("admitted"),
                       "origin_loss_ratio": vo.get("loss_ratio"), "edge_loss_ratio": ve.get("loss_ratio"),
                       "origin_p50_us": vo.get("latency_p50_us"), "origin_p99_us": vo.get("latency_p99_us"),
                       "edge_p50_us": ve.get("latency_p50_us"), "edge_p99_us": ve.get("latency_p99_us"),
                       "added_p50_us": d("latency_p50_us"), "added_p99_us": d("latency_p99_us"),
                       "origin_forwarded_per_sent": no.get("forwarded_per_sent"),
                       "edge_forwarded_per_sent": ne.get("forwarded_per_sent"),
                       "origin_cpu_us_per_forwarded": no.get("cpu_us_per_forwarded"),
                       "edge_cpu_us_per_forwarded": ne.get("cpu_us_per_forwarded"),
                       "edge_forwarded_pps": ne.get("forwarded_pps")}
    elif room.startswith("cl-cost-"):
        no, ne = by(nodes, o), by(nodes, e)
        out.setdefault("origin_cost", []).append({
            "edge_viewers": r["admitted"], "loss_ratio": r["loss_ratio"],
            "origin_forwarded_per_sent": no.get("forwarded_per_sent"),
            "edge_forwarded_per_sent": ne.get("forwarded_per_sent"),
            "origin_relay_upstreams": no.get("relay_upstreams"),
            "edge_relay_upstreams": ne.get("relay_upstreams")})
s, ed = out.get("single", {}), out.get("edge", {})
if s.get("cpu_us_per_forwarded") and ed.get("edge_cpu_us_per_forwarded"):
    out["edge_cpu_vs_single"] = ed["edge_cpu_us_per_forwarded"] / s["cpu_us_per_forwarded"]
print(json.dumps(out, indent=1))
EOF
cat "$OUT/cluster-summary.json"
echo "loadavg at the end: $(cat /proc/loadavg)" >&2
