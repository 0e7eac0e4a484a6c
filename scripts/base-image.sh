#!/usr/bin/env bash
# scripts/base-image.sh OUTDIR: a small base root filesystem from Debian's
# busybox-static package (downloaded and unpacked, not installed into this
# host): /bin/busybox with a link per applet, /bin/sh among them, and the
# few /etc files a shell expects; plus git from Debian's git package and
# the libraries it links (libc6, libpcre2-8-0, zlib1g), so that a
# workspace's git log/status/diff/commit work in the guest and
# `banger workspace export` keeps the guest's commits. Import it with
#   banger image import OUTDIR --name busybox
set -euo pipefail
out=${1:?usage: base-image.sh OUTDIR}
if [ "$(id -u)" != 0 ]; then
	echo "base-image.sh: run as root (the tree is owned by root)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q busybox-static git libc6 libpcre2-8-0 zlib1g >/dev/null)
dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
mkdir -p "$out"/{bin,sbin,etc,root,tmp,var,usr/bin,usr/sbin}
# git and its shared libraries (with the dynamic loader). Only what git
# needs to run: no documentation, no locales, no perl helpers.
for p in git libc6 libpcre2-8-0 zlib1g; do
	dpkg-deb -x "$work/${p}"_*.deb "$work/git"
done
install -m 0755 "$work/git/usr/bin/git" "$out/usr/bin/git"
mkdir -p "$out/usr/lib/git-core"
ln -s ../../bin/git "$out/usr/lib/git-core/git"
(cd "$work/git" && find lib lib64 usr/lib \( -name 'ld-linux*' -o -name 'libc.so*' -o -name 'libm.so*' \
	-o -name 'libpcre2-8.so*' -o -name 'libz.so*' -o -name 'libpthread.so*' -o -name 'libdl.so*' -o -name 'librt.so*' \) \
	\( -type f -o -type l \) -exec cp -a --parents -t "$out" {} +)
mkdir -p "$out/usr/share/git-core/templates"

chmod 1777 "$out/tmp"
chmod 0700 "$out/root"
install -m 0755 "$work/pkg/bin/busybox" "$out/bin/busybox"
for applet in $("$out/bin/busybox" --list); do
	[ -e "$out/bin/$applet" ] || ln -s busybox "$out/bin/$applet"
done
cat > "$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$out/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
cat > "$out/etc/os-release" <<'OSR'
NAME="banger busybox"
ID=busybox
PRETTY_NAME="busybox from Debian's busybox-static, via banger"
OSR
echo "base image tree in $out ($(du -sh "$out" | cut -f1), busybox $(dpkg-deb -f "$work"/busybox-static_*.deb Version), git $(dpkg-deb -f "$work"/git_*.deb Version))"
