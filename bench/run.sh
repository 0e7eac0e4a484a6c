#!/usr/bin/env bash
# Runs banger's benchmarks as root after installing what they compare
# against. Figures go into bench/README.md by hand, with the date.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
apt_install skopeo umoci e2fsprogs
need_go
build_banger
BANGER_TEST_BINARY="$PWD/bin/banger" go test -run '^$' -bench . -benchtime "${BENCHTIME:-3x}" -timeout 60m ./bench/
