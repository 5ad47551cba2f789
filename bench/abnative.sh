#!/bin/bash
# bench/abnative.sh OLD NEW ROUNDS — two builds of the broker alternating,
# native publish-only and 1 -> 1, 128-byte payloads, 5 s each, a fresh broker
# per build and round: the before-and-after check of a change that should
# leave the native path alone (docs/PERFORMANCE.md).
set -u
OLD=$1; NEW=$2; R=$3
D=$(mktemp -d)
trap 'kill $RP 2>/dev/null; rm -rf $D' EXIT
for r in $(seq 1 $R); do
  for b in old new; do
    BIN=$OLD; [ $b = new ] && BIN=$NEW
    rm -rf $D/data; mkdir -p $D/data
    $BIN serve --data $D/data --addr 127.0.0.1:7272 --http-addr "" >$D/log 2>&1 & RP=$!
    for i in $(seq 1 50); do grep -q "ratatoskr listening" $D/log && break; sleep 0.1; done
    for subs in 0 1; do
      $BIN loadtest --server 127.0.0.1:7272 --topic t$subs --producers 1 --subscribers $subs --size 128B --duration 5s --broker-pid $RP 2>&1 \
        | grep -E "^(publish rate|deliver rate|CPU)" | tr -s " " | tr "\n" " " | sed "s/^/r$r $b subs=$subs: /"; echo
    done
    kill $RP; wait $RP 2>/dev/null
  done
done
