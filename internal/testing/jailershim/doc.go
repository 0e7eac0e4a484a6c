// Package jailershim is a TEST-ONLY stand-in for Firecracker's jailer
// (v1.16.1, src/jailer and docs/jailer.md). It is never shipped. It lets
// the daemon's side of the jailer's contract be tested on hosts without
// KVM, together with the Firecracker shim (internal/testing/fcshim), which
// boots under QEMU.
//
// What it does as the jailer does:
//
//   - the command line: --id, --exec-file, --uid, --gid required; the
//     jailer's other arguments known; "--name value" only, each once
//     (--cgroup and --resource-limit may repeat); everything after "--"
//     goes to the exec file; anything else is refused (exit status 1);
//   - validation: the id is 1-64 letters, digits and '-'; the exec file is
//     a regular file (symbolic links resolved) whose name contains
//     "firecracker"; the chroot base (default /srv/jailer) is an existing
//     directory (resolved); uid and gid are unsigned 32-bit numbers;
//   - the environment is emptied and every inherited descriptor but 0, 1
//     and 2 is closed at exec;
//   - <base>/<exec file name>/<id>/root is created (an existing one is
//     used), the exec file is copied into it, its root, dev, dev/net and
//     run are made 0700 and given to uid:gid, dev/net/tun (c 10 200) and
//     dev/urandom (c 1 9) are made with mknod, mode 0600, owned by
//     uid:gid, and <exec file name>.pid in the root holds the pid;
//   - --netns PATH: the network namespace is joined (setns) before exec;
//   - groups are dropped and gid then uid set, and the exec file is
//     exec'd in place (same pid) as "/<name> --id ID --start-time-us N
//     --start-time-cpu-us N --parent-cpu-time-us N" and the extra
//     arguments.
//
// What it does not do, and why:
//
//   - it does not chroot (nor unshare a mount namespace and pivot_root):
//     the Firecracker shim must start QEMU, which lives outside the jail.
//     It execs the copy at its host path instead, with EnvChroot
//     (fcshim.EnvChroot) set to the jail's root; the Firecracker shim then
//     resolves every path it is given inside that root, refusing what a
//     chrooted Firecracker could not open. The environment therefore holds
//     that variable and PATH (the Firecracker shim looks QEMU up in it);
//     the real jailer passes none;
//   - dev/kvm is made only when /dev/kvm exists on the host (a machine
//     without KVM runs the guest under TCG and needs none); the real
//     jailer always makes it. dev/userfaultfd is not made;
//   - cgroups (--cgroup, --parent-cgroup, --cgroup-version other than
//     the default's effect), --resource-limit, --daemonize and
//     --new-pid-ns are refused as not emulated: banger uses none.
//
// It does drop to --uid and --gid: QEMU under TCG needs neither root nor
// KVM, so the Firecracker shim and its QEMU really run as the jail's user,
// and the daemon's preparation (the jail's files and their owners, the
// TAP made for that user) is tested for real. Since nothing is chrooted,
// that user must be able to pass through the directories above the jail
// (the daemon makes its own 0711).
package jailershim
