package qemu

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"banger/internal/errdefs"
)

// Accelerators Config.Accel may name.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Defaults for the zero values of Config's fields.
const (
	DefaultBinary    = "qemu-system-x86_64"
	DefaultVCPUs     = 1
	DefaultMemoryMiB = 256
)

// Limits the kernel or QEMU put on Config's values.
const (
	maxVCPUs      = 255
	maxCmdline    = 2047 // x86 COMMAND_LINE_SIZE is 2048 with the NUL
	maxSocketPath = 107  // sun_path is 108 bytes with the NUL
	maxIfName     = 15   // IFNAMSIZ is 16 with the NUL
)

// Config describes one QEMU microvm. Every path must be absolute: QEMU
// runs in the daemon's working directory, which means nothing.
type Config struct {
	// ID is the VM's id. It goes on QEMU's command line (-name
	// guest=banger-ID) so a reconciler can tell which VM a QEMU process
	// runs (IDFromArgv). Letters, digits, '.', '_' and '-' only.
	ID string
	// Binary is the QEMU executable; DefaultBinary (looked up in PATH)
	// when empty.
	Binary string
	// Kernel is an uncompressed x86-64 vmlinux (QEMU boots it through
	// its PVH entry note); Initrd is optional.
	Kernel string
	Initrd string
	// Cmdline is the whole kernel command line; start from BaseCmdline.
	// Under TCG, Argv appends tsc_early_khz=TSCkHz unless it is there.
	Cmdline string
	// Disks become virtio-blk devices in order: the first is /dev/vda.
	Disks []Disk
	// NICs become virtio-net devices on existing TAPs, in order: the
	// first is eth0.
	NICs []NIC
	// VCPUs and MemoryMiB default to DefaultVCPUs and DefaultMemoryMiB.
	VCPUs     int
	MemoryMiB int
	// Accel is AccelKVM or AccelTCG. Start picks one when it is empty
	// (KVM when KVMUsable); Argv needs it set.
	Accel string
	// TSCkHz is the host's TSC frequency, passed to a TCG guest as
	// tsc_early_khz=. Start fills it from HostTSCkHz when it is 0.
	TSCkHz int64
	// ConsoleLog receives the guest's serial console (ttyS0), truncated
	// at start. Empty: the console output is dropped.
	ConsoleLog string
	// QMPSocket is the unix socket QEMU serves QMP on (required; at most
	// 107 bytes). A stale socket file there is replaced.
	QMPSocket string
	// LogFile receives QEMU's own stdout and stderr (appended). Empty:
	// Start keeps the last few KiB in memory for its error messages, and
	// they are lost when this process exits.
	LogFile string
	// NetNS runs QEMU in a network namespace: a name under /run/netns
	// (as `ip netns add` makes) or an absolute path to a namespace file.
	// TAPs are looked up there.
	NetNS string
	// PIDFile, when set, is written by QEMU with its PID.
	PIDFile string
}

// Disk is one virtio-blk device backed by a raw image file.
type Disk struct {
	Path     string
	ReadOnly bool
}

