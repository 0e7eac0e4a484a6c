// Package qemu is banger's second VMM backend: QEMU's `microvm` machine
// booting the same uncompressed vmlinux and raw ext4 disks as Firecracker,
// under KVM when /dev/kvm can run stock kernels and under TCG (software
// emulation) otherwise.
//
// It is a leaf: it knows nothing of the daemon, the store or networking
// policy. The caller gives a Config (kernel, disks, TAPs, paths) and gets a
// *Process.
//
// Process lifetime. Start's context bounds only the start-up (spawn, wait
// for the QMP socket). QEMU itself is not tied to any context: it runs in
// its own process group, so a signal to the daemon's terminal does not
// reach it, and it is not killed when the daemon exits (no parent-death
// signal), so a restarted daemon can find it again: the VM id is on its
// command line (IDFromArgv) and its QMP socket can be dialled (DialQMP).
// Wait and Done may be used from any number of goroutines.
//
// Network namespaces. With Config.NetNS set, the argv starts with
// `nsenter --net=/run/netns/NAME --`: nsenter (util-linux) enters the
// namespace and execs QEMU, so the PID Start returns is QEMU's own, the
// TAP names resolve inside the namespace, and the daemon's threads never
// change namespace.
//
// Shutdown. QMP `system_powerdown` does nothing in banger's guests (no
// ACPI power-button handler), so Shutdown presses ctrl-alt-delete on the
// emulated i8042 keyboard (QMP `send-key`, the same signal Firecracker's
// SendCtrlAltDel gives). A guest init that called
// reboot(LINUX_REBOOT_CMD_CAD_OFF) receives SIGINT and powers off cleanly;
// otherwise the kernel restarts at once, which under -no-reboot also ends
// QEMU. Either way QEMU exits with status 0. After the grace period
// Shutdown sends QMP `quit` (a hard stop of the emulator), then SIGKILL.
//
// TCG. Under TCG the guest must be told the TSC frequency
// (tsc_early_khz=) or its timer calibration can hang on a busy host; Argv
// adds it from Config.TSCkHz and Start fills that from the host
// (HostTSCkHz), so a caller cannot forget it.
package qemu
