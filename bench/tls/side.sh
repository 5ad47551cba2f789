#!/bin/bash
# side.sh ROUNDS — TLS side by side: NATS and ratatoskr, publish-only and 1->1, 100-byte payloads,
# plus ratatoskr's 1->1 p99 at 100k msg/s; same certs (ratatoskr cert dev in /tmp/tlscerts).
# Binaries: /tmp/rt-new (go build -o /tmp/rt-new ./cmd/ratatoskr), /tmp/rt-old (the same at ccb749f);
# certificates: /tmp/rt-new cert dev --dir /tmp/tlscerts; peers in /work/peer.
R=$1; C=/tmp/tlscerts; D=$(mktemp -d)
cat > $D/nats.conf <<EOC
listen: 127.0.0.1:4443
tls { cert_file: "$C/server.pem", key_file: "$C/server-key.pem" }
EOC
N="/work/peer/nats -s tls://127.0.0.1:4443 --tlsca $C/ca.pem"
for r in $(seq 1 $R); do
  /work/peer/nats-server -c $D/nats.conf >/dev/null 2>&1 & NP=$!; sleep 0.5
  $N bench pub bench.x --msgs 3000000 --size 100B --clients 1 --no-progress 2>&1 | grep -oE "stats: [0-9,]+ msgs/sec" | sed "s/^/r$r nats-tls pub /"
  ($N bench sub bench.y --msgs 3000000 --size 100B --clients 1 --no-progress 2>&1 | grep -oE "stats: [0-9,]+ msgs/sec" | sed "s/^/r$r nats-tls 1to1 sub /") & SP=$!
  sleep 0.5
  $N bench pub bench.y --msgs 3000000 --size 100B --clients 1 --no-progress 2>&1 | grep -oE "stats: [0-9,]+ msgs/sec" | sed "s/^/r$r nats-tls 1to1 pub /"
  wait $SP; kill $NP; wait $NP 2>/dev/null
  rm -rf $D/data
  /tmp/rt-new serve --data $D/data --addr off --tls-addr 127.0.0.1:7443 --tls-cert $C/server.pem --tls-key $C/server-key.pem --http-addr 127.0.0.1:0 --default-storage memory >/dev/null 2>&1 & RP=$!; sleep 0.5
  L="/tmp/rt-new loadtest --server 127.0.0.1:7443 --tls-ca $C/ca.pem --size 100B --duration 5s --broker-pid $RP"
  $L --topic p --subscribers 0 2>&1 | grep -E "publish rate|CPU" | tr -s ' ' | tr '\n' ' ' | sed "s/^/r$r rt-tls pub /"; echo
  $L --topic s --subscribers 1 2>&1 | grep -E "publish rate|deliver rate|CPU" | tr -s ' ' | tr '\n' ' ' | sed "s/^/r$r rt-tls 1to1 /"; echo
  $L --topic l --subscribers 1 --rate 100000 2>&1 | grep -E "publish rate|latency p50|CPU" | tr -s ' ' | tr '\n' ' ' | sed "s/^/r$r rt-tls 100k /"; echo
  kill $RP; wait $RP 2>/dev/null
done
rm -rf $D
