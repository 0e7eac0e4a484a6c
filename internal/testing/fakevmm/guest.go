package fakevmm

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/guest"
	"banger/internal/guestinit"
)

// boot is the guest: after the boot delay it puts the guest's address on
// lo, serves the guest init's SSH server on ADDR:22 and announces the host
// key and readiness on the console, as banger's init does.
func (v *vm) boot() {
	if v.knobs.BootDelay > 0 {
		time.Sleep(v.knobs.BootDelay)
	}
	if err := v.bootGuest(); err != nil {
		// A guest whose init fails powers off; the daemon sees the VMM
		// exit before a host key.
		v.consolef("banger-init: level=ERROR msg=%q\n", err.Error())
		fmt.Fprintf(v.stderr, "%s: guest: %v\n", v.prog, err)
		v.powerOff("guest-reset", false)
		return
	}
	if d := v.knobs.ExitAfter; d > 0 {
		time.AfterFunc(d, func() { v.powerOff("guest-shutdown", false) })
	}
}

func (v *vm) bootGuest() error {
	initStart := time.Now()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	host, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	srv, err := guestinit.NewServer(guestinit.ServerConfig{
		HostKey:        host,
		AuthorizedKeys: v.cfg.AuthKeys,
		Reaper:         guestinit.NewReaper(false, nil),
		// The poweroff built-in replies before this runs.
		Poweroff: func() { go v.powerOff("guest-shutdown", false) },
	})
	if err != nil {
		return err
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped {
		return nil
	}
	v.addrOnLo = true
	if err := addrOnLo(v.cfg.Addr.Addr(), true); err != nil {
		return fmt.Errorf("adding %s to lo: %w", v.cfg.Addr.Addr(), err)
	}
	l, err := net.Listen("tcp", netip.AddrPortFrom(v.cfg.Addr.Addr(), 22).String())
	if err != nil {
		return fmt.Errorf("listening on port 22: %w", err)
	}
	listenMS := time.Since(initStart).Milliseconds()
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(l); err != nil {
			fmt.Fprintf(v.stderr, "%s: guest SSH server: %v\n", v.prog, err)
		}
	}()
	v.sshClose = func() {
		srv.Close()
		<-served
	}
	v.booted = true
	v.consolef("%s%s\n", guest.HostKeyMarker, bytes.TrimSpace(ssh.MarshalAuthorizedKey(host.PublicKey())))
	v.consolef("%s %d listen=%d\n", guestinit.MarkerReady, time.Since(v.start).Milliseconds(), listenMS)
	return nil
}

// powerOff is the guest ending: a clean poweroff (the init's, with its
// marker) once it has booted, a reset of a kernel that had not yet (the
// ctrl-alt-delete of a guest whose init has not taken it over, which
// -no-reboot turns into an exit). fromHost: asked through QMP, which
// EnvHangPowerdown makes the guest ignore.
func (v *vm) powerOff(reason string, fromHost bool) {
	if fromHost && v.knobs.HangPowerdown {
		return
	}
	v.mu.Lock()
	booted := v.booted
	v.mu.Unlock()
	if !booted && reason == "guest-shutdown" {
		reason = "guest-reset"
	}
	v.stopGuest()
	if booted {
		v.consolef("%s\n", guestinit.MarkerPoweroff)
	}
	v.requestExit(exitReq{code: 0, guest: true, reason: reason})
}

// stopGuest stops the SSH server and takes the guest's address off lo;
// it is safe to call more than once.
func (v *vm) stopGuest() {
	v.mu.Lock()
	v.stopped = true
	closeSSH, onLo := v.sshClose, v.addrOnLo
	v.sshClose, v.addrOnLo = nil, false
	v.mu.Unlock()
	if closeSSH != nil {
		closeSSH()
	}
	if onLo {
		if err := addrOnLo(v.cfg.Addr.Addr(), false); err != nil {
			fmt.Fprintf(v.stderr, "%s: removing %s from lo: %v\n", v.prog, v.cfg.Addr.Addr(), err)
		}
	}
}

// addrOnLo adds (add) or removes the host-route address a (/32 or /128)
// on this namespace's lo, bringing lo up first when adding. An address
// already there (left by a fake that was SIGKILLed) is fine, as is one
// already gone.
func addrOnLo(a netip.Addr, add bool) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	bits := a.BitLen()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if !add {
		if err := netlink.AddrDel(lo, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return err
		}
		return nil
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("bringing lo up: %w", err)
		}
	}
	if err := netlink.AddrAdd(lo, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}
