package guestinit

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// UserKeysPath holds keys authorized after boot (`banger ssh-config` adds
// the user's own key there); it lives on the VM's disk, so the keys
// outlive a restart. The SSH server accepts these besides the daemon's.
const UserKeysPath = "/.banger/authorized_keys"

// BuiltinAuthorize appends one authorized_keys line to UserKeysPath:
// ["/.banger/init", "authorize", "ssh-ed25519 AAAA... comment"].
const BuiltinAuthorize = "authorize"

// authorizeKey validates line and appends it to path unless present.
func authorizeKey(path, line string) error {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return fmt.Errorf("not an authorized_keys line: %w", err)
	}
	if has, err := fileHasKey(path, key); err != nil {
		return err
	} else if has {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(bytes.TrimSpace(ssh.MarshalAuthorizedKey(key)), '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fileHasKey reports whether the authorized_keys file at path lists key.
// A missing file lists nothing.
func fileHasKey(path string, key ssh.PublicKey) (bool, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	want := key.Marshal()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err == nil && bytes.Equal(k.Marshal(), want) {
			return true, nil
		}
	}
	return false, sc.Err()
}
