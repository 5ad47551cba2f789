#!/usr/bin/env bash
# The Ratatoskr half of side.sh's latency run, alone: three nodes on
# 127.0.0.1, one partition of 3 replicas under the given fsync policy, and
# loadtest's 1->1 latency at 10k msg/s at its leader. For before/after
# comparisons of one build against another. Usage:
#   bench/clusterbench/lat.sh BIN [FSYNC] [DURATION]
set -euo pipefail
BIN=$1
FS=${2:-always}
DUR=${3:-10s}
W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$W"; sync; }
trap cleanup EXIT
sync
PEERS=1=127.0.0.1:17511,2=127.0.0.1:17512,3=127.0.0.1:17513
for n in 1 2 3; do
	"$BIN" serve --node-id $n --peers $PEERS --cluster-addr 127.0.0.1:1751$n --addr 127.0.0.1:1750$n \
		--http-addr 127.0.0.1:1752$n --data "$W/r$n" --log-level error --admin-token t &
	pids+=($!)
done
for i in $(seq 1 100); do
	"$BIN" topic create lat --partitions 1 --replicas 3 --fsync "$FS" --server 127.0.0.1:17501 >/dev/null 2>&1 && break
	sleep 0.2
done
for i in $(seq 1 100); do
	leader=$(curl -s -H 'Authorization: Bearer t' http://127.0.0.1:17521/api/v1/cluster | python3 -c '
import json, sys
d = json.load(sys.stdin)
ps = [p for p in d.get("partitions") or [] if p["topic"] == "lat"]
n = {x["id"]: x["client_addr"] for x in d["nodes"]}
print(n.get(ps[0]["leader"], "") if ps and ps[0]["leader"] == ps[0]["replicas"][0] else "")')
	[ -n "$leader" ] && break
	sleep 0.2
done
"$BIN" loadtest --server "$leader" --topic lat --subscribers 1 --producers 1 --rate 10000 --duration "$DUR" --size 128B |
	grep -E 'latency p50|latency p99.9|lost'
