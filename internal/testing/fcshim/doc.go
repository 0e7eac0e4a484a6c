// Package fcshim is a TEST-ONLY stand-in for Firecracker. It is never
// shipped and never used as a VMM outside tests: it exists so that banger's
// Firecracker code path (internal/daemon/fcproc and the daemon above it)
// can be tested end to end on hosts where Firecracker cannot run (no KVM).
//
// The binary (internal/testing/fcshim/cmd/fcshim) takes Firecracker's
// command line (--api-sock PATH, --id ID and the other flags of
// Firecracker v1.16.1; see flags.go) and serves Firecracker's HTTP API on
// the socket. It checks every request against Firecracker's published API
// definition (src/firecracker/swagger/firecracker.yaml, v1.16.1) and the
// serde structs and VMM code behind it, and refuses what Firecracker
// refuses, with Firecracker's status codes and {"fault_message": ...}
// bodies: unknown, duplicate, mistyped or missing fields, bad enum values,
// path/body id mismatches, pre-boot-only calls after InstanceStart,
// post-boot-only calls before it, InstanceStart without a boot source.
// handlers.go and definitions.go list every rule and the definition it
// follows.
//
// On InstanceStart it boots exactly the configuration it was given under
// banger's QEMU backend (internal/daemon/qemu): the kernel, initrd and the
// command line Firecracker would pass (boot_args, then pci=off and
// root=/dev/vda ro|rw for the root drive), the drives in Firecracker's
// order (the root drive first) with their read-only flags, the NICs on
// their TAPs with their MACs, the vCPU count and memory size. QEMU adds
// what it needs itself (tsc_early_khz under TCG). As with Firecracker, the
// guest's serial console goes to the shim's stdout, SendCtrlAltDel presses
// ctrl-alt-delete on the guest's i8042, and when the guest powers off the
// shim exits 0. QEMU runs in the shim's network namespace (the shim
// inherits it when started under nsenter) and dies with the shim: SIGTERM
// or SIGINT to the shim kill QEMU first; SIGKILL reaches it through a
// parent-death signal.
//
// Like Firecracker, the shim leaves its API socket file behind when it
// exits (removing it is the caller's job).
//
// Under the test-only jailer shim (internal/testing/jailershim), which
// does not chroot, EnvChroot names the jail's root: the shim then resolves
// every path it is given inside it (chroot.go), opens TAPs through the
// jail's dev/net/tun as a jailed Firecracker does, and hands them to QEMU
// as open descriptors (QEMU runs as the jail's user and could not open the
// host's /dev/net/tun).
//
// What the shim knowingly does not emulate it refuses with a 400 whose
// fault_message names the shim (vsock, balloon, MMDS, snapshots, pmem,
// entropy, serial, memory hotplug, CPU templates, huge pages, MTU,
// vhost-user drives, PATCH calls, a VM without drives, and the command-line
// arguments listed in flags.go), or accepts without effect where the guest
// cannot tell or it does not matter to banger's tests (rate limiters,
// cache_type, io_engine, track_dirty_pages, smt: the guest sees plain
// cores). handlers.go names the swagger definition and the Firecracker
// code each check follows.
package fcshim
