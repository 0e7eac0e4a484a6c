package fcshim

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// The handlers of the calls the shim emulates. Each follows, in order, the
// checks Firecracker v1.16.1 makes: the path id (checked_id), the body
// (serde, see definitions.go), the path/body id match, the instance state
// (rpc_interface.rs: PrebootApiController / RuntimeApiController), then the
// resource's own validation (src/vmm/src/vmm_config/*.rs). Each comment
// names the swagger path and definition it follows.

// putBootSourceLocked: PUT /boot-source, definition BootSource, "Pre-boot
// only". Firecracker opens the kernel and initrd and parses the command
// line when the call is made (BootConfig::new), so a missing file is
// refused here, not at InstanceStart.
func (s *Server) putBootSourceLocked(body []byte) reply {
	var b bootSource
	if rep, ok := decode(bootSourceSchema, body, &b); !ok {
		return rep
	}
	if s.started {
		return fault(errPostBoot)
	}
	if err := s.canOpen(b.KernelImagePath, os.O_RDONLY); err != nil {
		return fault("Boot source error: The kernel file cannot be opened: %s", osError(err))
	}
	if b.InitrdPath != nil {
		if err := s.canOpen(*b.InitrdPath, os.O_RDONLY); err != nil {
			return fault("Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. %s", osError(err))
		}
	}
	args := defaultKernelCmdline
	if b.BootArgs != nil {
		args = *b.BootArgs
	}
	if err := validCmdline(args); err != nil {
		return fault("Boot source error: The kernel command line is invalid: %v", err)
	}
	s.bootSrc = &b
	return noContent
}

// putDriveLocked: PUT /drives/{drive_id}, definition Drive, "Pre-boot
// only" (after boot Firecracker treats it as PCI hotplug, refused without
// --enable-pci). BlockBuilder::insert: one root drive, kept first; a known
// drive_id is replaced in place. The image is opened now (read-only or
// read-write, as asked), as Firecracker's VirtioBlock::new does.
func (s *Server) putDriveLocked(id string, hasID bool, body []byte) reply {
	if rep, ok := checkedID(id, hasID); !ok {
		return rep
	}
	var d drive
	if rep, ok := decode(driveSchema, body, &d); !ok {
		return rep
	}
	if id != d.DriveID {
		return fault("The id from the path does not match the id from the body!")
	}
	if s.started {
		return fault(errNoPCI)
	}
	if d.CacheType == "" {
		d.CacheType = "Unsafe"
	}
	pos := -1
	for i := range s.drives {
		if s.drives[i].DriveID == d.DriveID {
			pos = i
		}
	}
	hasRoot := len(s.drives) > 0 && s.drives[0].IsRootDevice
	if d.IsRootDevice && hasRoot && pos != 0 {
		return fault("Drive config error: A root block device already exists!")
	}
	// Block::new: a virtio-block drive has path_on_host and no socket; a
	// vhost-user one has only a socket; anything else is invalid.
	switch {
	case d.PathOnHost != nil && d.Socket == nil:
		flag := os.O_RDWR
		if d.IsReadOnly != nil && *d.IsReadOnly {
			flag = os.O_RDONLY
		}
		if err := s.canOpen(*d.PathOnHost, flag); err != nil {
			return fault("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: %s %s", osError(err), *d.PathOnHost)
		}
	case d.Socket != nil && d.PathOnHost == nil && d.IsReadOnly == nil && d.RateLimiter == nil && d.IOEngine == nil:
		return notEmulated("vhost-user block devices (Drive.socket)")
	default:
		return fault("Drive config error: Unable to create the virtio block device: Invalid block config.")
	}
	switch {
	case pos < 0 && d.IsRootDevice:
		s.drives = append([]drive{d}, s.drives...)
	case pos < 0:
		s.drives = append(s.drives, d)
	default:
		s.drives[pos] = d
		if pos != 0 && d.IsRootDevice {
			s.drives[0], s.drives[pos] = s.drives[pos], s.drives[0]
		}
	}
	return noContent
}

