package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/errdefs"
)

// fakeConfig is a Config whose Binary is this test binary acting as QEMU
// in mode (see fakeQEMU). Its kernel and disk are empty files.
func fakeConfig(t *testing.T, mode string) Config {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeQEMUEnv, mode)
	// A -race test binary otherwise lingers 1 s in exit.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	dir := t.TempDir()
	for _, f := range []string{"vmlinux", "root.ext4"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Config{
		ID:        "fake-" + mode,
		Binary:    self,
		Kernel:    filepath.Join(dir, "vmlinux"),
		Cmdline:   BaseCmdline(),
		Disks:     []Disk{{Path: filepath.Join(dir, "root.ext4")}},
		Accel:     AccelTCG,
		TSCkHz:    1000000,
		QMPSocket: filepath.Join(dir, "qmp.sock"),
		PIDFile:   filepath.Join(dir, "pid"),
	}
}

// startFake starts cfg and kills the process when the test ends.
func startFake(t *testing.T, ctx context.Context, cfg Config) *Process {
	t.Helper()
	p, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		p.Kill()
		p.Wait()
	})
	return p
}

// gone reports whether no process has pid (it has exited and been reaped).
func gone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestStartEarlyExitReportsOutput(t *testing.T) {
	for _, withLog := range []bool{false, true} {
		t.Run("log file "+strconv.FormatBool(withLog), func(t *testing.T) {
			cfg := fakeConfig(t, "exit-early")
			if withLog {
				cfg.LogFile = filepath.Join(t.TempDir(), "qemu.log")
				if err := os.WriteFile(cfg.LogFile, []byte("an earlier run's output\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Start(testCtx(t), cfg)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			for _, want := range []string{"exited during start-up", "exit status 1", "Could not open '/x'", "VM fake-exit-early"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if withLog {
				if strings.Contains(err.Error(), "earlier run") {
					t.Errorf("error %q quotes an earlier run's output", err)
				}
				if b, _ := os.ReadFile(cfg.LogFile); !strings.Contains(string(b), "Could not open") {
					t.Errorf("log file lacks QEMU's output:\n%s", b)
				}
			}
		})
	}
}

func TestStartContextEndsBeforeQMP(t *testing.T) {
	cfg := fakeConfig(t, "no-qmp")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Start(ctx, cfg)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start: %v, want DeadlineExceeded", err)
	}
	if pid := readPID(t, cfg.PIDFile); !gone(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("the QEMU Start gave up on (pid %d) is still there", pid)
	}
}

// TestProcessOutlivesStartContext: the start-up context ending must not
// touch a started QEMU.
func TestProcessOutlivesStartContext(t *testing.T) {
	cfg := fakeConfig(t, "stubborn")
	ctx, cancel := context.WithCancel(context.Background())
	p := startFake(t, ctx, cfg)
	cancel()
	time.Sleep(200 * time.Millisecond)
	if p.Exited() {
		t.Fatalf("QEMU exited when Start's context ended: %v", p.Output())
	}
	if pid := readPID(t, cfg.PIDFile); pid != p.PID() {
		t.Errorf("PID() = %d, the process says %d", p.PID(), pid)
	}
	if pgid, err := syscall.Getpgid(p.PID()); err != nil || pgid != p.PID() {
		t.Errorf("process group %d (%v), want its own (%d)", pgid, err, p.PID())
	}
	if ret, err := p.QMP(testCtx(t), "query-status", nil); err != nil || !strings.Contains(string(ret), "running") {
		t.Errorf("query-status = %s, %v", ret, err)
	}
	var qe *QMPError
	if _, err := p.QMP(testCtx(t), "no-such-command", nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v, want a CommandNotFound *QMPError", err)
	}
	if !strings.Contains(p.Output(), "fake qemu: mode stubborn") {
		t.Errorf("Output() = %q", p.Output())
	}
}

func TestShutdownEscalates(t *testing.T) {
	const grace = 500 * time.Millisecond
	tests := []struct {
		mode     string
		want     Ending
		wantCode int
		maxTime  time.Duration
	}{
		{"poweroff", EndedByGuest, 0, grace},
		{"ignore-cad", EndedByQuit, 0, grace + quitWait},
		{"no-keyboard", EndedByQuit, 0, grace}, // no grace period to wait out
		{"stubborn", EndedByKill, -1, grace + quitWait + 2*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			p := startFake(t, testCtx(t), fakeConfig(t, tt.mode))
			// Many waiters, before and after the exit, see the same end.
			var wg sync.WaitGroup
			codes := make([]int, 4)
			for i := range codes {
				wg.Add(1)
				go func() { defer wg.Done(); codes[i], _ = p.Wait() }()
			}
			start := time.Now()
			ended, err := p.Shutdown(testCtx(t), grace)
			took := time.Since(start)
			if err != nil || ended != tt.want {
				t.Fatalf("Shutdown = %q, %v; want %q", ended, err, tt.want)
			}
			t.Logf("%s: ended by %s in %v", tt.mode, ended, took.Round(time.Millisecond))
			if took > tt.maxTime {
				t.Errorf("Shutdown took %v, want at most %v", took, tt.maxTime)
			}
			select {
			case <-p.Done():
			default:
				t.Fatal("Shutdown returned before QEMU was reaped")
			}
			wg.Wait()
			code, werr := p.Wait()
			for i, c := range codes {
				if c != code {
					t.Errorf("waiter %d saw %d, Wait says %d", i, c, code)
				}
			}
			if code != tt.wantCode || (code == 0) != (werr == nil) {
				t.Errorf("Wait = %d, %v; want %d", code, werr, tt.wantCode)
			}
			if !gone(p.PID()) {
				t.Errorf("pid %d still exists", p.PID())
			}
			if again, err := p.Shutdown(testCtx(t), time.Second); again != EndedBefore || err != nil {
				t.Errorf("second Shutdown = %q, %v; want %q", again, err, EndedBefore)
			}
			if err := p.Kill(); err != nil {
				t.Errorf("Kill after exit: %v", err)
			}
			if _, err := p.QMP(testCtx(t), "query-status", nil); !errors.Is(err, ErrQMPClosed) {
				t.Errorf("QMP after exit: %v, want ErrQMPClosed", err)
			}
		})
	}
}

