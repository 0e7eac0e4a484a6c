// Package fakevmm is a TEST-ONLY stand-in for qemu-system-x86_64 that
// "boots" a banger guest in milliseconds. It is never shipped. It exists
// for tests that drive the daemon's real QEMU path (internal/daemon/qemu:
// Argv, nsenter, QMP, the console's host key, SSH to the guest) many times
// over, killing and restarting the daemon, where a real boot would take
// seconds: the fake is a real, separate process that outlives the daemon,
// found again by its command line like QEMU.
//
// # Use
//
// A test builds the binary once per test process and configures it as the
// daemon's qemu_binary (or qemu.Config.Binary):
//
//	func TestMain(m *testing.M) { code := m.Run(); fakevmm.Remove(); os.Exit(code) }
//	...
//	bin := fakevmm.Build(t) // go build -o TMP/fakevmm ./internal/testing/fakevmm/cmd/fakevmm, CGO_ENABLED=0
//	cfg.QEMUBinary = bin    // the daemon runs it through qemu.Start
//
// The VMs must have a network namespace of the test's own (the daemon's
// VM netns): qemu.Start then runs `nsenter --net=... -- BIN ARGS`. The fake
// refuses to run in the host's namespace (see below).
//
// # What it emulates
//
// Command line: exactly the options qemu.Argv writes (-name, -M, -accel,
// -cpu, -smp, -m, -nodefaults, -no-user-config, -display, -no-reboot,
// -device i8042|virtio-blk-device|virtio-net-device, -kernel, -initrd,
// -append, -drive, -netdev tap, -chardev file|socket, -serial, -mon,
// -pidfile), with their key=value syntax (",," escapes a comma). An unknown
// option, a missing argument, an unknown device or parameter, a backend no
// device uses, a repeated single-valued option, or a missing piece the
// fake needs (-name guest=banger-ID, -append with console=ttyS0,
// banger.ip=ADDR/BITS and banger.authkey, a disk, a NIC, the QMP monitor,
// -no-reboot, -nodefaults, -no-user-config, -display none) makes it print
// "PROG: message" on stderr and exit 1, as QEMU does for a bad command line,
// so the daemon's argv is checked. argv is left as it is, so
// /proc/PID/cmdline carries -name guest=banger-ID (qemu.IDFromArgv). It
// also answers `--version` and `-machine help` like QEMU 7.2.22.
//
// Start-up, as QEMU's: it opens the kernel and initrd; opens each disk and
// takes an OFD lock on it (exclusive, shared for readonly=on), so a second
// VMM on the same writable image fails (its own lock byte, not QEMU's
// layout); attaches to each TAP with TUNSETIFF (IFF_TAP|IFF_NO_PI on
// /dev/net/tun) and holds it until exit, failing when the TAP is missing
// (QEMU would create it: the fake does not, so a TAP the daemon forgot is
// caught) or held by another process; truncates the console file; replaces
// a stale QMP socket file and serves QMP; writes the pid file.
//
// The guest: after EnvBootDelay it brings the namespace's lo up, adds the
// guest's address there as a /32 (/128), serves the guest init's real SSH
// server (guestinit.NewServer) on ADDR:22 accepting only the
// banger.authkey keys, and writes to the console the lines banger's init
// prints: "BANGER-HOSTKEY <key>" (guest.HostKeyMarker) and "BANGER-READY
// <ms> listen=<ms>". The daemon's own WaitForHostKey and SSH dial (from
// inside the namespace) then work unchanged. Commands run as
// guestinit runs them, here on the host inside the test's network
// namespace (same file system, same users).
//
// QMP, one client at a time as QEMU's socket chardev: the greeting
// (version 7.2.22), qmp_capabilities (commands before it, and a second one,
// get QEMU's CommandNotFound errors), query-status ("running"),
// send-key (ctrl-alt-delete makes the guest power off cleanly, as banger's
// init does after CAD_OFF; other keys do nothing), system_powerdown (a
// POWERDOWN event, then the same clean poweroff: banger's real guests have
// no ACPI button handler, the fake's obeys), quit (exit at once). Any other
// command gets {"class": "CommandNotFound"}; malformed requests get
// GenericError. Replies echo "id".
//
// Exits: a guest poweroff (ctrl-alt-delete, system_powerdown, the SSH
// poweroff built-in, EnvExitAfter) stops SSH, writes BANGER-POWEROFF,
// removes the address from lo, sends a SHUTDOWN event (guest: true,
// reason "guest-shutdown") and exits 0; quit sends SHUTDOWN ("host-qmp-quit")
// and exits 0; SIGTERM, SIGINT and SIGHUP print "terminating on signal N",
// send SHUTDOWN ("host-signal") and exit 0. Every one of these removes the
// guest's address from lo, the QMP socket file and the pid file. SIGKILL
// leaves all three behind (the address stays on lo of the test's namespace
// until the next boot of a VM with that address reuses it, or the
// namespace is deleted); the kernel releases the TAP and the disk locks.
//
// # What it does not emulate
//
// No CPU, memory, disk or network I/O: the disks and kernel are opened,
// never read (any file will do); no packet crosses the TAP, and the guest's
// address lives on lo, so the bridge, routes and firewall between the
// daemon and the guest are not exercised. No guest file system: sessions
// see the host's. No console input, no kernel messages but two lines, no
// guest-side network configuration (banger.gw, banger.dns, banger.mtu and
// banger.hostname are parsed, not applied). -accel kvm needs no /dev/kvm.
// QMP commands other than those above, events other than POWERDOWN and
// SHUTDOWN, out-of-band execution. Unlike the real init, an unknown or
// malformed banger.* parameter is refused at start rather than logged.
//
// # Host safety
//
// The fake changes only the network namespace it runs in, and refuses to
// run (exit 1, before touching anything) when that is the host's: PID 1's
// namespace (compared by inode of /proc/self/ns/net and /proc/1/ns/net) or
// the kernel's initial one. Where PID 1's namespace cannot be read (a
// sandbox), it runs only in a namespace bind-mounted under /run/netns.
//
// # Fault knobs
//
// Environment variables read at start (qemu.Start passes the daemon's
// environment on), or per VM from a file under EnvKnobsDir: EnvBootDelay,
// EnvNoBoot, EnvExitAfter, EnvHangPowerdown, EnvHangQuit (see knobs.go).
package fakevmm
