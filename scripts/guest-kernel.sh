#!/usr/bin/env bash
# guest-kernel.sh OUTDIR: make a guest kernel and initramfs for banger from
# Debian's cloud kernel package, without installing that kernel into the host.
#
# Writes into OUTDIR (created if missing):
#   vmlinux     the uncompressed x86_64 ELF kernel (Firecracker's format;
#               QEMU's microvm machine boots it through its PVH entry note)
#   initrd      a gzip'd newc cpio initramfs: busybox-static, the modules this
#               kernel needs to reach a virtio-mmio root disk and NIC (and
#               vsock), and a small /init (see below)
#   kernel.txt  key=value lines: kernel version, the package (name, version)
#               the kernel came from, busybox version, modules in the initrd
# Those three files are replaced atomically (written beside, then renamed);
# anything else in OUTDIR is left alone, so running it again is safe and
# gives the same result for the same package versions.
#
# How: resolves the real package that the meta package (default
# linux-image-cloud-amd64; override with BANGER_KERNEL_META) depends on with
# apt-cache, `apt-get download`s it and busybox-static into a temporary dir,
# `dpkg -x`es them there, cuts the compressed payload out of the bzImage
# using its boot-protocol header (falling back to a scan for the
# compressor's magic), decompresses it and checks the result is an x86-64
# ELF of the size the kernel's build recorded, runs `depmod -b` on the
# extracted modules and resolves their load order with `modprobe -d
# --show-depends`.
#
# The initramfs /init reads the kernel command line:
#   root=DEV (default /dev/vda; UUID=... and LABEL=... work too)
#   rootfstype=TYPE (default ext4), rootflags=OPTS, ro | rw (default ro,
#   like the kernel), init=PATH (default /sbin/init), rootdelay=SECONDS (how
#   long to wait for the root device; default 20), quiet, rdshell (on
#   failure start a shell on the console before powering off).
# It mounts /proc, /sys and /dev, insmods the modules in dependency order,
# waits for the root device, mounts it, moves /dev, /proc and /sys into it
# (when it has those dirs) and switch_roots into init. On any failure it
# prints "banger-initrd: FATAL: ..." on the console and powers the VM off;
# it never waits forever.
#
# Needs: root, an amd64 Debian or Ubuntu host with working apt sources.
# Installs with apt-get, when missing: lz4 kmod cpio gzip (and xz-utils /
# zstd only if the kernel's payload uses them). busybox-static is only
# downloaded and unpacked, never installed (it would replace a host's
# busybox package).
set -euo pipefail

prog=$(basename "$0")
die() { echo "$prog: $*" >&2; exit 1; }
say() { echo "== $*"; }

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
	echo "usage: $prog OUTDIR"
}

outdir=
for arg in "$@"; do
	case "$arg" in
	-h | --help) usage; exit 0 ;;
	-*) die "unknown option $arg (usage: $prog OUTDIR)" ;;
	*)
		[ -z "$outdir" ] || die "only one OUTDIR, please (usage: $prog OUTDIR)"
		outdir=$arg
		;;
	esac
done
[ -n "$outdir" ] || die "usage: $prog OUTDIR"
[ "$(id -u)" = 0 ] || die "run as root (it runs apt-get and creates the initramfs' /dev/console node)"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
	die "needs a Debian or Ubuntu host (apt-get and dpkg-deb)"
arch=$(dpkg --print-architecture)
[ "$arch" = amd64 ] || die "host architecture is $arch; this makes an x86_64 guest kernel and must run on amd64"

meta=${BANGER_KERNEL_META:-linux-image-cloud-amd64}
start=$(date +%s.%N)

export DEBIAN_FRONTEND=noninteractive
apt_updated=
apt_update() {
	[ -z "$apt_updated" ] || return 0
	say "apt-get update"
	apt-get update -qq
	apt_updated=1
}

# has_candidate PKG: apt knows a version of PKG it could install.
has_candidate() {
	local c
	c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/{print $2; exit}')
	[ -n "$c" ] && [ "$c" != "(none)" ]
}

