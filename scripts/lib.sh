# Shared helpers for banger's scripts. Sourced, not run.

# need_root exits unless running as root.
need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "$0: run as root (banger manages loop devices, TAPs and VMMs)" >&2
		exit 1
	fi
}

# apt_install installs the Debian packages given that are missing.
apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "== installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# need_go checks for a Go toolchain new enough for go.mod.
need_go() {
	if ! command -v go >/dev/null 2>&1; then
		export PATH="$PATH:/usr/local/go/bin"
	fi
	if ! command -v go >/dev/null 2>&1; then
		echo "$0: Go 1.26 or newer is needed (https://go.dev/doc/install); Debian 12's golang package is too old" >&2
		exit 1
	fi
}

# build_banger builds the static binary into bin/banger.
build_banger() {
	local version commit
	version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
	commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
	echo "== building bin/banger ($version)"
	CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X banger/internal/version.Version=$version -X banger/internal/version.Commit=$commit" \
		-o bin/banger ./cmd/banger
}
