package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/qemu"
)

// bootSpec is what either VMM needs to boot one VM.
type bootSpec struct {
	ID         string
	Kernel     string
	Initrd     string
	Cmdline    string // banger's part; each VMM adds its own
	Disk       string
	TAP        string
	MAC        string
	VCPUs      int
	MemoryMiB  int
	ConsoleLog string
	Socket     string
	VMMLog     string
	NetNS      string
}

// launch starts the configured VMM for spec and returns it running.
func (m *vmManager) launch(ctx context.Context, spec bootSpec) (vmProcess, error) {
	if m.vmm == "firecracker" {
		return m.launchFirecracker(ctx, spec)
	}
	return m.launchQEMU(ctx, spec)
}

func (m *vmManager) launchQEMU(ctx context.Context, spec bootSpec) (vmProcess, error) {
	p, err := qemu.Start(ctx, qemu.Config{
		ID:         spec.ID,
		Binary:     m.config.QEMUBinary,
		Kernel:     spec.Kernel,
		Initrd:     spec.Initrd,
		Cmdline:    qemu.BaseCmdline() + " root=/dev/vda rw " + spec.Cmdline,
		Disks:      []qemu.Disk{{Path: spec.Disk}},
		NICs:       []qemu.NIC{{TAP: spec.TAP, MAC: spec.MAC}},
		VCPUs:      spec.VCPUs,
		MemoryMiB:  spec.MemoryMiB,
		ConsoleLog: spec.ConsoleLog,
		QMPSocket:  spec.Socket,
		LogFile:    spec.VMMLog,
		NetNS:      spec.NetNS,
	})
	if err != nil {
		return nil, err
	}
	return qemuProcess{p}, nil
}

type qemuProcess struct{ *qemu.Process }

func (q qemuProcess) Shutdown(ctx context.Context, grace time.Duration) error {
	_, err := q.Process.Shutdown(ctx, grace)
	return err
}

func (m *vmManager) launchFirecracker(ctx context.Context, spec bootSpec) (vmProcess, error) {
	p, err := fcproc.Start(ctx, fcproc.Config{
		ID:         spec.ID,
		Binary:     m.config.FirecrackerBinary,
		APISocket:  spec.Socket,
		ConsoleLog: spec.ConsoleLog,
		NetNS:      spec.NetNS,
	})
	if err != nil {
		return nil, err
	}
	mc := fcproc.MachineConfig{
		Logger:  &fcproc.Logger{LogPath: spec.VMMLog, Level: "Warning"},
		Machine: fcproc.MachineConfiguration{VCPUCount: spec.VCPUs, MemSizeMiB: spec.MemoryMiB},
		BootSource: fcproc.BootSource{
			KernelImagePath: spec.Kernel,
			InitrdPath:      spec.Initrd,
			// Firecracker adds root=/dev/vda for the root drive.
			BootArgs: "console=ttyS0 reboot=k panic=-1 rw " + spec.Cmdline,
		},
		Drives:            []fcproc.Drive{{DriveID: "rootfs", PathOnHost: spec.Disk, IsRootDevice: true}},
		NetworkInterfaces: []fcproc.NetworkInterface{{IfaceID: "eth0", HostDevName: spec.TAP, GuestMAC: spec.MAC}},
	}
	if err := p.Configure(ctx, mc); err != nil {
		p.Kill()
		<-p.Done()
		return nil, fmt.Errorf("configure firecracker: %w", err)
	}
	return fcProcess{p}, nil
}

type fcProcess struct{ *fcproc.Process }

func (f fcProcess) Shutdown(ctx context.Context, grace time.Duration) error {
	_, err := f.Process.Shutdown(ctx, grace)
	return err
}

// guestCmdline is the banger.* part of the kernel command line: what the
// guest init needs to configure the NIC, the name and SSH.
func guestCmdline(g guestParams) string {
	parts := []string{
		"init=/.banger/init",
		"banger.ip=" + g.Addr,
		"banger.gw=" + g.Gateway,
		"banger.dns=" + g.DNS,
		"banger.hostname=" + g.Hostname,
		"banger.domain=" + g.Domain,
		"banger.authkey=" + g.AuthKey,
	}
	if g.MTU > 0 {
		parts = append(parts, fmt.Sprintf("banger.mtu=%d", g.MTU))
	}
	if g.Entrypoint {
		parts = append(parts, "banger.entrypoint=1")
	}
	return strings.Join(parts, " ")
}

type guestParams struct {
	Addr, Gateway, DNS, Hostname, Domain string
	AuthKey                              string // base64 of one authorized_keys line
	MTU                                  int
	Entrypoint                           bool
}
