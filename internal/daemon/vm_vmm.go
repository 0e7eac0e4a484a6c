package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	cfg, err := m.firecrackerConfig(spec.ID)
	if err != nil {
		return nil, err
	}
	cfg.APISocket, cfg.ConsoleLog, cfg.NetNS = spec.Socket, spec.ConsoleLog, spec.NetNS
	// What Firecracker is given to open: host paths, or under the jailer
	// the same files' paths inside its chroot.
	kernel, initrd, disk, vmmLog := spec.Kernel, spec.Initrd, spec.Disk, spec.VMMLog
	if cfg.Jailer != nil {
		cfg.APISocket = fcproc.JailAPISocket
		if kernel, initrd, disk, vmmLog, err = prepareJail(cfg, spec); err != nil {
			return nil, err
		}
	}
	p, err := fcproc.Start(ctx, cfg)
	if err != nil {
		return nil, errors.Join(err, removeJail(cfg))
	}
	mc := fcproc.MachineConfig{
		Logger:  &fcproc.Logger{LogPath: vmmLog, Level: "Warning"},
		Machine: fcproc.MachineConfiguration{VCPUCount: spec.VCPUs, MemSizeMiB: spec.MemoryMiB},
		BootSource: fcproc.BootSource{
			KernelImagePath: kernel,
			InitrdPath:      initrd,
			// Firecracker adds root=/dev/vda for the root drive.
			BootArgs: "console=ttyS0 reboot=k panic=-1 rw " + spec.Cmdline,
		},
		Drives:            []fcproc.Drive{{DriveID: "rootfs", PathOnHost: disk, IsRootDevice: true}},
		NetworkInterfaces: []fcproc.NetworkInterface{{IfaceID: "eth0", HostDevName: spec.TAP, GuestMAC: spec.MAC}},
	}
	if err := p.Configure(ctx, mc); err != nil {
		p.Kill()
		<-p.Done()
		return nil, errors.Join(fmt.Errorf("configure firecracker: %w", err), removeJail(cfg))
	}
	return newFCProcess(p, cfg, m.logger), nil
}

// fcProcess is a running Firecracker. Under the jailer its Done is closed
// only once the jail is gone too, so whoever waits for the VMM to end
// (stop, rm, the exit watcher) finds nothing of the jail left.
type fcProcess struct {
	*fcproc.Process
	done <-chan struct{}
}

func newFCProcess(p *fcproc.Process, cfg fcproc.Config, log *slog.Logger) fcProcess {
	if cfg.Jailer == nil {
		return fcProcess{Process: p, done: p.Done()}
	}
	done := make(chan struct{})
	go func() {
		<-p.Done()
		if err := removeJail(cfg); err != nil {
			log.Warn("remove the jail of a VM whose firecracker exited", "vm", cfg.ID, "err", err)
		}
		close(done)
	}()
	return fcProcess{Process: p, done: done}
}

func (f fcProcess) Done() <-chan struct{} { return f.done }

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
