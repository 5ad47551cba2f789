#!/bin/bash
# bench/redisclient/run.sh [ROUNDS] — the Redis client comparison behind
# storage/redislog's choice of rueidis (docs/PERFORMANCE.md, issue 17): a
# module of its own, so that go-redis, measured here, is no dependency of
# the broker. Writes (EVALSHA of 16 or 64 batches of 13 KiB, and the same
# as pipelined XADD, from 2 goroutines) and reads (XRANGE COUNT 64 from 1 and
# 4 goroutines; XREVRANGE COUNT 1) through rueidis and go-redis v9, against
# a redis-server it starts with AOF everysec on 127.0.0.1:16399.
set -eu
cd "$(dirname "$0")"
R=${1:-3}
D=$(mktemp -d)
trap 'kill $(cat $D/redis.pid) 2>/dev/null; rm -rf $D' EXIT
redis-server --bind 127.0.0.1 --port 16399 --save '' --appendonly yes --appendfsync everysec --dir $D \
  --daemonize yes --pidfile $D/redis.pid --logfile $D/redis.log
for i in $(seq 1 50); do redis-cli -p 16399 ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p 16399 config set auto-aof-rewrite-percentage 0 >/dev/null
go test -c -o $D/bench.test .
for r in $(seq 1 $R); do
  echo "round $r: $(uptime)"
  REDIS_PID_FILE=$D/redis.pid $D/bench.test -test.run='^$' -test.bench=. -test.benchtime=5s -test.timeout=30m
done
