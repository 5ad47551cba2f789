# Ratatoskr: a fast message broker that never loses an acknowledged message.
#
#   make run    build and start a broker with the embedded defaults
#   make cluster  build and start a local three-node cluster (127.0.0.1)
#   make test   the full test suite (vet, unit + integration with invariants,
#               race detector on the concurrent packages, short fuzz runs)
#   make bench  Go benchmarks, then a load-test matrix against a fresh broker
#   make sim    the deterministic simulator on fresh seeds for SIM_TIME;
#               make sim SEED=<seed> replays one seed, printing every step
#   make test-cluster  the Jepsen-style fault test of a three-node cluster
#               in network namespaces for JEPSEN_TIME (root only)
#
# Only Go itself is needed; modules are fetched on first use, and make
# test installs Debian's chromium, prometheus (promtool),
# protobuf-compiler (protoc) and redis-server, and grpcurl into bin/, when
# missing.

GO        ?= go
BIN       := bin/ratatoskr
PKGS      := ./...
RACE_PKGS := ./ring/... ./shard/... ./outbox/... ./engine/... ./client/... ./storage/... ./loadtest/... ./group/... ./telemetry/... ./httpapi/... ./server/... ./topic/... ./cluster/... ./gateway/... ./proto/...
FUZZTIME  ?= 5s
LINT      := bin/golangci-lint
LINT_VER  := v2.15.0

.PHONY: all run cluster build deps debs chromium promtool redis test vet unit race fuzz-short fuzz bench sim test-cluster lint clean

all: build

deps:
	$(GO) mod download

# The version `ratatoskr version` prints: git describe of the tree, or
# "devel" outside a git checkout.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

build: deps
	$(GO) build -ldflags "-X main.buildVersion=$(VERSION)" -o $(BIN) ./cmd/ratatoskr

run: build
	./$(BIN) serve

# Three nodes on 127.0.0.1 in the foreground (Ctrl-C stops all three):
# native protocol on 7071-7073, HTTP on 8081-8083, Raft on 7401-7403,
# data in ./data/node1..3. Clients take all three: --server
# 127.0.0.1:7071,127.0.0.1:7072,127.0.0.1:7073.
CLUSTER_PEERS := 1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403
cluster: build
	@trap 'kill 0' INT TERM EXIT; \
	for n in 1 2 3; do \
		./$(BIN) serve --node-id $$n --peers $(CLUSTER_PEERS) --cluster-addr 127.0.0.1:740$$n \
			--addr 127.0.0.1:707$$n --http-addr 127.0.0.1:808$$n --data ./data/node$$n & \
	done; wait

test: deps debs proto-check grpcurl vet unit race fuzz-short

# Debian packages the tests use, installed when their command is missing
# (as root, or through sudo when there is one), with one apt-get update for
# all of them: chromium (the dashboard and WebSocket browser tests),
# prometheus (promtool checks /metrics), protobuf-compiler (protoc, for
# proto-check) and redis-server (the Redis log's tests start their own, on a
# free port; redis-benchmark, in its dependency redis-tools, is the peer of
# bench/redis.sh). $(call debs,cmd:package ...) installs those missing.
define debs
	@missing=""; for p in $(1); do command -v $${p%%:*} >/dev/null || missing="$$missing $${p##*:}"; done; \
	[ -z "$$missing" ] || { \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
		else echo "missing Debian packages:$$missing; install them as root" >&2; exit 1; fi; \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends $$missing; }
endef
DEBS := chromium:chromium promtool:prometheus protoc:protobuf-compiler redis-server:redis-server
debs:
	$(call debs,$(DEBS))
chromium:
	$(call debs,chromium:chromium)
promtool:
	$(call debs,promtool:prometheus)
redis:
	$(call debs,redis-server:redis-server)

vet:
	$(GO) vet -tags invariants $(PKGS)

# The packages with concurrency run once, under the race detector (race
# below), with the same tags; unit runs the rest. Running them here too
# (the engine's three-node clusters first of all) took a minute of make
# test's ten for no test more.
UNIT_PKGS = $(filter-out $(shell $(GO) list $(RACE_PKGS)),$(shell $(GO) list $(PKGS)))
unit:
	$(GO) test -tags invariants -count=1 -timeout 8m $(UNIT_PKGS)

race:
	$(GO) test -race -tags invariants -count=1 -timeout 8m $(RACE_PKGS)

