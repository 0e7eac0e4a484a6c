package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/qemu"
)

// procStat returns the fields of /proc/PID/stat from the third on (state,
// ppid, ...): the command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so fields are counted after the last ')'.
func procStat(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(fields))
	}
	return fields, nil
}

// procStartTime is when pid started, in clock ticks since boot (field 22
// of /proc/PID/stat): with the PID, it names one process for the
// lifetime of the host, so a recycled PID is told apart.
func procStartTime(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// procCmdline is pid's argv.
func procCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(data) == 0 {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00"), nil
}

// procExe is the executable pid runs; a binary replaced since it started
// (a package upgrade) still counts as itself.
func procExe(pid int) (string, error) {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return strings.TrimSuffix(exe, " (deleted)"), err
}

// vmmIdentity records what proves, later, that pid is still the VMM the
// daemon launched: its start time and executable. Read once the VMM
// answers (it has exec'd from nsenter into itself by then).
func vmmIdentity(pid int) (start uint64, exe string) {
	start, _ = procStartTime(pid)
	exe, _ = procExe(pid)
	return start, exe
}

// verifyVMM checks that h.PID is still the VMM the daemon launched for VM
// id: alive, started when recorded, running the recorded executable, with
// the VM's id on its command line. A recycled PID fails.
func verifyVMM(h *vmHandles, id string) error {
	if h.PID <= 0 {
		return errors.New("no VMM recorded")
	}
	start, err := procStartTime(h.PID)
	if err != nil {
		return fmt.Errorf("pid %d: %w", h.PID, err)
	}
	if h.PIDStart != 0 && start != h.PIDStart {
		return fmt.Errorf("pid %d started at tick %d, the VMM at %d: a recycled pid", h.PID, start, h.PIDStart)
	}
	if exe, err := procExe(h.PID); err != nil {
		return fmt.Errorf("pid %d: %w", h.PID, err)
	} else if h.VMMExe != "" && filepath.Clean(exe) != filepath.Clean(h.VMMExe) {
		return fmt.Errorf("pid %d runs %s, the VMM was %s", h.PID, exe, h.VMMExe)
	}
	if !isOurVMM(h.PID, id) {
		return fmt.Errorf("pid %d does not name vm %s on its command line", h.PID, id)
	}
	return nil
}

// isOurVMM reports whether pid runs a VMM for VM id: its command line
// names the id (QEMU's -name guest=banger-ID, Firecracker's --id ID).
func isOurVMM(pid int, id string) bool {
	argv, err := procCmdline(pid)
	if err != nil {
		return false
	}
	got, ok := vmIDFromArgv(argv)
	return ok && got == id
}

// adoptedProc is a VMM a previous daemon started: not this daemon's
// child, so it is watched through a pidfd and signalled through it (no
// recycled-PID race), and asked to power off through its control socket.
type adoptedProc struct {
	pid       int
	powerdown func(ctx context.Context) error
	done      chan struct{}

	mu    sync.Mutex
	pidfd int // -1 once closed
}

// adoptVMM opens a pidfd on pid and watches it until the process exits
// or ctx (the daemon's) ends.
func adoptVMM(ctx context.Context, pid int, vmm, sock string) (*adoptedProc, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	p := &adoptedProc{pid: pid, pidfd: fd, done: make(chan struct{})}
	switch vmm {
	case "firecracker":
		p.powerdown = func(ctx context.Context) error {
			c := fcproc.NewClient(sock)
			defer c.Close()
			return c.Action(ctx, fcproc.ActionSendCtrlAltDel)
		}
	default:
		p.powerdown = func(ctx context.Context) error { return qemu.SendCtrlAltDel(ctx, sock) }
	}
	go p.watch(ctx)
	return p, nil
}

// watch polls the pidfd (readable once the process exits) in short
// slices, so that it also ends with the daemon.
func (p *adoptedProc) watch(ctx context.Context) {
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, 200)
		if err == unix.EINTR {
			continue
		}
		if n > 0 || err != nil {
			close(p.done)
			break
		}
	}
	p.mu.Lock()
	unix.Close(p.pidfd)
	p.pidfd = -1
	p.mu.Unlock()
}

func (p *adoptedProc) PID() int              { return p.pid }
func (p *adoptedProc) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL through the pidfd; a process already gone is not an
// error.
func (p *adoptedProc) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return nil
	}
	err := unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// Shutdown asks the guest to power off and waits up to grace, then kills
// the VMM and waits for it to go.
func (p *adoptedProc) Shutdown(ctx context.Context, grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if grace > 0 {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.powerdown(actx)
		cancel()
		if err == nil {
			select {
			case <-p.done:
				return nil
			case <-time.After(grace):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if err := p.Kill(); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("vmm pid %d: waiting after SIGKILL: %w", p.pid, ctx.Err())
	}
}

// parseHostKey reads back a host key recorded in authorized_keys form.
func parseHostKey(s string) (ssh.PublicKey, error) {
	if s == "" {
		return nil, errors.New("no host key recorded")
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	return k, err
}

var _ vmProcess = (*adoptedProc)(nil)
