package fcshim

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// defaultKernelCmdline is Firecracker's DEFAULT_KERNEL_CMDLINE, used when
// PUT /boot-source has no boot_args (src/vmm/src/vmm_config/boot_source.rs).
const defaultKernelCmdline = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"

// BootConfig is what InstanceStart boots: the configuration the API
// received, resolved the way Firecracker resolves it.
type BootConfig struct {
	// ID is the instance id.
	ID string
	// Kernel and Initrd are host paths; Initrd may be empty.
	Kernel, Initrd string
	// Cmdline is the command line Firecracker would give the kernel:
	// boot_args (or Firecracker's default), then pci=off and, for a root
	// drive, root=/dev/vda (or root=PARTUUID=...) and ro or rw, before any
	// "--" that starts init's arguments. Firecracker's
	// virtio_mmio.device= entries are left out: under QEMU's microvm the
	// guest finds its devices through ACPI.
	Cmdline string
	// Drives in Firecracker's order: the root drive first.
	Drives []BootDrive
	// NICs in Firecracker's order: the first is eth0.
	NICs []BootNIC
	// VCPUs and MemoryMiB are the machine config (Firecracker's defaults
	// 1 and 128 when never set).
	VCPUs, MemoryMiB int
}

// BootDrive is one virtio-block device.
type BootDrive struct {
	Path     string
	ReadOnly bool
}

// BootNIC is one virtio-net device on a TAP.
type BootNIC struct {
	TAP, MAC string
	// File is the TAP, already open, when the shim runs in a chroot (see
	// EnvChroot): it was opened through the chroot's /dev/net/tun, as a
	// jailed Firecracker does, and QEMU, which cannot open the host's
	// /dev/net/tun as the jail's user, is handed it.
	File *os.File
}

func (c BootConfig) String() string {
	return fmt.Sprintf("vcpus=%d mem=%dMiB kernel=%s initrd=%s drives=%v nics=%v cmdline=%q",
		c.VCPUs, c.MemoryMiB, c.Kernel, c.Initrd, c.Drives, c.NICs, c.Cmdline)
}

// bootConfigLocked resolves the API's configuration for InstanceStart.
func (s *Server) bootConfigLocked() BootConfig {
	cfg := BootConfig{
		ID:        s.id,
		Kernel:    s.hostPath(s.bootSrc.KernelImagePath),
		VCPUs:     int(s.machine.VCPUCount),
		MemoryMiB: int(s.machine.MemSizeMiB),
	}
	if s.bootSrc.InitrdPath != nil {
		cfg.Initrd = s.hostPath(*s.bootSrc.InitrdPath)
	}
	args := defaultKernelCmdline
	if s.bootSrc.BootArgs != nil {
		args = *s.bootSrc.BootArgs
	}
	var root *drive
	for i := range s.drives {
		d := s.drives[i]
		ro := d.IsReadOnly != nil && *d.IsReadOnly
		cfg.Drives = append(cfg.Drives, BootDrive{Path: s.hostPath(*d.PathOnHost), ReadOnly: ro})
		if d.IsRootDevice && root == nil {
			root = &d
		}
	}
	cfg.Cmdline = firecrackerCmdline(args, root)
	for i, n := range s.nics {
		mac := randomMAC()
		if n.GuestMAC != nil {
			mac = strings.ToLower(*n.GuestMAC)
		}
		nic := BootNIC{TAP: n.HostDevName, MAC: mac}
		if i < len(s.tapFiles) {
			nic.File = s.tapFiles[i]
		}
		cfg.NICs = append(cfg.NICs, nic)
	}
	return cfg
}

// firecrackerCmdline is the command line Firecracker's builder makes from
// boot_args: pci=off (no --enable-pci), then the root drive's root= and
// ro|rw (attach_block_devices), both among the kernel's arguments, before
// a "--".
func firecrackerCmdline(args string, root *drive) string {
	kernel, init := splitInitArgs(strings.TrimSpace(args))
	add := []string{"pci=off"}
	if root != nil {
		if root.PartUUID != nil {
			add = append(add, "root=PARTUUID="+*root.PartUUID)
		} else {
			add = append(add, "root=/dev/vda")
		}
		if root.IsReadOnly != nil && *root.IsReadOnly {
			add = append(add, "ro")
		} else {
			add = append(add, "rw")
		}
	}
	out := strings.TrimSpace(kernel + " " + strings.Join(add, " "))
	if init != "" {
		out += " " + init
	}
	return out
}

// splitInitArgs splits a command line at its first bare "--" token
// (outside double quotes): init is "--" and what follows, or "".
func splitInitArgs(s string) (kernel, init string) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			quoted = !quoted
		case !quoted && strings.HasPrefix(s[i:], "--") &&
			(i == 0 || s[i-1] == ' ') && (i+2 == len(s) || s[i+2] == ' '):
			return strings.TrimSpace(s[:i]), s[i:]
		}
	}
	return s, ""
}

// randomMAC is a locally administered unicast MAC, what a guest picks for
// a virtio-net device that offers none.
func randomMAC() string {
	b := make([]byte, 6)
	rand.Read(b)
	b[0] = b[0]&0xfe | 0x02
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
}

// openTAP attaches to the TAP device name and lets go of it again, as
// Firecracker's Tap::open_named attaches when a NIC is added (creating a
// transient TAP if none exists, which needs CAP_NET_ADMIN): it fails for a
// name that is not a TAP, or a TAP another process holds.
func openTAP(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
}

// openJailTAP opens TAP name through the chroot's dev/net/tun (the node
// the jailer made for its user), as a jailed Firecracker does, and keeps
// it for QEMU. The caller holds mu.
func (s *Server) openJailTAP(name string) error {
	tun, err := inRoot(s.root, "/dev/net/tun", true)
	if err != nil {
		return err
	}
	fd, err := unix.Open(tun, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return err
	}
	s.tapFiles = append(s.tapFiles, os.NewFile(uintptr(fd), tun))
	return nil
}

// hostPath is where a path the API was given (and checked, when it was
// given) is on the host: inside the chroot, if any.
func (s *Server) hostPath(p string) string {
	if s.root == "" {
		return p
	}
	return filepath.Join(s.root, filepath.Clean("/"+p))
}
