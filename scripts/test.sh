#!/usr/bin/env bash
# banger's whole test suite on a fresh Debian 12 host, as root: installs
# what the tests need, then vet, build and every test tier this host can
# run, with the race detector on.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
apt_install ca-certificates git e2fsprogs iproute2 kmod passwd qemu-system-x86 lz4 cpio gzip xfsprogs util-linux
need_go
echo "== go mod download"
go mod download
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
echo "== go vet"
go vet ./...
build_banger
echo "== go test -race (unit and integration tiers)"
# BANGER_TEST_BINARY lets the integration tests drive the CLI we just built.
# BANGER_TEST_REQUIRE_QEMU: the boot tests fail rather than skip when QEMU
# is missing, since this script installs it.
BANGER_TEST_REQUIRE_QEMU=1 BANGER_TEST_BINARY="$PWD/bin/banger" go test -race -count=1 -timeout 20m ./...
