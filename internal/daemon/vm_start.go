package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/opstate"
	"banger/internal/daemon/vmnet"
	"banger/internal/guest"
	"banger/internal/store"
)

// startGuest boots a VM whose disk exists: TAP, the capabilities'
// preStart (the daemon's key), VMM, the guest's host key on the console
// and its SSH, then the capabilities' postBoot (the DNS name). The caller holds
// vmLocks[vm.ID] and has recorded the state "starting"; on error the
// caller releases what was taken (stopGuest, or destroy for a create).
func (m *vmManager) startGuest(ctx context.Context, vm store.VM, k store.Kernel, n *vmnet.Network, h *vmHandles, t0 time.Time, report func(opstate.Progress)) error {
	ip := h.IP
	report(opstate.Progress{Phase: "network", Message: ip.String()})
	var err error
	if h.TAP, err = n.TAPs().Acquire(vm.ID); err != nil {
		return fmt.Errorf("get a TAP: %w", err)
	}
	if err := writeHandles(m.layout.VMHandles(vm.ID), h); err != nil {
		return err
	}
	crashPoint("boot.tap")
	g := n.GuestNet(vm.ID, ip)
	b := &capBoot{vm: vm, h: h, net: n, guest: &guestParams{
		Addr: g.Addr.String(), Gateway: g.Gateway.String(), DNS: g.DNS.String(),
		Hostname: vm.Name, Domain: g.Domain, MTU: g.MTU,
		Entrypoint: optionsOf(vm).Entrypoint,
	}}
	if err := m.runPreStart(ctx, b); err != nil {
		return err
	}

	report(opstate.Progress{Phase: "boot", Message: m.vmm})
	tLaunch := time.Now()
	kernelInitrd := ""
	if k.HasInitrd {
		kernelInitrd = m.layout.KernelInitrd(k.ID)
	}
	if m.vmm == "firecracker" && m.config.JailerBinary != "" {
		// Recorded before the jail is made, so that a crash or a config
		// change cannot leave a jail no one knows where to find.
		h.Jail = &jailPlace{Base: m.config.JailBase(), Exec: filepath.Base(m.config.FirecrackerBinary)}
		if err := writeHandles(m.layout.VMHandles(vm.ID), h); err != nil {
			return err
		}
	} else {
		h.Jail = nil
	}
	proc, err := m.launchVMM(ctx, bootSpec{
		ID:         vm.ID,
		Kernel:     m.layout.KernelImage(k.ID),
		Initrd:     kernelInitrd,
		Cmdline:    guestCmdline(*b.guest),
		Disk:       h.DiskPath,
		TAP:        h.TAP,
		MAC:        g.MAC.String(),
		VCPUs:      vm.VCPUs,
		MemoryMiB:  vm.MemoryMiB,
		ConsoleLog: h.ConsoleLog,
		Socket:     h.VMMSocket,
		VMMLog:     m.layout.VMMLog(vm.ID),
		NetNS:      m.config.NetNS,
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", m.vmm, err)
	}
	crashPoint("boot.spawned") // the VMM runs, no handles.json names it yet
	h.proc, h.PID = proc, proc.PID()
	h.PIDStart, h.VMMExe = vmmIdentity(h.PID)
	if err := writeHandles(m.layout.VMHandles(vm.ID), h); err != nil {
		return err
	}
	crashPoint("boot.vmm")

	tLaunched := time.Now()
	report(opstate.Progress{Phase: "ssh", Message: "waiting for the guest"})
	bctx, cancel := context.WithTimeout(ctx, m.config.BootTimeout.Std())
	defer cancel()
	hostKey, err := guest.WaitForHostKey(bctx, h.ConsoleLog, proc.Done(), 50*time.Millisecond)
	if err != nil {
		// A failed create takes the VM's directory with it: keep the
		// end of its console in the error, where the user sees it.
		return fmt.Errorf("%w; the console's last lines:\n%s", err, consoleTail(h.ConsoleLog, 15))
	}
	tHostKey := time.Now()
	h.hostKey = hostKey
	m.handles.set(func() { h.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey))) })
	client, err := m.waitForSSH(bctx, h, proc)
	if err != nil {
		return err
	}
	client.Close()
	tSSH := time.Now()
	if err := writeHandles(m.layout.VMHandles(vm.ID), h); err != nil {
		return err
	}
	if err := m.runPostBoot(ctx, b); err != nil {
		return err
	}
	crashPoint("boot.ready")
	err = m.updateVM(ctx, vm.ID, func(v *store.VM) {
		v.State, v.StartedAt, v.StateReason = store.VMRunning, time.Now(), ""
	})
	m.watchExit(vm.ID, vm.Name, proc)
	// The daemon's own share of a create is prepare + vmm_start + finish;
	// guest_boot (VMM spawn to the host key on the console) and ssh are the
	// guest's. bench/ reads this line.
	m.logger.Info("vm created", "vm", vm.Name, "vmm", m.vmm, "disk", h.DiskKind,
		"prepare", tLaunch.Sub(t0), "vmm_start", tLaunched.Sub(tLaunch),
		"guest_boot", tHostKey.Sub(tLaunched), "ssh", tSSH.Sub(tHostKey), "finish", time.Since(tSSH))
	return err
}

// waitForSSH waits for the guest's SSH, giving up as soon as the VMM exits
// (a guest that panics after announcing its host key) rather than at the
// boot timeout.
func (m *vmManager) waitForSSH(ctx context.Context, h *vmHandles, proc vmProcess) (*ssh.Client, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-proc.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	client, err := m.guestWaitForSSH(ctx, m.target(h))
	if err == nil {
		return client, nil
	}
	select {
	case <-proc.Done():
		return nil, fmt.Errorf("the VM exited before its SSH answered; the console's last lines:\n%s", consoleTail(h.ConsoleLog, 15))
	default:
		return nil, err
	}
}
