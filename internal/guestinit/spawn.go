package guestinit

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// spawnSpec describes a child process. The init never uses os/exec for
// children: their status belongs to the Reaper.
type spawnSpec struct {
	path  string
	argv  []string
	env   []string
	dir   string
	cred  *syscall.Credential // nil: run as the init does
	files [3]*os.File         // stdin, stdout, stderr
	// tty makes the child a session leader with files[0] as its controlling
	// terminal; otherwise it gets its own session (newSession) or at least
	// its own process group, so signals reach what it starts.
	tty        bool
	newSession bool
}

// process is a started child.
type process struct {
	pid  int
	done <-chan unix.WaitStatus

	mu     sync.Mutex
	exited bool // guarded by mu
}

// spawn starts s through r.
func spawn(r *Reaper, s spawnSpec) (*process, error) {
	sys := &syscall.SysProcAttr{Credential: s.cred}
	switch {
	case s.tty:
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	case s.newSession:
		sys.Setsid = true
	default:
		sys.Setpgid = true
	}
	attr := &syscall.ProcAttr{
		Dir:   s.dir,
		Env:   s.env,
		Files: []uintptr{s.files[0].Fd(), s.files[1].Fd(), s.files[2].Fd()},
		Sys:   sys,
	}
	pid, done, err := r.Start(func() (int, error) { return syscall.ForkExec(s.path, s.argv, attr) })
	runtime.KeepAlive(s.files)
	if err != nil {
		return nil, err
	}
	return &process{pid: pid, done: done}, nil
}

// wait returns the child's status; ok is false if it was lost.
func (p *process) wait() (ws unix.WaitStatus, ok bool) {
	ws, ok = <-p.done
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	return ws, ok
}

// signal sends sig to the child's process group, unless it has been
// waited for (its PID may be reused by then).
func (p *process) signal(sig unix.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		_ = unix.Kill(-p.pid, sig)
	}
}

// errNotFound and errNotExecutable map to exit statuses 127 and 126, as in
// a shell.
var (
	errNotFound      = errors.New("command not found")
	errNotExecutable = errors.New("permission denied")
)

// lookPath finds file like execvp(3), in the colon-separated path list.
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		return file, checkExecutable(file)
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", errNotFound
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return errNotFound
	case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
		return errNotExecutable
	}
	return nil
}

// exitCodeFor maps a failure to start a command to a shell's exit status.
func exitCodeFor(err error) int {
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, unix.ENOENT):
		return 127
	case errors.Is(err, errNotExecutable), errors.Is(err, unix.EACCES), errors.Is(err, unix.ENOEXEC):
		return 126
	}
	return 1
}

// envGet returns the value of key in env (the last one wins).
func envGet(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// mergeEnv appends layers to base; a later value for a key replaces an
// earlier one in place.
func mergeEnv(base []string, layers ...[]string) []string {
	out := append([]string(nil), base...)
	index := make(map[string]int, len(out))
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		index[k] = i
	}
	for _, layer := range layers {
		for _, kv := range layer {
			k, _, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				continue
			}
			if i, seen := index[k]; seen {
				out[i] = kv
				continue
			}
			index[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}