// putNetworkInterfaceLocked: PUT /network-interfaces/{iface_id},
// definition NetworkInterface, "Pre-boot only" (after boot: PCI hotplug).
// NetBuilder::build: a MAC another interface has is refused; a known
// iface_id is removed (swap_remove) and the new one appended; the TAP is
// opened now, as Firecracker's Tap::open_named does.
func (s *Server) putNetworkInterfaceLocked(id string, hasID bool, body []byte) reply {
	if rep, ok := checkedID(id, hasID); !ok {
		return rep
	}
	var n networkInterface
	if rep, ok := decode(networkInterfaceSchema, body, &n); !ok {
		return rep
	}
	if id != n.IfaceID {
		return fault("The id from the path [%s] does not match the id from the body [%s]!", id, n.IfaceID)
	}
	if s.started {
		return fault(errNoPCI)
	}
	if n.MTU != nil {
		return notEmulated("NetworkInterface.mtu (banger's QEMU backend sets no MTU)")
	}
	if n.GuestMAC != nil {
		mac := strings.ToLower(*n.GuestMAC)
		for _, o := range s.nics {
			if o.GuestMAC != nil && strings.ToLower(*o.GuestMAC) == mac && o.IfaceID != n.IfaceID {
				return fault("Network config error: The MAC address is already in use: %s", mac)
			}
		}
	}
	for i := range s.nics {
		if s.nics[i].IfaceID == n.IfaceID {
			last := len(s.nics) - 1
			s.nics[i] = s.nics[last]
			s.nics = s.nics[:last]
			break
		}
	}
	if len(n.HostDevName) >= syscall.IFNAMSIZ {
		return fault("Network config error: Could not create the network device: Open tap device failed: Invalid interface name")
	}
	tapErr := func(err string) reply {
		return fault("Network config error: Could not create the network device: Open tap device failed: Error while creating ifreq structure: %s. Invalid TUN/TAP Backend provided by %s. Check our documentation on setting up the network devices.", err, n.HostDevName)
	}
	for _, o := range s.nics {
		if o.HostDevName == n.HostDevName { // Firecracker holds the first one's TAP open
			return tapErr(osError(syscall.EBUSY))
		}
	}
	if err := s.checkTAP(n.HostDevName); err != nil {
		return tapErr(osError(err))
	}
	s.nics = append(s.nics, n)
	return noContent
}

// putMachineConfigLocked: PUT /machine-config, definition
// MachineConfiguration, "Pre-boot only". MachineConfig::update: vcpu_count
// 1-32, 1 or even with SMT; mem_size_mib not 0 and a multiple of the page
// size (2 MiB with huge_pages 2M). Absent optional fields take their
// defaults (the swagger: "All parameters that are optional and are not
// specified are set to their default values").
func (s *Server) putMachineConfigLocked(body []byte) reply {
	var m machineConfig
	if rep, ok := decode(machineConfigSchema, body, &m); !ok {
		return rep
	}
	if s.started {
		return fault(errPostBoot)
	}
	if m.HugePages == "" {
		m.HugePages = "None"
	}
	if m.VCPUCount == 0 || m.VCPUCount > 32 || (m.SMT && m.VCPUCount > 1 && m.VCPUCount%2 == 1) {
		return fault("Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.")
	}
	if m.MemSizeMiB == 0 || (m.HugePages == "2M" && m.MemSizeMiB%2 != 0) {
		return fault("Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.")
	}
	if m.HugePages != "None" {
		return notEmulated("MachineConfiguration.huge_pages " + m.HugePages)
	}
	if m.CPUTemplate != nil && *m.CPUTemplate == "None" {
		m.CPUTemplate = nil
	}
	if m.CPUTemplate != nil {
		return notEmulated("CPU templates (MachineConfiguration.cpu_template " + *m.CPUTemplate + ")")
	}
	s.machine = m
	return noContent
}

// putLoggerLocked: PUT /logger, definition Logger; pre-boot only
// (ConfigureLogger is refused by RuntimeApiController). The log file or
// FIFO is opened now, created if missing (open_file_nonblock); the shim
// writes its own log lines there from then on.
func (s *Server) putLoggerLocked(body []byte) reply {
	var l logger
	if rep, ok := decode(loggerSchema, body, &l); !ok {
		return rep
	}
	if s.started {
		return fault(errPostBoot)
	}
	if l.LogPath != nil {
		path, err := inRoot(s.root, *l.LogPath, false)
		var f *os.File
		if err == nil {
			f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NONBLOCK, 0o644)
		}
		if err != nil {
			return fault("Logger error: Failed to open target file: %s", osError(err))
		}
		if s.logFile != nil {
			s.logFile.Close()
		}
		s.logFile, s.log = f, dropWriter{f}
	}
	return noContent
}

