#!/bin/sh
# Cluster DNS at scale: svcnet against CoreDNS on the same real control plane (target/controlplane),
# N Services (default 1000) x 10 endpoints, dnsperf pinned to CPU 1 and each server to CPU 0.
# Needs root (apt-get for dnsperf if missing), Go, Python 3 (stdlib only). See bench/README.md.
#   sudo bench/dns.sh          # 1000 Services, 20 s per run
#   sudo DURATION=30 bench/dns.sh 10000
set -eu
cd "$(dirname "$0")/.."
COREDNS_VERSION=v1.14.7
if ! command -v dnsperf >/dev/null; then
	apt-get update -qq && apt-get install -y -qq dnsperf
fi
cargo build --release --bin svcnet
if [ ! -x target/controlplane ]; then
	(cd integration/controlplane && go build -o ../../target/controlplane .)
fi
if ! target/bench-bin/coredns -version 2>/dev/null | grep -q "CoreDNS-${COREDNS_VERSION#v}"; then
	start=$(date +%s)
	GOBIN="$PWD/target/bench-bin" GOFLAGS=-mod=mod go install "github.com/coredns/coredns@$COREDNS_VERSION"
	echo "built CoreDNS $COREDNS_VERSION in $(($(date +%s) - start)) s"
fi
exec python3 bench/dns_bench.py "$@"
