// Package guest is the daemon's side of the guest channel: SSH to the
// guest init over the VM's network, with the host key the guest announced
// on its serial console and the client key the daemon provisioned.
package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/errdefs"
)

// HostKeyMarker starts the console line on which the guest init announces
// its SSH host key (authorized_keys format).
const HostKeyMarker = "BANGER-HOSTKEY "

// DialFunc opens a TCP connection to the guest; the daemon's dialer does it
// inside the VMs' network namespace when one is configured.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Target is how to reach one guest.
type Target struct {
	Addr    string // "IP:22"
	HostKey ssh.PublicKey
	Signer  ssh.Signer // the daemon's client key for this VM
	Dial    DialFunc
}

// ciphers is the client's cipher preference: ChaCha20-Poly1305 first, as
// OpenSSH's client has it. Under software emulation (QEMU TCG, no KVM)
// the guest's decryption is what limits every byte sent to it, and there
// ChaCha20-Poly1305 moves 14 MiB/s where AES-128-GCM moves 9.3
// (bench/README.md, "SSH cipher"); with KVM either is far faster than
// the guest's disk.
var ciphers = []string{
	"chacha20-poly1305@openssh.com",
	"aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
	"aes128-ctr", "aes192-ctr", "aes256-ctr",
}

// Dial opens an SSH client connection to the guest.
func Dial(ctx context.Context, t Target) (*ssh.Client, error) {
	if t.HostKey == nil || t.Signer == nil || t.Dial == nil {
		return nil, fmt.Errorf("guest %s: host key, client key and dialer are required: %w", t.Addr, errdefs.ErrInvalidArgument)
	}
	conn, err := t.Dial(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(t.Signer)},
		HostKeyCallback: ssh.FixedHostKey(t.HostKey),
		Timeout:         10 * time.Second,
	}
	cfg.Ciphers = ciphers
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, t.Addr, cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh handshake with guest %s: %w", t.Addr, err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// WaitForSSH dials until the guest answers or ctx ends.
func WaitForSSH(ctx context.Context, t Target, every time.Duration) (*ssh.Client, error) {
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := Dial(attempt, t)
		cancel()
		if err == nil {
			return c, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("guest %s did not answer SSH: %v: %w", t.Addr, last, ctx.Err())
		case <-time.After(every):
		}
	}
}

// WaitForHostKey follows the console log at path until the guest announces
// its host key, or ctx ends. exited, when it closes, means the VMM is gone
// and the key will never come.
func WaitForHostKey(ctx context.Context, path string, exited <-chan struct{}, every time.Duration) (ssh.PublicKey, error) {
	var off int64
	var partial string
	for {
		key, n, rest, err := scanForHostKey(path, off, partial)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if key != nil {
			return key, nil
		}
		off, partial = n, rest
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the guest announced no SSH host key on its console: %w", ctx.Err())
		case <-exited:
			// One last read: the key may have been written just before.
			if key, _, _, err := scanForHostKey(path, off, partial); err == nil && key != nil {
				return key, nil
			}
			return nil, fmt.Errorf("the VM exited before its init announced an SSH host key")
		case <-time.After(every):
		}
	}
}

// scanForHostKey reads the console from off, carrying an unfinished last
// line in partial, and returns the announced key if a whole marker line
// is there.
func scanForHostKey(path string, off int64, partial string) (ssh.PublicKey, int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, off, partial, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, off, partial, err
	}
	r := bufio.NewReaderSize(io.LimitReader(f, 16<<20), 64<<10)
	for {
		line, err := r.ReadString('\n')
		off += int64(len(line))
		if err != nil {
			// No newline yet: keep the fragment for the next read.
			return nil, off, partial + line, nil
		}
		line = partial + line
		partial = ""
		if i := strings.Index(line, HostKeyMarker); i >= 0 {
			text := strings.TrimSpace(strings.TrimRight(line[i+len(HostKeyMarker):], "\r\n"))
			key, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(text))
			if perr != nil {
				return nil, off, "", fmt.Errorf("the guest announced a malformed host key: %w", perr)
			}
			return key, off, "", nil
		}
	}
}
