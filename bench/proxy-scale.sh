#!/bin/sh
# The Service proxy at scale: 1k and 10k Services x 10 endpoints by default, or the sizes given
# (e.g. `bench/proxy-scale.sh 1000 10000 50000`). Needs root (network namespaces, nft) and
# builds svcnet in release mode first. See bench/README.md.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --bin svcnet
exec python3 bench/proxy_scale.py "$@"
