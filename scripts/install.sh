#!/usr/bin/env bash
# banger's main job on a fresh Debian 12 host: install what banger needs,
# build it, install it, start the daemon, then check the host and list VMs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
apt_install ca-certificates git e2fsprogs qemu-system-x86 nftables iproute2 kmod lz4 cpio gzip
need_go
build_banger
install -m 0755 bin/banger /usr/local/bin/banger
install -d -m 0755 /etc/banger
# A fresh config puts all VM networking into its own network namespace
# ("banger"): the bridge, TAPs, DNS and VMMs live there, away from the
# host's network (guests reach the daemon's DNS but nothing else).
if [ ! -e /etc/banger/config.toml ]; then
	sed 's/^netns = ""/netns = "banger"/' packaging/config.toml > /etc/banger/config.toml
	chmod 0644 /etc/banger/config.toml
fi

if [ -d /run/systemd/system ]; then
	echo "== starting banger.service"
	install -m 0644 packaging/banger.service /etc/systemd/system/banger.service
	systemctl daemon-reload
	systemctl enable banger.service
	systemctl restart banger.service
else
	# No systemd here (a container or a CI runner): run the daemon in the
	# background, logging to /var/log/banger.log. One already running (an
	# earlier install) is stopped by its pid file and replaced by the new
	# binary; its VMs keep running and the new daemon adopts them.
	pidfile=/var/lib/banger/banger.pid
	if banger ls >/dev/null 2>&1 && [ -s "$pidfile" ]; then
		old=$(cat "$pidfile")
		echo "== replacing the running daemon (pid $old) with the new binary"
		kill -TERM "$old"
		for _ in $(seq 1 300); do
			kill -0 "$old" 2>/dev/null || break
			sleep 0.1
		done
	fi
	if ! banger ls >/dev/null 2>&1; then
		echo "== starting the daemon (no systemd; log in /var/log/banger.log)"
		nohup /usr/local/bin/banger daemon >>/var/log/banger.log 2>&1 </dev/null &
	fi
fi
for _ in $(seq 1 100); do
	banger ls >/dev/null 2>&1 && break
	sleep 0.1
done

echo "== banger doctor"
banger doctor || echo "(doctor reported failures above: fix them before creating VMs)"

# A guest kernel from Debian's cloud kernel package (not installed into
# this host), imported as the default kernel unless one exists already.
if ! banger kernel ls -o json | grep -q '"default": true'; then
	echo "== building and importing the guest kernel"
	kdir=$(mktemp -d)
	trap 'rm -rf "$kdir"' EXIT
	scripts/guest-kernel.sh "$kdir"
	kver=$(sed -n 's/^kernel_version=//p' "$kdir/kernel.txt")
	banger kernel import "$kdir/vmlinux" --initrd "$kdir/initrd" --name "debian-$kver" --default
fi
echo "== banger kernel ls"
banger kernel ls

# A small base image from Debian's busybox-static and git packages.
make_base_image() {
	echo "== making the busybox base image"
	bdir=$(mktemp -d)
	scripts/base-image.sh "$bdir/rootfs"
	banger image import "$bdir/rootfs" --name busybox
	rm -rf "$bdir"
}
if ! banger image ls -o json | grep -q '"name": "busybox"'; then
	make_base_image
fi
echo "== banger image ls"
banger image ls

echo "== a VM: create, exec, rm"
banger rm --force demo >/dev/null 2>&1 || true
banger create --image busybox --name demo
banger exec demo -- /bin/sh -c 'echo "hello from $(hostname): $(uname -sr), $(nproc) vCPUs"; ip -4 -o addr show eth0; cat /etc/resolv.conf'
banger ls
# An older busybox image is remade: one made before base-image.sh added
# git (the main job below runs git in the guest), or by a banger whose
# init has no features built-in (such images also came with too few
# inodes for a checkout of a few thousand files).
stale=0
banger exec demo -- git --version >/dev/null 2>&1 || stale=1
banger exec demo -- /.banger/init features >/dev/null 2>&1 || stale=1
banger rm --force demo
if [ "$stale" = 1 ]; then
	banger image rm busybox
	make_base_image
fi
echo "== banger ls"
banger ls

echo "== the main job: banger run in a git checkout, then workspace export"
wdir=$(mktemp -d)
git -C "$wdir" init -q -b main
echo "a demo checkout" > "$wdir/README"
git -C "$wdir" add README
git -C "$wdir" -c user.name=demo -c user.email=demo@example.invalid commit -qm initial
banger rm --force wsdemo >/dev/null 2>&1 || true
(cd "$wdir" && banger run --image busybox --name wsdemo -- sh -c 'echo change >> README && git add -A && git -c user.name=demo -c user.email=demo@example.invalid commit -qm demo')
(cd "$wdir" && banger workspace export wsdemo)
git -C "$wdir" log --oneline banger/wsdemo
git -C "$wdir" status --short   # the host's work tree: untouched
banger rm --force wsdemo
rm -rf "$wdir"