// NIC is one virtio-net device on a TAP device.
type NIC struct {
	// TAP is the name of the TAP device (in NetNS, if set). QEMU opens
	// it, and creates it when missing, which needs CAP_NET_ADMIN.
	TAP string
	// MAC is the guest's address, required: QEMU would give every VM the
	// same default one.
	MAC string
	// File, when set, is TAP already attached (TUNSETIFF with IFF_TAP,
	// IFF_NO_PI and IFF_VNET_HDR): QEMU is handed it (-netdev tap,fd=N)
	// instead of opening /dev/net/tun itself, so a QEMU without the
	// rights to that device can use a TAP made for its user. Start passes
	// it on; the caller keeps and closes its own copy.
	File *os.File
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// invalid makes a validation error for VM id.
func invalid(id, format string, args ...any) error {
	return fmt.Errorf("qemu config for VM %q: %s: %w", id, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// withDefaults returns cfg with the zero values that have defaults filled.
func (cfg Config) withDefaults() Config {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.VCPUs == 0 {
		cfg.VCPUs = DefaultVCPUs
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	return cfg
}

// validate checks cfg (with defaults applied) without touching the host.
func (cfg Config) validate() error {
	id := cfg.ID
	if !idPattern.MatchString(id) {
		return invalid(id, "the VM id must be 1-64 letters, digits, '.', '_' or '-'")
	}
	var errs []error
	abs := func(what, path string, required bool) {
		switch {
		case path == "" && required:
			errs = append(errs, invalid(id, "%s is not set", what))
		case path != "" && !filepath.IsAbs(path):
			errs = append(errs, invalid(id, "%s %q is not an absolute path", what, path))
		}
	}
	abs("kernel", cfg.Kernel, true)
	abs("initrd", cfg.Initrd, false)
	abs("console log", cfg.ConsoleLog, false)
	abs("QMP socket", cfg.QMPSocket, true)
	abs("log file", cfg.LogFile, false)
	abs("pid file", cfg.PIDFile, false)
	if len(cfg.QMPSocket) > maxSocketPath {
		errs = append(errs, invalid(id, "QMP socket path %q is %d bytes, longer than a unix socket path may be (%d)", cfg.QMPSocket, len(cfg.QMPSocket), maxSocketPath))
	}
	if len(cfg.Disks) == 0 {
		errs = append(errs, invalid(id, "no disks: the first disk is the root file system"))
	}
	for i, d := range cfg.Disks {
		abs(fmt.Sprintf("disk %d", i), d.Path, true)
	}
	for i, n := range cfg.NICs {
		if err := validTAP(n.TAP); err != nil {
			errs = append(errs, invalid(id, "NIC %d: %v", i, err))
		}
		if err := validMAC(n.MAC); err != nil {
			errs = append(errs, invalid(id, "NIC %d: %v", i, err))
		}
	}
	if cfg.VCPUs < 1 || cfg.VCPUs > maxVCPUs {
		errs = append(errs, invalid(id, "%d vCPUs: want 1 to %d", cfg.VCPUs, maxVCPUs))
	}
	if cfg.MemoryMiB < 16 {
		errs = append(errs, invalid(id, "%d MiB of memory: want at least 16", cfg.MemoryMiB))
	}
	switch cfg.Accel {
	case AccelKVM, AccelTCG:
	case "":
		errs = append(errs, invalid(id, "no accelerator: Argv needs %q or %q (Start picks one)", AccelKVM, AccelTCG))
	default:
		errs = append(errs, invalid(id, "accelerator %q: want %q or %q", cfg.Accel, AccelKVM, AccelTCG))
	}
	if cfg.TSCkHz < 0 {
		errs = append(errs, invalid(id, "negative TSC frequency %d kHz", cfg.TSCkHz))
	}
	if strings.ContainsAny(cfg.Cmdline, "\x00\n") {
		errs = append(errs, invalid(id, "the kernel command line holds a NUL or a newline"))
	}
	if ns := cfg.NetNS; ns != "" && !filepath.IsAbs(ns) && (strings.Contains(ns, "/") || ns == "." || ns == "..") {
		errs = append(errs, invalid(id, "network namespace %q: want a name under /run/netns or an absolute path", ns))
	}
	return errors.Join(errs...)
}

func validTAP(name string) error {
	switch {
	case name == "":
		return errors.New("no TAP device name")
	case len(name) > maxIfName:
		return fmt.Errorf("TAP name %q is longer than %d bytes", name, maxIfName)
	case strings.ContainsAny(name, "/ \t\n\x00:,") || name == "." || name == "..":
		return fmt.Errorf("TAP name %q is not a valid interface name", name)
	}
	return nil
}

func validMAC(s string) error {
	if s == "" {
		return errors.New("no MAC address (QEMU would give every VM the same one)")
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("MAC %q is not a 6-byte MAC address like 02:00:0a:00:00:05", s)
	}
	if hw[0]&1 != 0 {
		return fmt.Errorf("MAC %q is a multicast address", s)
	}
	return nil
}

// netNSPath is where the namespace named by cfg.NetNS lives.
func netNSPath(ns string) string {
	if filepath.IsAbs(ns) {
		return ns
	}
	return filepath.Join("/run/netns", ns)
}
