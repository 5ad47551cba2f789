#!/bin/bash
# bench/redis.sh BIN ROUNDS [COUNT] — a Redis-kept topic beside raw Redis
# (docs/PERFORMANCE.md, issue 17). Per round, on one fresh redis-server with
# AOF everysec (no RDB), in turn:
#   1. redis-benchmark: pipelined XADD of one 128-byte value per entry
#      (-P 64, 4 connections), COUNT entries: the peer, in messages/s;
#   2. the broker, its topic in that Redis (storage=redis): the load tool
#      publishes COUNT messages of 128 bytes, publish-only (2 producers, one
#      partition);
#   3. the same, with --replay: the subscriber then reads it all back from
#      Redis through the broker;
#   4. the replay of a disk topic (fsync never) of the same broker, the
#      peer of 3: the broker's delivery path is common to both.
# Prints one line per measurement; the Redis's used memory is flushed
# between runs. Automatic AOF rewrites are off: one forked during a run
# takes the other core from whichever side happens to be running. The disk's fsync'd bandwidth, for the record:
#   dd if=/dev/zero of=/tmp/ddtest bs=1M count=256 oflag=dsync
set -u
BIN=$1; R=$2; N=${3:-2000000}
D=$(mktemp -d)
PORT=16379
trap 'kill $RP $BP 2>/dev/null; rm -rf $D' EXIT
V=$(head -c 128 /dev/zero | tr '\0' 'v')
for r in $(seq 1 $R); do
  rm -rf $D/redis $D/data; mkdir -p $D/redis $D/data
  redis-server --port $PORT --bind 127.0.0.1 --dir $D/redis --save '' --appendonly yes --appendfsync everysec \
    --auto-aof-rewrite-percentage 0 --daemonize no --logfile $D/redis.log & RP=$!
  for i in $(seq 1 50); do redis-cli -p $PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-benchmark -p $PORT -n $N -P 64 -c 4 --csv XADD bench '*' v "$V" 2>/dev/null | tail -1 \
    | awk -F'"' -v r=$r '{printf "r%s redis-benchmark XADD -P 64: %s msg/s\n", r, $4}'
  redis-cli -p $PORT flushall >/dev/null
  $BIN serve --data $D/data --addr 127.0.0.1:7171 --http-addr 127.0.0.1:0 --redis-url redis://127.0.0.1:$PORT >$D/log 2>&1 & BP=$!
  for i in $(seq 1 50); do grep -q "ratatoskr listening" $D/log && break; sleep 0.1; done
  $BIN loadtest --server 127.0.0.1:7171 --topic "pub-$r" --storage redis --producers 2 --subscribers 0 \
    --size 128B --count $N --broker-pid $BP 2>&1 \
    | grep -E "^(publish rate|lost|CPU)" | tr -s " " | tr "\n" " " | sed "s/^/r$r ratatoskr redis publish-only: /"; echo
  $BIN loadtest --server 127.0.0.1:7171 --topic "replay-$r" --storage redis --producers 2 --subscribers 1 --replay \
    --size 128B --count $N --broker-pid $BP 2>&1 \
    | grep -E "^(publish rate|deliver rate|lost|CPU)" | tr -s " " | tr "\n" " " | sed "s/^/r$r ratatoskr redis replay: /"; echo
  $BIN loadtest --server 127.0.0.1:7171 --topic "disk-replay-$r" --durable --fsync never --producers 2 --subscribers 1 \
    --replay --size 128B --count $N --broker-pid $BP 2>&1 \
    | grep -E "^(deliver rate|lost)" | tr -s " " | tr "\n" " " | sed "s/^/r$r ratatoskr disk (fsync never) replay, the peer: /"; echo
  echo "r$r redis used_memory after the broker's runs: $(redis-cli -p $PORT info memory | grep '^used_memory_human' | tr -d '\r')"
  kill $BP; wait $BP 2>/dev/null
  kill $RP; wait $RP 2>/dev/null
done