# Short runs of every fuzz target (a target per invocation, as go test
# requires); `make fuzz FUZZTIME=5m` runs them longer. The fuzzer minimizes
# each new input it finds interesting before it goes on; bounded by time
# (it was 5s), a short run spent nearly all of its time minimizing
# (FuzzRecover ran 12 inputs in 10 s), so it is bounded by a count. Each
# target's executions are printed, so one that barely runs shows. A run
# that fails with "context deadline exceeded" and writes no failing input
# is the fuzz coordinator's own race at the -fuzztime deadline under load
# (golang/go#75804), not a finding.
FUZZMINIMIZE ?= 100x
FUZZ_TARGETS := ./wire:FuzzReadFrame ./wire:FuzzCheckBatch ./wire:FuzzDecompress ./wire:FuzzGroupBodies \
                ./storage:FuzzRecover ./storage:FuzzRecoverEncrypted \
                ./engine:FuzzTopicConfigJSON ./server:FuzzSessionDecode \
                ./auth:FuzzScramStep ./auth:FuzzTokenVerify ./wire:FuzzAuthBodies \
                ./cluster/transport:FuzzDecodeFrame ./cluster/meta:FuzzApply \
                ./gateway/httpgw:FuzzRecords ./gateway/wsgw/wsproto:FuzzDecodeCommand ./gateway/wsgw/wsproto:FuzzDecodeReply \
                ./proto/ratatoskr/v1:FuzzCodec
fuzz-short fuzz:
	@summary=""; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		out=$$($(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) \
			-fuzzminimizetime=$(FUZZMINIMIZE) $$pkg 2>&1); rc=$$?; \
		printf '%s\n' "$$out"; \
		execs=$$(printf '%s\n' "$$out" | sed -n 's/.*execs: \([0-9]*\).*/\1/p' | tail -n 1); \
		summary="$$summary$$(printf '\n  %-22s %10s executions' $$name $${execs:-0})"; \
		if [ $$rc -ne 0 ]; then \
			if printf '%s\n' "$$out" | grep -q 'context deadline exceeded' && \
				! printf '%s\n' "$$out" | grep -q 'Failing input written'; then \
				echo "fuzz $$name: the coordinator's deadline race (golang/go#75804), no failing input; not a finding"; \
			else exit 1; fi; \
		fi; \
	done; echo "fuzz executions in $(FUZZTIME) each:$$summary"

# The deterministic simulator (sim/, docs/DESIGN.md "Simulation"). make
# test runs its fixed seeds through unit; this runs fresh random seeds
# for SIM_TIME and prints the seeds, steps and steps per second, or, with
# SEED, replays that seed with every step traced. A failure prints the
# seed to replay. ACTORS=cluster (a comma-separated list) runs only those
# actors. Not in the race run: it is single-threaded by design.
SIM_TIME  ?= 60s
SIM_STEPS ?= 20000
sim:
ifdef SEED
	$(GO) test -count=1 -v -run '^TestSim$$' ./sim -sim.seed=$(SEED) -sim.steps=$(SIM_STEPS) -sim.trace -sim.actors=$(ACTORS)
else
	$(GO) test -count=1 -v -timeout 0 -run '^TestSim$$' ./sim -sim.duration=$(SIM_TIME) -sim.steps=$(SIM_STEPS) -sim.actors=$(ACTORS)
endif

# The Jepsen-style fault test (internal/jepsen; docs/CLUSTER.md "Fault
# testing"): three brokers, each in its own network namespace, under
# producers and consumers while a nemesis kills, pauses, isolates,
# partitions, wipes and restarts them for JEPSEN_TIME (a wiped node is
# refused, then replaced under a new node id: add-node, remove-node,
# rebalance, so the run goes on with three nodes); then every replica is
# read back and the history checked (internal/jepsen/checker, whose unit
# tests run in make test). Needs root for the namespaces (CI runs as
# root) and refuses to run without it. JEPSEN_SEED replays the nemesis's
# choices (the seed is printed); JEPSEN_FAULTS is a comma-separated subset
# of the faults (empty: all); JEPSEN_FLAGS passes more, such as -keep to
# keep the work directory (node logs, data, history). JEPSEN_WIPE_TIME
# (empty: none) adds a second run of wipes only, back to back.
JEPSEN_TIME   ?= 5m
JEPSEN_SEED   ?= 0
JEPSEN_FAULTS ?=
JEPSEN_WIPE_TIME ?=
JEPSEN_FLAGS  ?=
test-cluster: build
	$(GO) build -o bin/jepsen ./internal/jepsen
	./bin/jepsen -bin $(BIN) -duration $(JEPSEN_TIME) -seed $(JEPSEN_SEED) \
		$(if $(JEPSEN_FAULTS),-faults $(JEPSEN_FAULTS)) $(JEPSEN_FLAGS)
