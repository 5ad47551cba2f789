#!/usr/bin/env bash
# Measures batch compression against a broker (docs/PERFORMANCE.md, "Issue
# 13: compression"): for each codec, a fresh broker, then `loadtest
# --payload json --compression CODEC` in three scenarios: publish-only
# on a memory topic (producer throughput), one producer and one subscriber
# at a fixed RATE on a memory topic (CPU per message on both sides: on a
# shared machine an unpaced subscriber falls behind and is cut), and
# publish-only on a durable topic (disk). Prints one tab-separated line
# per run: round, scenario, codec, publish and deliver rates (msg/s), tool
# and broker CPU (cores), the batch bytes the broker received
# (ratatoskr_published_bytes_total) and the data directory's size after
# the run. Codecs are interleaved, their order rotated each round, so a
# load that comes and goes on a shared machine falls on all of them.
#
#   bench/compression/run.sh BIN [ROUNDS] [COUNT] [SIZE] [RATE]
set -euo pipefail
bin=${1:?usage: run.sh BIN [ROUNDS] [COUNT] [SIZE] [RATE]}
rounds=${2:-3} count=${3:-1000000} size=${4:-256} rate=${5:-50000}
addr=127.0.0.1:17370 http=127.0.0.1:17371
codecs=(none lz4 zstd snappy)
printf 'round\tscenario\tcodec\tpublish_rate\tdeliver_rate\ttool_cpu\tbroker_cpu\twire_bytes\tdisk_bytes\n'
for ((r = 0; r < rounds; r++)); do
	for scenario in publish paced durable; do
		for ((i = 0; i < ${#codecs[@]}; i++)); do
			codec=${codecs[(i + r) % ${#codecs[@]}]}
			data=$(mktemp -d -t ratatoskr-compress.XXXXXX)
			"$bin" serve --addr "$addr" --http-addr "$http" --data "$data" >"$data.log" 2>&1 &
			pid=$!
			for _ in $(seq 100); do # until the broker listens
				[ -s "$data/admin.token" ] && (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
				sleep 0.1
			done
			args=(--server "$addr" --topic lt --payload json --size "$size" --count "$count"
				--compression "$codec" --broker-pid "$pid" --json)
			case $scenario in
			publish) args+=(--subscribers 0) ;;
			paced) args[9]=$((rate * 10)) args+=(--rate "$rate") ;; # ten seconds
			durable) args+=(--durable --subscribers 0) ;;
			esac
			json=$("$bin" loadtest "${args[@]}" 2>"$data.err" | tail -n 1) || json='{}'
			if [ "$json" = '{}' ]; then sed 's/^/# /' "$data.err" >&2; fi
			wire=$(curl -s -H "Authorization: Bearer $(cat "$data/admin.token")" "http://$http/metrics" |
				awk '/^ratatoskr_published_bytes_total/ {s += $2} END {printf "%d", s}')
			kill "$pid"
			wait "$pid" || true
			disk=$(du -sb "$data" | cut -f1)
			rm -rf "$data" "$data.log" "$data.err"
			printf '%d\t%s\t%s\t%s\n' "$r" "$scenario" "$codec" "$(jq -r --arg w "$wire" --arg d "$disk" \
				'[.publish_rate, .deliver_rate, .tool_cpu, .broker_cpu, $w, $d] | map(tostring) | join("\t")' <<<"$json")"
		done
	done
done