# ensure_pkgs PKG...: install the packages that are not installed yet,
# checking first that apt knows them.
ensure_pkgs() {
	local p missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	for p in "${missing[@]}"; do
		has_candidate "$p" || apt_update
		has_candidate "$p" || die "apt knows no package named $p (check /etc/apt/sources.list)"
	done
	say "installing Debian packages: ${missing[*]}"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_pkgs lz4 kmod cpio gzip

# Resolve the meta package to the real kernel image package.
has_candidate "$meta" || apt_update
has_candidate "$meta" || die "apt knows no package $meta (on Ubuntu set BANGER_KERNEL_META, e.g. linux-image-kvm)"
pkg=$(apt-cache depends "$meta" | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}')
[ -n "$pkg" ] || die "cannot find the linux-image-* package that $meta depends on (apt-cache depends $meta)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/guest-kernel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

say "downloading $pkg and busybox-static"
# Sandbox user root: the temp dir is not readable by apt's _apt user.
apt-get -q -o APT::Sandbox::User=root download "$pkg" busybox-static >/dev/null
kdeb=$(ls "$tmp"/"${pkg}"_*.deb)
bdeb=$(ls "$tmp"/busybox-static_*.deb)
pkgver=$(dpkg-deb -f "$kdeb" Version)
bbver=$(dpkg-deb -f "$bdeb" Version)
dpkg-deb -x "$kdeb" "$tmp/k"
dpkg-deb -x "$bdeb" "$tmp/bb"

# The kernel version is the name of the package's modules dir (or, on
# packages without modules, the suffix of its vmlinuz).
kver=
for d in "$tmp"/k/lib/modules/* "$tmp"/k/usr/lib/modules/*; do
	[ -d "$d" ] && kver=$(basename "$d") && break
done
if [ -z "$kver" ]; then
	for f in "$tmp"/k/boot/vmlinuz-*; do [ -f "$f" ] && kver=${f##*/vmlinuz-} && break; done
fi
[ -n "$kver" ] || die "$pkg holds neither /lib/modules/VERSION nor /boot/vmlinuz-VERSION"
vmlinuz=$tmp/k/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "$pkg has no /boot/vmlinuz-$kver"

# Ubuntu splits the modules into linux-modules-VERSION.
if [ ! -d "$tmp/k/lib/modules/$kver" ] && [ ! -d "$tmp/k/usr/lib/modules/$kver" ]; then
	has_candidate "linux-modules-$kver" || die "$pkg has no modules and apt knows no linux-modules-$kver"
	say "downloading linux-modules-$kver"
	apt-get -q -o APT::Sandbox::User=root download "linux-modules-$kver" >/dev/null
	dpkg-deb -x "$(ls "$tmp"/linux-modules-"${kver}"_*.deb)" "$tmp/k"
fi
# depmod -b BASE looks in BASE/lib/modules; merged-/usr packages ship
# usr/lib/modules only.
if [ ! -d "$tmp/k/lib/modules/$kver" ] && [ -d "$tmp/k/usr/lib/modules/$kver" ]; then
	[ -e "$tmp/k/lib" ] || ln -s usr/lib "$tmp/k/lib"
fi
moddir=$tmp/k/lib/modules/$kver
[ -d "$moddir" ] || die "no modules for $kver"
config=$tmp/k/boot/config-$kver

### vmlinux: decompress the bzImage's payload.

# u8/u16/u32 FILE OFFSET: little-endian integers (the host is amd64).
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u16() { od -An -tu2 -j "$2" -N2 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }

# decompress_at FILE OFFSET LENGTH OUT: decompress LENGTH bytes of FILE
# from OFFSET (LENGTH empty: to the end) with the tool its magic names.
# The kernel appends the uncompressed size after most payloads, which the
# tools call trailing garbage: their exit status is ignored and the result
# checked instead.
decompress_at() {
	local f=$1 off=$2 len=$3 out=$4 magic tool
	magic=$(od -An -tx1 -j "$off" -N6 "$f" | tr -d ' \n')
	case "$magic" in
	02214c18*) tool="lz4 -dc" ;;
	1f8b*) tool="gzip -dc" ;;
	fd377a585a00) ensure_pkgs xz-utils; tool="xz -dc" ;;
	28b52ffd*) ensure_pkgs zstd; tool="zstd -dcq" ;;
	*) return 1 ;;
	esac
	if [ -n "$len" ]; then
		tail -c +$((off + 1)) "$f" | head -c "$len" | $tool >"$out" 2>/dev/null || true
	else
		tail -c +$((off + 1)) "$f" | $tool >"$out" 2>/dev/null || true
	fi
	[ -s "$out" ]
}

# is_x86_64_elf FILE: 64-bit little-endian ELF for machine 62 (x86-64).
is_x86_64_elf() {
	[ "$(od -An -tx1 -N6 "$1" | tr -d ' \n')" = 7f454c460201 ] && [ "$(u16 "$1" 18)" = 62 ]
}