ifneq ($(JEPSEN_WIPE_TIME),)
	./bin/jepsen -bin $(BIN) -duration $(JEPSEN_WIPE_TIME) -seed $(JEPSEN_SEED) -faults wipe $(JEPSEN_FLAGS)
endif

# Go benchmarks of every hot path, then the load-test matrix against a
# broker it starts (one table; BENCH_DURATION per run).
BENCH_DURATION ?= 5s
bench: build
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 $(PKGS)
	$(GO) run ./bench/matrix -bin $(BIN) -duration $(BENCH_DURATION)

$(LINT):
	GOBIN=$(CURDIR)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VER)

lint: $(LINT)
	$(LINT) run $(PKGS)

# --- gRPC front end (gateway/grpcgw; docs/GRPC.md) -------------------------
# The generated code under proto/ratatoskr/v1 is committed. make proto
# regenerates it; make proto-check regenerates into a temporary directory
# and fails when the committed code differs (make test runs it). protoc is
# Debian's protobuf-compiler (installed when missing, as chromium above);
# the plugins are pinned so the output, and so the check, is reproducible:
# protoc-gen-go at the google.golang.org/protobuf version go.mod has.
PROTO_DIR          := proto/ratatoskr/v1
PROTO_SRC          := $(PROTO_DIR)/ratatoskr.proto
PROTOC_GEN_GO_VER  := $(shell $(GO) list -m -f '{{.Version}}' google.golang.org/protobuf 2>/dev/null)
PROTOC_GEN_GRPC_VER := v1.6.2
GRPCURL_VER        := v1.9.4
PROTOC_GEN_GO      := bin/protoc-gen-go-$(PROTOC_GEN_GO_VER)
PROTOC_GEN_GRPC    := bin/protoc-gen-go-grpc-$(PROTOC_GEN_GRPC_VER)

.PHONY: proto proto-check protoc grpcurl

protoc:
	$(call debs,protoc:protobuf-compiler)

# Each plugin binary is named for its version, so a changed pin builds anew.
$(PROTOC_GEN_GO):
	@mkdir -p bin/.protoc-gen-go
	GOBIN=$(CURDIR)/bin/.protoc-gen-go $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VER)
	mv bin/.protoc-gen-go/protoc-gen-go $@

$(PROTOC_GEN_GRPC):
	@mkdir -p bin/.protoc-gen-go-grpc
	GOBIN=$(CURDIR)/bin/.protoc-gen-go-grpc $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VER)
	mv bin/.protoc-gen-go-grpc/protoc-gen-go-grpc $@

# The check ignores the header line naming protoc's version: the code
# protoc generates does not depend on it, and a machine of another Debian
# release has another protoc.
PROTO_VERSION_LINE := -I '^//[[:space:]]*-*[[:space:]]*protoc[[:space:]]'

# proto-gen OUT=dir generates the Go code of $(PROTO_SRC) into OUT.
define proto-gen
	protoc -I proto \
		--plugin=protoc-gen-go=$(PROTOC_GEN_GO) --go_out=$(1) --go_opt=paths=source_relative \
		--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GRPC) --go-grpc_out=$(1) --go-grpc_opt=paths=source_relative \
		ratatoskr/v1/ratatoskr.proto
endef

proto: protoc $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC)
	$(call proto-gen,proto)

proto-check: protoc $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(call proto-gen,$$tmp) && \
	for f in ratatoskr.pb.go ratatoskr_grpc.pb.go; do \
		if ! diff -q $(PROTO_VERSION_LINE) "$(PROTO_DIR)/$$f" "$$tmp/ratatoskr/v1/$$f" >/dev/null; then \
			diff -u $(PROTO_VERSION_LINE) "$(PROTO_DIR)/$$f" "$$tmp/ratatoskr/v1/$$f" | head -n 40; \
			echo "proto-check: $(PROTO_DIR)/$$f is stale: it does not match $(PROTO_SRC); run make proto and commit the result" >&2; \
			exit 1; \
		fi; \
	done; echo "proto-check: generated code is up to date"

# The gRPC front end's tests run grpcurl (./bin/grpcurl).
grpcurl: bin/grpcurl
bin/grpcurl:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VER)
# --- end of the gRPC front end's block --------------------------------------

clean:
	rm -rf bin data
