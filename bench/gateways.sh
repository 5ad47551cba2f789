#!/bin/bash
# bench/gateways.sh BIN ROUNDS [DURATION] — the gateways side by side with the
# native protocol (docs/PERFORMANCE.md, issue 16): one broker per round with
# gRPC, HTTP and WebSocket on; each protocol publish-only (1 producer, 0
# subscribers) and 1 -> 1 (1 producer, 1 subscriber), 128-byte payloads, a
# memory topic of one partition (a fresh one per run), the protocols in turn.
# Prints one line per run: round, protocol, shape, then the load tool's rates
# and the CPU the tool and the broker used.
set -u
BIN=$1; R=$2; DUR=${3:-5s}
D=$(mktemp -d)
trap 'kill $RP 2>/dev/null; rm -rf $D' EXIT
for r in $(seq 1 $R); do
  rm -rf $D/data; mkdir -p $D/data
  $BIN serve --data $D/data --addr 127.0.0.1:7171 --http-addr 127.0.0.1:8181 --grpc-addr 127.0.0.1:9191 >$D/log 2>&1 & RP=$!
  for i in $(seq 1 50); do grep -q "ratatoskr listening" $D/log && break; sleep 0.1; done
  for shape in "0 publish-only" "1 1->1"; do
    set -- $shape; SUBS=$1; NAME=$2
    for proto in native grpc http ws; do
      case $proto in
        native) SRV=127.0.0.1:7171 ;;
        grpc) SRV=127.0.0.1:9191 ;;
        *) SRV=127.0.0.1:8181 ;;
      esac
      $BIN loadtest --protocol $proto --server $SRV --topic "t-$r-$SUBS-$proto" --producers 1 --subscribers $SUBS \
        --size 128B --duration $DUR --broker-pid $RP 2>&1 \
        | grep -E "^(publish rate|deliver rate|lost|CPU)" | tr -s " " | tr "\n" " " | sed "s/^/r$r $proto $NAME: /"; echo
    done
  done
  kill $RP; wait $RP 2>/dev/null
done
