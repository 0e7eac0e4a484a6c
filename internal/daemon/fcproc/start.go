package fcproc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/errdefs"
	"banger/internal/system"
)

// Polling of the API socket while Firecracker starts.
const (
	apiPoll        = 10 * time.Millisecond
	apiPollTimeout = time.Second // one GET / attempt
)

// Start validates cfg, starts Firecracker and returns once its API socket
// answers GET /. ctx bounds only that start-up: if it ends first, or
// Firecracker exits first, Firecracker is killed and reaped and the error
// says why (with the end of its output). The running Firecracker is tied
// to no context; stop it with Shutdown or Kill.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	cfg = cfg.withDefaults()
	argv, err := Argv(cfg)
	if err != nil {
		return nil, err
	}
	sock := cfg.HostAPISocket()
	if err := checkHost(ctx, cfg, sock); err != nil {
		return nil, fmt.Errorf("starting VM %s: %w", cfg.ID, err)
	}

	p := &Process{id: cfg.ID, argv: argv, sock: sock, client: NewClient(sock), done: make(chan struct{})}
	p.out = &system.TailBuffer{}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if cfg.ConsoleLog != "" {
		f, err := os.OpenFile(cfg.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
		if err != nil {
			return nil, fmt.Errorf("starting VM %s: console log: %w", cfg.ID, err)
		}
		defer f.Close() // Firecracker holds its own copy
		p.out.Path = cfg.ConsoleLog
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		cmd.Stdout, cmd.Stderr = p.out, p.out
	}
	// Its own process group: a signal to the daemon's terminal must not
	// reach the VM. No Pdeathsig: Firecracker outlives a daemon restart.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Without a console log its output comes through a pipe; should a
	// child of Firecracker keep the pipe open, Wait must not hang on it.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting VM %s: %s: %w", cfg.ID, argv[0], err)
	}
	p.cmd = cmd
	go p.reap()

	if err := p.waitAPI(ctx); err != nil {
		p.cmd.Process.Kill()
		<-p.done
		p.client.Close()
		return nil, fmt.Errorf("starting VM %s: %w", cfg.ID, err)
	}
	return p, nil
}

// checkHost fails early, with a clear error, on what would otherwise be a
// line in Firecracker's output: a missing binary, namespace or socket
// directory, or an API socket another process still serves. A stale
// socket file is removed (Firecracker cannot bind over it).
func checkHost(ctx context.Context, cfg Config, sock string) error {
	bins := []struct{ what, path, pkg string }{{"firecracker", cfg.Binary, "https://github.com/firecracker-microvm/firecracker/releases"}}
	switch {
	case cfg.Jailer != nil:
		bins = append(bins, struct{ what, path, pkg string }{"jailer", cfg.Jailer.Binary, "the Firecracker release archive"})
	case cfg.NetNS != "":
		bins = append(bins, struct{ what, path, pkg string }{"nsenter", "nsenter", "Debian package util-linux"})
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b.path); err != nil {
			return fmt.Errorf("%s %s: %w (install it: %s): %w", b.what, b.path, err, b.pkg, errdefs.ErrUnavailable)
		}
	}
	if cfg.NetNS != "" {
		if _, err := os.Stat(netNSPath(cfg.NetNS)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("network namespace %s does not exist: %w", cfg.NetNS, errdefs.ErrNotFound)
			}
			return fmt.Errorf("network namespace %s: %w", cfg.NetNS, err)
		}
	}

	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if c, err := d.DialContext(dctx, "unix", sock); err == nil {
		c.Close()
		return fmt.Errorf("API socket %s is served by another process (is this VM already running?): %w", sock, errdefs.ErrBusy)
	}
	if cfg.Jailer != nil {
		return nil // the jailer makes the jail; what is in it is the jailer's business
	}
	if st, err := os.Stat(filepath.Dir(sock)); err != nil || !st.IsDir() {
		return fmt.Errorf("the API socket's directory %s does not exist: %w", filepath.Dir(sock), errdefs.ErrNotFound)
	}
	st, err := os.Lstat(sock)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("API socket %s: %w", sock, err)
	case st.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("API socket path %s exists and is not a socket: %w", sock, errdefs.ErrAlreadyExists)
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the stale API socket: %w", err)
	}
	return nil
}

// waitAPI asks GET / until Firecracker answers, exits, or ctx ends.
func (p *Process) waitAPI(ctx context.Context) error {
	tick := time.NewTicker(apiPoll)
	defer tick.Stop()
	for {
		if _, err := os.Stat(p.sock); err == nil {
			actx, cancel := context.WithTimeout(ctx, apiPollTimeout)
			_, err := p.client.InstanceInfo(actx)
			cancel()
			if err == nil {
				return nil
			}
			if IsAPIError(err) {
				return fmt.Errorf("Firecracker answered GET / with an error: %w", err)
			}
		}
		select {
		case <-p.done:
			return p.earlyExitErr()
		case <-ctx.Done():
			return fmt.Errorf("waiting for Firecracker's API socket %s: %w", p.sock, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

func (p *Process) earlyExitErr() error {
	msg := strings.TrimSpace(p.out.Tail())
	if msg == "" {
		msg = "(no output)"
	}
	return fmt.Errorf("Firecracker exited during start-up (%s): %s", p.cmd.ProcessState, msg)
}
