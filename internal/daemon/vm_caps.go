package daemon

import (
	"context"
	"errors"
	"fmt"

	"banger/internal/daemon/vmnet"
	"banger/internal/store"
)

// vmCap is a capability hooked into every boot and stop of a VM (the
// blueprint's vmCaps). The hooks run under vmLocks[id], in registration
// order (preStop in reverse), from start, restart and create alike:
//
//   - preStart runs before the VMM is launched and may add to the boot
//     (the guest's kernel command line, the daemon's SSH key);
//   - postBoot runs once the guest's SSH answers, before the VM is
//     recorded running;
//   - preStop runs before the guest is asked to power off, and on every
//     path that releases a running or half-booted VM (stop, rm, a failed
//     boot, a guest that powered itself off). It must undo what the
//     capability's preStart and postBoot did, and be harmless when they
//     never ran.
//
// A failing preStart or postBoot fails the op; the op then releases what
// it took, the capabilities' preStop included. A failing preStop fails a
// stop, which then changes nothing; on rm and the other release paths it
// is reported and the release goes on.
type vmCap interface {
	capName() string
	preStart(ctx context.Context, b *capBoot) error
	postBoot(ctx context.Context, b *capBoot) error
	preStop(ctx context.Context, b *capBoot) error
}

// capBoot is what a hook sees of one boot.
type capBoot struct {
	vm  store.VM
	h   *vmHandles     // the VM's handles; guarded as handleCache says
	net *vmnet.Network // the VM network; nil on a release with none set up
	// guest is the guest's boot parameters; preStart may change them.
	guest *guestParams
}

// defaultCaps are the capabilities every daemon registers.
func defaultCaps(m *vmManager) []vmCap {
	return []vmCap{sshKeyCap{m}, dnsCap{}}
}

// runPreStart runs each capability's preStart; on an error it stops and
// returns it, naming the capability.
func (m *vmManager) runPreStart(ctx context.Context, b *capBoot) error {
	for _, c := range m.caps {
		if err := c.preStart(ctx, b); err != nil {
			return fmt.Errorf("%s: pre-start: %w", c.capName(), err)
		}
	}
	return nil
}

func (m *vmManager) runPostBoot(ctx context.Context, b *capBoot) error {
	for _, c := range m.caps {
		if err := c.postBoot(ctx, b); err != nil {
			return fmt.Errorf("%s: post-boot: %w", c.capName(), err)
		}
	}
	return nil
}

// runPreStop runs every capability's preStop, in reverse order, even
// after one fails, and returns the errors joined.
func (m *vmManager) runPreStop(ctx context.Context, b *capBoot) error {
	var errs []error
	for i := len(m.caps) - 1; i >= 0; i-- {
		if err := m.caps[i].preStop(ctx, b); err != nil {
			errs = append(errs, fmt.Errorf("%s: pre-stop: %w", m.caps[i].capName(), err))
		}
	}
	return errors.Join(errs...)
}

// sshKeyCap provisions the daemon's SSH key for one boot: a fresh ed25519
// key saved 0600 in the VM's directory, its public half handed to the
// guest init on the kernel command line (banger.authkey). Users' own keys
// are added after boot with the guest init's authorize built-in and kept
// on the VM's disk.
type sshKeyCap struct{ m *vmManager }

func (sshKeyCap) capName() string { return "ssh-key" }

func (c sshKeyCap) preStart(ctx context.Context, b *capBoot) error {
	signer, authKey, err := newClientKey(c.m.layout.VMClientKey(b.vm.ID))
	if err != nil {
		return fmt.Errorf("make the daemon's key for the guest: %w", err)
	}
	b.h.signer = signer
	b.guest.AuthKey = authKey
	return nil
}

func (sshKeyCap) postBoot(context.Context, *capBoot) error { return nil }

// preStop has nothing to undo: the next boot makes a new key, and the
// file stays for a daemon that restarts while the guest runs (it goes
// with the VM's directory).
func (sshKeyCap) preStop(context.Context, *capBoot) error { return nil }

// dnsCap answers NAME.<domain> with the VM's address while it runs.
type dnsCap struct{}

func (dnsCap) capName() string { return "dns" }

func (dnsCap) preStart(context.Context, *capBoot) error { return nil }

func (dnsCap) postBoot(_ context.Context, b *capBoot) error {
	if err := b.net.DNS().Register(b.vm.Name, b.h.IP); err != nil {
		return fmt.Errorf("register %s: %w", b.vm.Name, err)
	}
	return nil
}

// preStop removes the name only if it still points at this VM.
func (dnsCap) preStop(_ context.Context, b *capBoot) error {
	if b.net == nil {
		return nil
	}
	if addr, found := b.net.DNS().Lookup(b.vm.Name); found && addr == b.h.IP {
		b.net.DNS().Unregister(b.vm.Name)
	}
	return nil
}