say "extracting vmlinux from $(basename "$vmlinuz")"
vmlinux=$tmp/vmlinux
extracted=
if is_x86_64_elf "$vmlinuz"; then
	cp "$vmlinuz" "$vmlinux" && extracted=already-elf
elif [ "$(od -An -c -j 514 -N4 "$vmlinuz" | tr -d ' ')" = HdrS ] && [ "$(u16 "$vmlinuz" 518)" -ge $((0x208)) ]; then
	# Boot protocol >= 2.08: payload_offset (0x248) and payload_length
	# (0x24c) are relative to the protected-mode code, which follows the
	# (setup_sects (0x1f1), 0 meaning 4) + 1 sectors of real-mode setup.
	setup_sects=$(u8 "$vmlinuz" $((0x1f1)))
	[ "$setup_sects" != 0 ] || setup_sects=4
	poff=$(((setup_sects + 1) * 512 + $(u32 "$vmlinuz" $((0x248)))))
	plen=$(u32 "$vmlinuz" $((0x24c)))
	want=$(u32 "$vmlinuz" $((poff + plen - 4)))
	if decompress_at "$vmlinuz" "$poff" "$plen" "$vmlinux" && is_x86_64_elf "$vmlinux" &&
		[ "$(stat -c %s "$vmlinux")" = "$want" ]; then
		extracted="bzImage header (payload at $poff, $plen bytes)"
	fi
fi
if [ -z "$extracted" ]; then
	# Fallback: try each place the LZ4 (or gzip, xz, zstd) magic occurs.
	for magic in '\x02\x21\x4c\x18' '\x1f\x8b\x08' '\xfd\x37\x7a\x58\x5a\x00' '\x28\xb5\x2f\xfd'; do
		for off in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" | cut -d: -f1); do
			if decompress_at "$vmlinuz" "$off" "" "$vmlinux" && is_x86_64_elf "$vmlinux"; then
				extracted="magic scan (payload at $off)"
				break 2
			fi
		done
	done
fi
[ -n "$extracted" ] || die "could not extract an x86-64 ELF vmlinux from $vmlinuz"
if [ -f "$config" ] && ! grep -q '^CONFIG_PVH=y' "$config"; then
	echo "$prog: warning: CONFIG_PVH is not set: QEMU cannot boot this vmlinux directly" >&2
fi

### Modules, in load order.

say "resolving modules (depmod -b)"
depmod -b "$tmp/k" "$kver"
required="virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net ext4"
optional="vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport"
declare -A seen=()
order=()   # paths relative to $moddir, in load order
builtins=() # wanted modules that are built into this kernel
for m in $required $optional; do
	if ! out=$(modprobe -d "$tmp/k" -S "$kver" --show-depends "$m" 2>/dev/null); then
		case " $required " in
		*" $m "*) die "module $m is neither built into $kver nor shipped as a module" ;;
		*) echo "$prog: note: optional module $m not available, skipped" >&2; continue ;;
		esac
	fi
	while read -r kind path _; do
		case "$kind" in
		insmod)
			rel=${path#"$moddir"/}
			[ -n "${seen[$rel]:-}" ] && continue
			seen[$rel]=1
			order+=("$rel")
			;;
		builtin) builtins+=("$path") ;;
		esac
	done <<<"$out"
done

### The initramfs.

say "building the initramfs"
ird=$tmp/initramfs
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules/"$kver"}
cp "$tmp/bb/bin/busybox" "$ird/bin/busybox"
for a in $("$ird/bin/busybox" --list); do
	[ "$a" = busybox ] || ln -sf busybox "$ird/bin/$a"
done
mknod -m 600 "$ird/dev/console" c 5 1
mknod -m 666 "$ird/dev/null" c 1 3
: >"$ird/lib/modules/load-order"
for rel in "${order[@]}"; do
	mkdir -p "$(dirname "$ird/lib/modules/$kver/$rel")"
	case "$rel" in
	*.ko) cp "$moddir/$rel" "$ird/lib/modules/$kver/$rel" ;;
	*.ko.xz) ensure_pkgs xz-utils; xz -dc "$moddir/$rel" >"$ird/lib/modules/$kver/${rel%.xz}" ;;
	*.ko.zst) ensure_pkgs zstd; zstd -dcq "$moddir/$rel" >"$ird/lib/modules/$kver/${rel%.zst}" ;;
	*.ko.gz) gzip -dc "$moddir/$rel" >"$ird/lib/modules/$kver/${rel%.gz}" ;;
	*) die "unexpected module file $rel" ;;
	esac
	rel=${rel%.xz}
	rel=${rel%.zst}
	rel=${rel%.gz}
	echo "/lib/modules/$kver/$rel" >>"$ird/lib/modules/load-order"
