#!/usr/bin/env bash
# Side by side on this machine, one run: acked publish throughput and 1->1
# p99 at 10k msg/s, 128 B messages, replication factor 3, three nodes on
# 127.0.0.1 each:
#   - Ratatoskr: a topic with replicas=3, fsync=always (acked once a quorum
#     has it fsynced), one partition, loadtest at its leader; the latency
#     run again with JetStream's policy (fsync=interval=2m: acked once a
#     quorum has it written);
#   - NATS JetStream: a stream with 3 replicas (file storage, its default
#     sync: acked once a quorum has it written, fsynced every 2 minutes),
#     nats bench js pub async --replicas 3 for throughput, and jslat/ (one
#     producer at 10k msg/s, an ordered push consumer) for the 1->1 latency.
# Each system runs alone (the other stopped), latency first, throughput
# last (see below). Usage:
#   bench/clusterbench/side.sh [DURATION] [RATATOSKR_BIN] [NATS_DIR]
set -euo pipefail
DUR=${1:-10s}
BIN=${2:-bin/ratatoskr}
NATS=${3:-/work/peer}
W=$(mktemp -d)
pids=()
# The data directories go, and sync waits for the journal commit that
# trims them (see below), so that a next run does not measure the trim.
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$W"; sync; }
trap cleanup EXIT
sync

echo "== disk: fsync'd write bandwidth (dd oflag=dsync, 1 MiB blocks)"
dd if=/dev/zero of="$W/dd" bs=1M count=256 oflag=dsync 2>&1 | tail -1
rm -f "$W/dd"

echo "== Ratatoskr, 3 nodes, replicas=3, fsync=always"
PEERS=1=127.0.0.1:17411,2=127.0.0.1:17412,3=127.0.0.1:17413
for n in 1 2 3; do
	"$BIN" serve --node-id $n --peers $PEERS --cluster-addr 127.0.0.1:1741$n --addr 127.0.0.1:1740$n \
		--http-addr 127.0.0.1:1742$n --data "$W/r$n" --log-level error --admin-token t &
	pids+=($!)
done
# topic NAME [FSYNC]: creates it (replicas 3, fsync FSYNC, default always)
# and prints its leader once leadership settles on the preferred one
# (docs/CLUSTER.md).
topic() {
	for i in $(seq 1 100); do
		"$BIN" topic create "$1" --partitions 1 --replicas 3 --fsync "${2:-always}" --server 127.0.0.1:17401 >/dev/null 2>&1 && break
		sleep 0.2
	done
	for i in $(seq 1 100); do
		leader=$(curl -s -H 'Authorization: Bearer t' http://127.0.0.1:17421/api/v1/cluster | TOPIC=$1 python3 -c '
import json, os, sys
d = json.load(sys.stdin)
ps = [p for p in d.get("partitions") or [] if p["topic"] == os.environ["TOPIC"]]
n = {x["id"]: x["client_addr"] for x in d["nodes"]}
print(n.get(ps[0]["leader"], "") if ps and ps[0]["leader"] == ps[0]["replicas"][0] else "")')
		[ -n "$leader" ] && break
		sleep 0.2
	done
	echo "$leader"
}
# The latency runs come first, each on a fresh topic, and the throughput
# run last (on both sides): deleting the throughput run's gigabyte makes
# this machine's file system (mounted with discard) trim it, and the
# trims stall the fsyncs that follow for tens of seconds, which measured
# the disk's trim, not the broker (2026-12-03: fsync=always p99 17-39 ms
# right after the delete, 2.2-2.7 ms otherwise).
leader=$(topic side-latency)
echo "leader: $leader"
"$BIN" loadtest --server "$leader" --topic side-latency --subscribers 1 --producers 1 --rate 10000 --duration "$DUR" --size 128B | grep -E 'latency p50|latency p99.9|lost'
# And with JetStream's policy: acked once a quorum has it written, synced
# later (fsync=interval=2m; JetStream syncs every 2 minutes).
echo "== Ratatoskr latency, fsync=interval=2m (JetStream's policy)"
leader=$(topic side-latency-interval interval=2m)
"$BIN" loadtest --server "$leader" --topic side-latency-interval --subscribers 1 --producers 1 --rate 10000 --duration "$DUR" --size 128B | grep -E 'latency p50|latency p99.9|lost'
echo "== Ratatoskr throughput, fsync=always"
leader=$(topic side)
"$BIN" loadtest --server "$leader" --topic side --subscribers 0 --producers 4 --duration "$DUR" --size 128B | grep -E 'publish rate|CPU'
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

echo "== NATS JetStream, 3 nodes, stream replicas 3"
for n in 1 2 3; do
	cat > "$W/n$n.conf" <<CONF
server_name: n$n
listen: 127.0.0.1:1743$n
jetstream { store_dir: "$W/js$n" }
cluster {
  name: side
  listen: 127.0.0.1:1744$n
  routes: [nats-route://127.0.0.1:17441, nats-route://127.0.0.1:17442, nats-route://127.0.0.1:17443]
}
CONF
	"$NATS/nats-server" -c "$W/n$n.conf" >"$W/n$n.log" 2>&1 &
	pids+=($!)
done
S=nats://127.0.0.1:17431,nats://127.0.0.1:17432,nats://127.0.0.1:17433
for i in $(seq 1 100); do
	"$NATS/nats" --server $S server check jetstream >/dev/null 2>&1 && break
	sleep 0.2
done
(cd "$(dirname "$0")/jslat" && go run . -server $S -replicas 3 -rate 10000 -duration "$DUR")
"$NATS/nats" --server $S bench js pub async side.a --stream SIDE --create --replicas 3 --storage file \
	--size 128 --clients 4 --msgs 400000 --no-progress 2>&1 | grep -iE 'aggregated|stats' | head -3
