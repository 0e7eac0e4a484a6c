package guest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/guestinit"
)

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
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

func TestWaitForHostKeyFromConsole(t *testing.T) {
	host := newSigner(t)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(host.PublicKey())))
	console := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(console, []byte("[    1.0] booting\nbanger-init: starting\nBANGER-HOST"), 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		// The marker line arrives in two writes, as a serial console does.
		time.Sleep(50 * time.Millisecond)
		f, _ := os.OpenFile(console, os.O_APPEND|os.O_WRONLY, 0)
		f.WriteString("KEY " + line[:20])
		time.Sleep(50 * time.Millisecond)
		f.WriteString(line[20:] + "\r\nBANGER-READY 12\n")
		f.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key, err := WaitForHostKey(ctx, console, nil, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key.Marshal(), host.PublicKey().Marshal()) {
		t.Fatal("WaitForHostKey returned another key")
	}
}

func TestWaitForHostKeyEnds(t *testing.T) {
	console := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(console, []byte("no key here\n"), 0o644)
	exited := make(chan struct{})
	close(exited)
	if _, err := WaitForHostKey(context.Background(), console, exited, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("VMM gone: %v, want an error saying the VM exited", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := WaitForHostKey(ctx, console, nil, 10*time.Millisecond); err == nil {
		t.Error("no key and ctx ended: no error")
	}
	os.WriteFile(console, []byte("BANGER-HOSTKEY ssh-ed25519 not-base64!\n"), 0o644)
	if _, err := WaitForHostKey(context.Background(), console, nil, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("malformed key: %v", err)
	}
}

// TestDialAndExec runs the guest init's SSH server in-process on loopback
// and drives it through this package, as the daemon does.
func TestDialAndExec(t *testing.T) {
	host, client, stranger := newSigner(t), newSigner(t), newSigner(t)
	srv, err := guestinit.NewServer(guestinit.ServerConfig{
		HostKey:        host,
		AuthorizedKeys: []ssh.PublicKey{client.PublicKey()},
		Reaper:         guestinit.NewReaper(false, nil),
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
	var d net.Dialer
	target := Target{Addr: l.Addr().String(), HostKey: host.PublicKey(), Signer: client, Dial: d.DialContext}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := WaitForSSH(ctx, target, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out, errb bytes.Buffer
	s, err := Start(c, Command{Command: guestinit.EncodeArgv([]string{"/bin/sh", "-c", "echo out; echo err >&2; exit 5"}), Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	code, sig, err := s.Wait()
	if err != nil || code != 5 || sig != "" || out.String() != "out\n" || errb.String() != "err\n" {
		t.Fatalf("exec: code %d sig %q err %v stdout %q stderr %q", code, sig, err, out.String(), errb.String())
	}
	s, err = Start(c, Command{Command: guestinit.EncodeArgv([]string{"/bin/sleep", "30"})})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	s.Signal("TERM")
	if code, sig, err := s.Wait(); err != nil || sig != "TERM" || code != 128+15 {
		t.Fatalf("signalled: code %d sig %q err %v, want 143 TERM", code, sig, err)
	}

	// A wrong host key or an unknown client key is refused.
	wrongHost := target
	wrongHost.HostKey = stranger.PublicKey()
	if c2, err := Dial(ctx, wrongHost); err == nil {
		c2.Close()
		t.Error("dial with the wrong host key succeeded")
	}
	wrongClient := target
	wrongClient.Signer = stranger
	if c3, err := Dial(ctx, wrongClient); err == nil {
		c3.Close()
		t.Error("dial with an unauthorised client key succeeded")
	}
}

// The client's cipher list names only ciphers x/crypto supports (an
// unknown one would fail every handshake) and puts ChaCha20-Poly1305
// first: it is what is fastest for a guest under software emulation.
func TestCipherPreference(t *testing.T) {
	if ciphers[0] != "chacha20-poly1305@openssh.com" {
		t.Errorf("first cipher %q, want chacha20-poly1305@openssh.com", ciphers[0])
	}
	for _, c := range ciphers {
		if !slices.Contains(ssh.SupportedAlgorithms().Ciphers, c) {
			t.Errorf("cipher %q is not among x/crypto's supported ciphers", c)
		}
	}
}