done

cat >"$ird/init" <<'EOF'
#!/bin/sh
# banger initramfs init, made by scripts/guest-kernel.sh: load the modules,
# mount the root disk named by root= and switch_root into init=.
export PATH=/bin
set -f

msg() { echo "banger-initrd: $*"; }
fail() {
	msg "FATAL: $*"
	if [ -n "$rdshell" ]; then
		msg "rdshell: starting a shell; exit it to power off"
		setsid cttyhack sh
	fi
	msg "powering off"
	sync
	poweroff -f
	echo o >/proc/sysrq-trigger
	sleep 5
	exit 1
}

rdshell=
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"

root=/dev/vda fstype=ext4 flags= mode=ro init=/sbin/init wait=20 quiet=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	rootflags=*) flags=${arg#rootflags=} ;;
	rootdelay=*) wait=${arg#rootdelay=} ;;
	init=*) init=${arg#init=} ;;
	ro) mode=ro ;;
	rw) mode=rw ;;
	quiet) quiet=1 ;;
	rdshell) rdshell=1 ;;
	esac
done
case "$wait" in '' | *[!0-9]*) wait=20 ;; esac
[ -n "$root" ] || fail "empty root= on the kernel command line"

while read -r ko; do
	[ -n "$ko" ] || continue
	insmod "$ko" || msg "warning: insmod $ko failed"
done </lib/modules/load-order

# Wait (bounded) for the root device.
dev=
i=0
while :; do
	case "$root" in
	UUID=* | LABEL=*) dev=$(findfs "$root" 2>/dev/null) || dev= ;;
	/dev/*) dev=$root ;;
	*) fail "root=$root: only /dev/NAME, UUID=... and LABEL=... are understood" ;;
	esac
	[ -n "$dev" ] && [ -b "$dev" ] && break
	if [ "$i" -ge $((wait * 10)) ]; then
		fail "root device $root did not appear within ${wait}s (block devices: $(ls /sys/class/block 2>/dev/null | tr '\n' ' '))"
	fi
	sleep 0.1
	i=$((i + 1))
done

opts=$mode
[ -z "$flags" ] || opts=$opts,$flags
mount -t "$fstype" -o "$opts" "$dev" /newroot || fail "cannot mount $dev (type $fstype, options $opts)"
if [ ! -e "/newroot$init" ] && [ ! -L "/newroot$init" ]; then
	umount /newroot
	fail "init=$init: no such file in the root file system on $dev"
fi
[ -n "$quiet" ] || msg "mounted $dev ($fstype, $opts); starting $init"
for d in dev proc sys; do
	if [ -d "/newroot/$d" ]; then
		mount --move "/$d" "/newroot/$d" || umount -l "/$d"
	else
		umount -l "/$d"
	fi
done
exec switch_root /newroot "$init" "$@"
EOF
chmod 755 "$ird/init"

# Reproducible archive: fixed times, sorted names, owner root.
find "$ird" -exec touch -h -d @0 {} +
(cd "$ird" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
	cpio --quiet --null -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$tmp/initrd"

### Outputs, each replaced atomically.

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
modnames=()
for rel in "${order[@]}"; do
	n=${rel##*/}
	modnames+=("${n%%.ko*}")
done
cat >"$tmp/kernel.txt" <<EOF
kernel_version=$kver
package=$pkg
package_version=$pkgver
meta_package=$meta
busybox_version=$bbver
extracted_from=$extracted
modules=${modnames[*]}
builtin=${builtins[*]}
EOF
for f in vmlinux initrd kernel.txt; do
	cp "$tmp/$f" "$outdir/.$f.tmp"
	mv -f "$outdir/.$f.tmp" "$outdir/$f"
done

end=$(date +%s.%N)
say "done in $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s"
echo "kernel:   $kver (from $pkg $pkgver)"
echo "vmlinux:  $outdir/vmlinux ($(stat -c %s "$outdir/vmlinux") bytes, x86-64 ELF, via $extracted)"
echo "initrd:   $outdir/initrd ($(stat -c %s "$outdir/initrd") bytes; busybox-static $bbver)"
echo "modules:  ${modnames[*]}"
[ ${#builtins[@]} -eq 0 ] || echo "built in: ${builtins[*]}"
