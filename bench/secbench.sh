#!/bin/bash
# bench/secbench.sh BIN ROUNDS SUBS — security off vs on (SCRAM user of a tenant with
# every quota set far above what the run reaches, ACL rules allowing the run),
# alternating per round; one producer, SUBS subscribers, 128-byte payloads, 5 s.
BIN=$1; R=$2; SUBS=${3:-0}
D=$(mktemp -d)
for r in $(seq 1 $R); do
  for mode in off on; do
    rm -rf $D/data; mkdir -p $D/data
    $BIN serve --data $D/data --addr 127.0.0.1:7171 --http-addr 127.0.0.1:8181 --auth $mode >$D/log 2>&1 & RP=$!
    for i in $(seq 1 50); do grep -q "ratatoskr listening" $D/log && break; sleep 0.1; done
    CREDS=""
    if [ $mode = on ]; then
      A="--http-addr 127.0.0.1:8181 --data $D/data"
      $BIN tenant add bench $A --max-connections 1000 --max-topics 1000 --max-partitions 10000 --max-storage 1TiB \
        --publish-bytes-rate 100GiB --publish-messages-rate 1000000000 --delivery-bytes-rate 100GiB >/dev/null
      echo 'bench-password' | $BIN user add runner --tenant bench --password-stdin $A >/dev/null
      $BIN acl add --principal runner --topic '*' --ops all --tenant bench $A >/dev/null
      $BIN acl add --principal runner --group '*' --ops all --tenant bench $A >/dev/null
      CREDS="--user runner --password bench-password"
    fi
    $BIN loadtest --server 127.0.0.1:7171 --subscribers $SUBS --producers 1 --size 128B --duration 5s --broker-pid $RP $CREDS 2>&1 \
      | grep -E "^(publish rate|deliver rate|latency p50|lost|CPU)" | tr -s " " | tr "\n" " " | sed "s/^/r$r auth-$mode /"; echo
    kill $RP; wait $RP 2>/dev/null
  done
done
rm -rf $D
