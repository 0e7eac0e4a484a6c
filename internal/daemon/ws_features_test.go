package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/workspace"
	"banger/internal/guest"
	"banger/internal/guestinit"
)

// TestGuestUntarFeatures: this init's untar says it rebuilds git packs;
// an init older than the question (no features built-in: it exits 127)
// gets the plain form, and that is not an error.
func TestGuestUntarFeatures(t *testing.T) {
	signer := func() ssh.Signer {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	host, client := signer(), signer()
	reaper := guestinit.NewReaper(false, nil)
	defer reaper.Close()
	srv, err := guestinit.NewServer(guestinit.ServerConfig{
		HostKey: host, AuthorizedKeys: []ssh.PublicKey{client.PublicKey()}, Reaper: reaper,
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := guest.Dial(ctx, guest.Target{Addr: l.Addr().String(), HostKey: host.PublicKey(), Signer: client, Dial: d.DialContext})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	opt, err := guestUntarFeatures(ctx, c, workspace.GuestFeaturesArgv())
	if err != nil || !opt.GitPacks || !opt.Zstd {
		t.Errorf("this init: %+v, %v; want GitPacks and Zstd", opt, err)
	}
	old := []string{guestinit.InitPath, "no-such-built-in"} // what an older init answers
	opt, err = guestUntarFeatures(ctx, c, old)
	if err != nil || opt != (workspace.PackOptions{}) {
		t.Errorf("an older init: %+v, %v; want nothing and no error", opt, err)
	}
}
