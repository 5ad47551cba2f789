#!/bin/bash
# latency.sh ROUNDS — 1->1 at 100k msg/s, 100 B: plaintext (new binary) vs TLS, alternating.
# Binaries: /tmp/rt-new (go build -o /tmp/rt-new ./cmd/ratatoskr), /tmp/rt-old (the same at ccb749f);
# certificates: /tmp/rt-new cert dev --dir /tmp/tlscerts; peers in /work/peer.
R=$1; C=/tmp/tlscerts; D=$(mktemp -d)
for r in $(seq 1 $R); do
  rm -rf $D/data
  /tmp/rt-new serve --data $D/data --addr 127.0.0.1:7171 --tls-addr 127.0.0.1:7443 --tls-cert $C/server.pem --tls-key $C/server-key.pem --http-addr 127.0.0.1:0 --default-storage memory >/dev/null 2>&1 & RP=$!; sleep 0.5
  for mode in plain tls; do
    if [ $mode = plain ]; then S="--server 127.0.0.1:7171"; else S="--server 127.0.0.1:7443 --tls-ca $C/ca.pem"; fi
    /tmp/rt-new loadtest $S --topic $mode$r --subscribers 1 --rate 100000 --size 100B --duration 5s --broker-pid $RP 2>&1 | grep -E "latency p50|lateness|CPU" | tr -s ' ' | tr '\n' ' ' | sed "s/^/r$r $mode 100k /"; echo
  done
  kill $RP; wait $RP 2>/dev/null
done
rm -rf $D
