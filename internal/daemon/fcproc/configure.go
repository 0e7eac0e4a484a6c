package fcproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"

	"banger/internal/errdefs"
)

// Limits Firecracker puts on a machine (v1.16.1).
const (
	maxVCPUs   = 32   // MAX_SUPPORTED_VCPUS
	maxCmdline = 2047 // x86 CMDLINE_MAX_SIZE is 2048 with the NUL
	maxIfName  = 15   // IFNAMSIZ is 16 with the NUL
)

// macPattern is Firecracker's MacAddr syntax: six ':'-separated pairs of
// hex digits.
var macPattern = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)

// MachineConfig is everything Configure sends before InstanceStart.
type MachineConfig struct {
	// Logger, when set, is sent first, so Firecracker logs the rest.
	Logger *Logger
	// Machine is the vCPU count and memory size.
	Machine MachineConfiguration
	// BootSource is the kernel, initrd and command line.
	BootSource BootSource
	// Drives are added in order; exactly one should be the root device
	// (Firecracker makes it /dev/vda whatever its position).
	Drives []Drive
	// NetworkInterfaces are added in order: the first is the guest's eth0.
	NetworkInterfaces []NetworkInterface
}

// Validate checks mc against the rules Firecracker applies, so a bad
// configuration fails before any request: ids, absolute paths, vCPU and
// memory ranges, the command line, one root drive, MAC addresses, TAP
// names. It is stricter than Firecracker in two places, both always
// mistakes: a multicast guest MAC, and a drive or interface id used twice
// (Firecracker would silently replace the first).
func (mc MachineConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...))
	}
	abs := func(what, path string, required bool) {
		switch {
		case path == "" && required:
			bad("%s is not set", what)
		case path != "" && !filepath.IsAbs(path):
			bad("%s %q is not an absolute path", what, path)
		}
	}
	if l := mc.Logger; l != nil {
		abs("log path", l.LogPath, false)
		switch strings.ToLower(string(l.Level)) {
		case "", "error", "warning", "warn", "info", "debug", "trace", "off":
		default:
			bad("log level %q: want one of Error, Warning, Info, Debug, Trace, Off", l.Level)
		}
	}
	m := mc.Machine
	switch {
	case m.VCPUCount < 1 || m.VCPUCount > maxVCPUs:
		bad("%d vCPUs: want 1 to %d", m.VCPUCount, maxVCPUs)
	case m.SMT && m.VCPUCount > 1 && m.VCPUCount%2 == 1:
		bad("%d vCPUs with SMT: want 1 or an even number", m.VCPUCount)
	}
	if m.MemSizeMiB < 1 {
		bad("%d MiB of memory: want at least 1", m.MemSizeMiB)
	}
	abs("kernel", mc.BootSource.KernelImagePath, true)
	abs("initrd", mc.BootSource.InitrdPath, false)
	if args := mc.BootSource.BootArgs; len(args) > maxCmdline {
		bad("the kernel command line is %d bytes, more than Firecracker takes (%d)", len(args), maxCmdline)
	} else if strings.IndexFunc(args, func(r rune) bool { return r < ' ' || r > '~' }) >= 0 {
		bad("the kernel command line holds a character that is not printable ASCII")
	}
	roots := 0
	seen := map[string]bool{}
	for i, d := range mc.Drives {
		if !resourceIDPattern.MatchString(d.DriveID) {
			bad("drive %d: id %q: want letters, digits and '_'", i, d.DriveID)
		} else if seen["drive "+d.DriveID] {
			bad("drive %d: id %q used twice", i, d.DriveID)
		}
		seen["drive "+d.DriveID] = true
		abs(fmt.Sprintf("drive %s's image", d.DriveID), d.PathOnHost, true)
		if d.IsRootDevice {
			roots++
		}
	}
	if roots > 1 {
		bad("%d root drives: Firecracker takes one", roots)
	}
	for i, n := range mc.NetworkInterfaces {
		if !resourceIDPattern.MatchString(n.IfaceID) {
			bad("network interface %d: id %q: want letters, digits and '_'", i, n.IfaceID)
		} else if seen["nic "+n.IfaceID] {
			bad("network interface %d: id %q used twice", i, n.IfaceID)
		}
		seen["nic "+n.IfaceID] = true
		if n.HostDevName == "" || len(n.HostDevName) > maxIfName || strings.ContainsAny(n.HostDevName, "/ \t\n\x00:") {
			bad("network interface %s: TAP name %q is not a valid interface name (1-%d bytes)", n.IfaceID, n.HostDevName, maxIfName)
		}
		if n.GuestMAC != "" {
			if hw, err := net.ParseMAC(n.GuestMAC); err != nil || len(hw) != 6 || !macPattern.MatchString(n.GuestMAC) || hw[0]&1 != 0 {
				bad("network interface %s: MAC %q is not a unicast xx:xx:xx:xx:xx:xx address", n.IfaceID, n.GuestMAC)
			} else if seen["mac "+strings.ToLower(n.GuestMAC)] {
				bad("network interface %s: MAC %s used twice", n.IfaceID, n.GuestMAC)
			}
			seen["mac "+strings.ToLower(n.GuestMAC)] = true
		}
	}
	return errors.Join(errs...)
}

// Configure validates mc, sends it to Firecracker in this order — logger,
// machine config, boot source, drives, network interfaces — and then
// InstanceStart. It stops at the first refused request; a pre-boot
// Firecracker that refused something can be configured again, but the
// usual answer is to Kill it and start over.
func (p *Process) Configure(ctx context.Context, mc MachineConfig) error {
	if err := mc.Validate(); err != nil {
		return fmt.Errorf("configuring VM %s: %w", p.id, err)
	}
	c := p.client
	steps := []func() error{
		func() error {
			if mc.Logger == nil {
				return nil
			}
			return c.PutLogger(ctx, *mc.Logger)
		},
		func() error { return c.PutMachineConfig(ctx, mc.Machine) },
		func() error { return c.PutBootSource(ctx, mc.BootSource) },
	}
	for _, d := range mc.Drives {
		steps = append(steps, func() error { return c.PutDrive(ctx, d) })
	}
	for _, n := range mc.NetworkInterfaces {
		steps = append(steps, func() error { return c.PutNetworkInterface(ctx, n) })
	}
	steps = append(steps, func() error { return c.Action(ctx, ActionInstanceStart) })
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("configuring VM %s: %w", p.id, err)
		}
	}
	return nil
}
