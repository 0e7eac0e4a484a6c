package daemon

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// pidFile is the daemon's single-instance guard: ROOT/banger.pid, held
// with an exclusive flock for the daemon's whole life. The kernel drops the
// lock when the process dies, so a stale file from a crash never blocks a
// restart, and a second daemon on the same root fails without touching
// anything of the first.
type pidFile struct {
	path string
	f    *os.File
}

func acquirePIDFile(path string) (*pidFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open pid file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			other := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
					other = fmt.Sprintf("pid %d", pid)
				}
			}
			return nil, fmt.Errorf("another banger daemon (%s) is already running on this root (it holds %s); stop it first or use another --root: %w", other, path, errdefs.ErrBusy)
		}
		return nil, fmt.Errorf("lock pid file %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("truncate pid file: %w", err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write pid file: %w", err)
	}
	return &pidFile{path: path, f: f}, nil
}

// release removes the file, then drops the lock. Removing first means a
// new daemon that wins the lock always writes a fresh file.
func (p *pidFile) release() error {
	if p == nil || p.f == nil {
		return nil
	}
	err := os.Remove(p.path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	p.f = nil
	return err
}
