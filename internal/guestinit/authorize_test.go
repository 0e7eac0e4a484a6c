package guestinit

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestAuthorizeKey(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " user@host"
	path := filepath.Join(t.TempDir(), "authorized_keys")
	if has, err := fileHasKey(path, signer.PublicKey()); err != nil || has {
		t.Fatalf("missing file: %v %v", has, err)
	}
	for range 2 { // the second is a no-op
		if err := authorizeKey(path, line); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "ssh-ed25519"); n != 1 {
		t.Fatalf("file has %d keys, want 1:\n%s", n, data)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
	if has, err := fileHasKey(path, signer.PublicKey()); err != nil || !has {
		t.Fatalf("fileHasKey = %v %v after authorize", has, err)
	}
	for _, bad := range []string{"", "not a key", "ssh-ed25519 !!!", "ssh-ed25519 AAAA\nssh-rsa X"} {
		if err := authorizeKey(path, bad); err == nil {
			t.Errorf("authorize %q succeeded", bad)
		}
	}
}