func TestShutdownContextEnds(t *testing.T) {
	p := startFake(t, testCtx(t), fakeConfig(t, "stubborn"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ended, err := p.Shutdown(ctx, time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) || ended != EndedByGuest {
		t.Errorf("Shutdown = %q, %v; want the guest step and DeadlineExceeded", ended, err)
	}
	if p.Exited() {
		t.Errorf("Shutdown killed QEMU although its context ended first")
	}
}

func TestKill(t *testing.T) {
	p := startFake(t, testCtx(t), fakeConfig(t, "stubborn"))
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("not reaped 10 s after SIGKILL")
	}
	code, err := p.Wait()
	if code != -1 || err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Wait = %d, %v; want -1 and a 'killed' error", code, err)
	}
}

func TestStartRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(t *testing.T, c *Config)
		want error
	}{
		{"missing kernel", func(t *testing.T, c *Config) { c.Kernel = "/nonexistent/vmlinux" }, errdefs.ErrNotFound},
		{"missing disk", func(t *testing.T, c *Config) { c.Disks[0].Path = "/nonexistent/root.ext4" }, errdefs.ErrNotFound},
		{"missing network namespace", func(t *testing.T, c *Config) { c.NetNS = "bgq-does-not-exist" }, errdefs.ErrNotFound},
		{"missing binary", func(t *testing.T, c *Config) { c.Binary = "/nonexistent/qemu" }, errdefs.ErrUnavailable},
		{"invalid config", func(t *testing.T, c *Config) { c.Disks = nil }, errdefs.ErrInvalidArgument},
		{"QMP socket in use", func(t *testing.T, c *Config) {
			c.QMPSocket = fakeQMP(t, func(p *qmpPeer) {})
		}, errdefs.ErrBusy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fakeConfig(t, "poweroff")
			tt.edit(t, &cfg)
			p, err := Start(testCtx(t), cfg)
			if err == nil {
				p.Kill()
				p.Wait()
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Start: %v, want %v", err, tt.want)
			}
			if _, err := os.Stat(cfg.PIDFile); err == nil {
				t.Errorf("QEMU was started")
			}
		})
	}
}
