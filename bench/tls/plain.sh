#!/bin/bash
# plain.sh ROUNDS — plaintext gnet path, old (ccb749f) vs new binary, alternating:
# publish-only and 1->1, 100-byte payloads, memory topics, fresh broker each run.
# Binaries: /tmp/rt-new (go build -o /tmp/rt-new ./cmd/ratatoskr), /tmp/rt-old (the same at ccb749f);
# certificates: /tmp/rt-new cert dev --dir /tmp/tlscerts; peers in /work/peer.
R=$1; D=$(mktemp -d)
for r in $(seq 1 $R); do
  for label in old new; do
    BIN=/tmp/rt-$label; rm -rf $D/data
    $BIN serve --data $D/data --addr 127.0.0.1:7171 --http-addr 127.0.0.1:0 --default-storage memory >/dev/null 2>&1 & RP=$!; sleep 0.5
    L="$BIN loadtest --server 127.0.0.1:7171 --size 100B --duration 5s --broker-pid $RP"
    $L --topic p --subscribers 0 2>&1 | grep -E "publish rate|CPU" | tr -s ' ' | tr '\n' ' ' | sed "s/^/r$r $label pub /"; echo
    $L --topic s --subscribers 1 2>&1 | grep -E "publish rate|deliver rate|CPU" | tr -s ' ' | tr '\n' ' ' | sed "s/^/r$r $label 1to1 /"; echo
    kill $RP; wait $RP 2>/dev/null
  done
done
rm -rf $D
