package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"banger/internal/errdefs"
	"banger/internal/system"
)

// qmpPoll is how often Start tries the QMP socket while QEMU starts.
const qmpPoll = 10 * time.Millisecond

// Start validates cfg, starts QEMU and returns once QEMU answers on its QMP
// socket. ctx bounds only that start-up: if it ends first, or QEMU exits
// first, QEMU is killed and reaped and the error says why (with the end of
// QEMU's output). The running QEMU is tied to no context; stop it with
// Shutdown or Kill.
//
// Start fills what cfg leaves empty: Binary (DefaultBinary), Accel (KVM
// when KVMUsable, else TCG) and, under TCG, TSCkHz (HostTSCkHz).
func Start(ctx context.Context, cfg Config) (*Process, error) {
	cfg = cfg.withDefaults()
	if cfg.Accel == "" {
		cfg.Accel = AccelTCG
		if KVMUsable() {
			cfg.Accel = AccelKVM
		}
	}
	if kernelPart, _ := splitInitArgs(cfg.Cmdline); cfg.Accel == AccelTCG && cfg.TSCkHz == 0 && !hasParam(kernelPart, "tsc_early_khz") {
		khz, err := HostTSCkHz()
		if err != nil {
			return nil, fmt.Errorf("starting VM %s under TCG: %w", cfg.ID, err)
		}
		cfg.TSCkHz = khz
	}
	argv, err := Argv(cfg)
	if err != nil {
		return nil, err
	}
	if err := checkHost(ctx, cfg); err != nil {
		return nil, fmt.Errorf("starting VM %s: %w", cfg.ID, err)
	}

	p := &Process{id: cfg.ID, argv: argv, sock: cfg.QMPSocket, done: make(chan struct{})}
	p.out = &system.TailBuffer{}
	var logFile *os.File
	if cfg.LogFile != "" {
		logFile, err = os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("starting VM %s: %w", cfg.ID, err)
		}
		defer logFile.Close() // QEMU holds its own copy
		p.out.Path = cfg.LogFile
		if st, err := logFile.Stat(); err == nil {
			p.out.From = st.Size()
		}
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	for _, n := range cfg.NICs {
		if n.File != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, n.File) // in Argv's fd order
		}
	}
	if logFile != nil {
		cmd.Stdout, cmd.Stderr = logFile, logFile // QEMU writes the file itself
	} else {
		cmd.Stdout, cmd.Stderr = p.out, p.out
	}
	// Its own process group: a signal to the daemon's terminal must not
	// reach the VM. No Pdeathsig: QEMU outlives a daemon restart.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting VM %s: %s: %w", cfg.ID, argv[0], err)
	}
	p.cmd = cmd
	go p.reap()

	qmp, err := p.waitQMP(ctx, cfg.QMPSocket)
	if err != nil {
		p.cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("starting VM %s: %w", cfg.ID, err)
	}
	if !p.keepQMP(qmp) {
		// QEMU exited right after answering; Wait tells how.
		qmp.Close()
	}
	return p, nil
}

// checkHost fails early, with a clear error, on what would otherwise be a
// line in QEMU's output: a missing file, namespace or tool, or a QMP
// socket another process still serves.
func checkHost(ctx context.Context, cfg Config) error {
	files := []struct{ what, path string }{{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}}
	for i, d := range cfg.Disks {
		files = append(files, struct{ what, path string }{fmt.Sprintf("disk %d", i), d.Path})
	}
	if cfg.NetNS != "" {
		files = append(files, struct{ what, path string }{"network namespace", netNSPath(cfg.NetNS)})
		if _, err := exec.LookPath("nsenter"); err != nil {
			return fmt.Errorf("nsenter (util-linux) is needed to run QEMU in network namespace %s: %w: %w", cfg.NetNS, err, errdefs.ErrUnavailable)
		}
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s %s does not exist: %w", f.what, f.path, errdefs.ErrNotFound)
			}
			return fmt.Errorf("%s: %w", f.what, err)
		}
	}
	if _, err := exec.LookPath(cfg.Binary); err != nil {
		return fmt.Errorf("QEMU %s: %w (install Debian's qemu-system-x86): %w", cfg.Binary, err, errdefs.ErrUnavailable)
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if c, err := d.DialContext(dctx, "unix", cfg.QMPSocket); err == nil {
		c.Close()
		return fmt.Errorf("QMP socket %s is served by another process (is this VM already running?): %w", cfg.QMPSocket, errdefs.ErrBusy)
	}
	return nil
}

// waitQMP dials the QMP socket until QEMU answers, QEMU exits or ctx ends.
func (p *Process) waitQMP(ctx context.Context, sock string) (*QMPClient, error) {
	tick := time.NewTicker(qmpPoll)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			c, err := DialQMP(ctx, sock)
			if err == nil {
				return c, nil
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("waiting for QEMU's QMP socket: %w", context.Cause(ctx))
			}
		}
		select {
		case <-p.done:
			return nil, p.earlyExitErr()
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for QEMU's QMP socket: %w", context.Cause(ctx))
		case <-tick.C:
		}
	}
}

func (p *Process) earlyExitErr() error {
	msg := strings.TrimSpace(p.out.Tail())
	if msg == "" {
		msg = "(no output)"
	}
	return fmt.Errorf("QEMU exited during start-up (%s): %s", p.cmd.ProcessState, msg)
}