// putMetricsLocked: PUT /metrics, definition Metrics; pre-boot only, and
// only once ("metrics system already initialized").
func (s *Server) putMetricsLocked(body []byte) reply {
	var m metrics
	if rep, ok := decode(metricsSchema, body, &m); !ok {
		return rep
	}
	if s.started {
		return fault(errPostBoot)
	}
	if s.metricsFile != nil {
		return fault("Metrics error: Reinitialization of metrics not allowed.")
	}
	path, err := inRoot(s.root, m.MetricsPath, false)
	var f *os.File
	if err == nil {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NONBLOCK, 0o644)
	}
	if err != nil {
		return fault("Metrics error: %s", osError(err))
	}
	s.metricsFile = f
	return noContent
}

// putActionLocked: PUT /actions, definition InstanceActionInfo.
// InstanceStart is pre-boot only and needs a boot source
// (StartMicrovmError::MissingKernelConfig); SendCtrlAltDel and
// FlushMetrics are post-boot only (PrebootApiController refuses them).
func (s *Server) putActionLocked(body []byte) reply {
	var a action
	if rep, ok := decode(actionSchema, body, &a); !ok {
		return rep
	}
	switch a.ActionType {
	case "InstanceStart":
		if s.started {
			return fault(errPostBoot)
		}
		if s.bootSrc == nil {
			return fault("Start microvm error: Cannot start microvm without kernel configuration.")
		}
		if len(s.drives) == 0 {
			return notEmulated("a VM without drives (banger's QEMU backend needs a root disk)")
		}
		cfg := s.bootConfigLocked()
		ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
		defer cancel()
		start := time.Now()
		vm, err := s.booter.Boot(ctx, cfg)
		if err != nil {
			return fault("Start microvm error: fcshim could not boot the VM under QEMU: %v", err)
		}
		s.logfLocked("booted under QEMU in %v: %s", time.Since(start).Round(time.Millisecond), cfg)
		s.started, s.vm = true, vm
		close(s.booted)
		return noContent
	case "SendCtrlAltDel":
		if !s.started {
			return fault(errPreBoot)
		}
		ctx, cancel := context.WithTimeout(context.Background(), cadTimeout)
		defer cancel()
		if err := s.vm.SendCtrlAltDel(ctx); err != nil {
			return fault("Internal VMM error: %v", err)
		}
		return noContent
	default: // FlushMetrics
		if !s.started {
			return fault(errPreBoot)
		}
		if s.metricsFile != nil {
			fmt.Fprintf(dropWriter{s.metricsFile}, "{\"utc_timestamp_ms\":%d}\n", time.Now().UnixMilli())
		}
		return noContent
	}
}

// canOpen opens path (inside the chroot, if any) with flag and closes it
// again.
func (s *Server) canOpen(path string, flag int) error {
	path, err := inRoot(s.root, path, true)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// validCmdline follows linux_loader's Cmdline::try_from with Firecracker's
// CMDLINE_MAX_SIZE (2048 on x86_64, with the NUL): printable ASCII only.
func validCmdline(s string) error {
	for _, c := range s {
		if c < ' ' || c > '~' {
			return fmt.Errorf("String contains an invalid ASCII character.")
		}
	}
	if len(s)+1 > 2048 {
		return fmt.Errorf("Inserting string would make command line too long.")
	}
	return nil
}

// dropWriter writes to a file opened O_NONBLOCK without waiting: what a
// full FIFO nobody reads cannot take is dropped, as Firecracker's logger
// does, rather than blocking the API.
type dropWriter struct{ f *os.File }

func (w dropWriter) Write(b []byte) (int, error) {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var werr error
	if err := rc.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), b)
		return true // never wait for the file to become writable
	}); err != nil {
		return 0, err
	}
	if werr == syscall.EAGAIN {
		return len(b), nil
	}
	return n, werr
}
