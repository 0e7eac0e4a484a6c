// Package guestinit is banger's guest init: the same banger binary, run as
// PID 1 inside every microVM (the image finalizer copies it to
// /.banger/init and the kernel command line says init=/.banger/init).
//
// It mounts what Linux needs, configures the NIC from the kernel command
// line, runs an SSH server that only accepts the keys the daemon
// provisioned, reaps zombies, optionally starts the image's own entrypoint,
// and powers the VM off cleanly when asked. It needs nothing from the image:
// an image with no shell and no sshd boots and answers exec.
//
// # Kernel command line
//
// The init reads the parameters prefixed "banger." from /proc/cmdline
// (see ParseCmdline). A malformed value is logged and its feature skipped;
// an unknown key is logged; nothing there stops the boot.
//
//	banger.ip=10.88.0.5/24       address and prefix of the first non-loopback NIC
//	banger.gw=10.88.0.1          default route's gateway (needs banger.ip, same family)
//	banger.dns=10.88.0.1[,IP...] nameservers for /etc/resolv.conf
//	banger.hostname=NAME         hostname (sethostname, /etc/hostname, /etc/hosts)
//	banger.domain=vm.banger      search domain (/etc/resolv.conf, /etc/hosts FQDN)
//	banger.mtu=1500              NIC MTU, 68..65535
//	banger.authkey=BASE64        one authorized_keys line, base64 (std or URL-safe,
//	                             padded or not); repeat for more keys
//	banger.entrypoint=1          start the image's entrypoint+cmd from /.banger/image.json
//	banger.debug=1               log progress on the console, not only warnings and errors
//
// Booleans accept what strconv.ParseBool accepts; a bare "banger.debug" is
// true. Of the kernel's own parameters, pass "rw": the init remounts a
// read-only root read-write anyway, but that costs tens of ms under TCG.
//
// # Console markers
//
// The daemon learns about the guest through its serial console. Each marker
// is written as its own line, with no prefix (kernel messages may still
// interleave, so match the marker anywhere in a line):
//
//	BANGER-HOSTKEY <authorized_keys line>   the SSH host key generated at this boot
//	BANGER-READY <ms>                       SSH is listening; ms since the init started
//	BANGER-POWEROFF                         everything is synced; reboot(2) comes next
//
// Log lines start with "banger-init: ".
//
// # /.banger/image.json
//
// Written by the daemon when it finalizes an image (see ImageConfig); the
// OCI image config's process fields:
//
//	{"entrypoint":["/docker-entrypoint.sh"],"cmd":["nginx","-g","daemon off;"],
//	 "env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
//	 "working_dir":"/","user":"101:101"}
//
// Every field may be missing. The env applies to the entrypoint and, on
// request (the BANGER_IMAGE_ENV=1 env request), to SSH sessions.
//
// # SSH sessions
//
// An exec request whose command starts with "\x00argv\x00" followed by a
// JSON array of strings runs that argv directly, with no shell (see
// EncodeArgv); any other command runs as /bin/sh -c COMMAND. An argv whose
// first element is /.banger/init runs a built-in: "untar [--zstd] DEST"
// (extract the tar on stdin, zstd-compressed with --zstd, under DEST,
// refusing anything that would land outside it; four writers create the
// files; a workspace's deletion list and git packs in transfer form are
// applied), "tar [--no-git] SRC PATH..." (write a tar of the paths,
// relative to SRC, to stdout; --no-git leaves out every .git), "authorize KEY", "features" (what untar understands beyond
// plain tar: UntarFeatures) or "poweroff". These env requests are consumed by the server, not passed
// on: BANGER_USER (name, uid, or either with ":group"; default: the SSH user
// name when the guest knows it, else root), BANGER_WORKDIR (default: the
// user's home, else /), BANGER_IMAGE_ENV=1.
package guestinit
