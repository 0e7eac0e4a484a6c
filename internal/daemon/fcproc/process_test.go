package fcproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/errdefs"
)

// fakeConfig is a Config whose Binary is this test binary acting as
// Firecracker in mode (see fakeFirecracker), its files in a temp dir.
func fakeConfig(t *testing.T, mode string) Config {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeFCEnv, mode)
	// A -race test binary otherwise lingers 1 s in exit.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	dir := t.TempDir()
	return Config{
		ID:         "fake-" + mode,
		Binary:     self,
		APISocket:  filepath.Join(dir, "fc.sock"),
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

// startFake starts cfg and kills the process when the test ends.
func startFake(t *testing.T, cfg Config) *Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
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

func procArgv(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		t.Fatalf("reading pid %d's command line: %v", pid, err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func TestStartConfigureShutdown(t *testing.T) {
	cfg := fakeConfig(t, "poweroff")
	start := time.Now()
	p := startFake(t, cfg)
	t.Logf("Start (API answers) took %v", time.Since(start).Round(time.Millisecond))

	ctx := context.Background()
	info, err := p.Info(ctx)
	if err != nil || info.ID != cfg.ID || info.State != StateNotStarted {
		t.Fatalf("Info = %+v, %v; want id %s, Not started", info, err, cfg.ID)
	}
	if id, ok := IDFromArgv(procArgv(t, p.PID())); !ok || id != cfg.ID {
		t.Errorf("IDFromArgv(/proc/%d/cmdline) = %q, %v; want %q", p.PID(), id, ok, cfg.ID)
	}
	if pgid, err := syscall.Getpgid(p.PID()); err != nil || pgid != p.PID() {
		t.Errorf("process group %d (%v), want its own (%d)", pgid, err, p.PID())
	}
	if err := p.Configure(ctx, goodMachine()); err != nil {
		t.Fatal(err)
	}
	if info, err := p.Info(ctx); err != nil || info.State != StateRunning {
		t.Fatalf("after Configure: Info = %+v, %v; want Running", info, err)
	}

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ended, err := p.Shutdown(sctx, 5*time.Second)
	if err != nil || ended != EndedByGuest {
		t.Errorf("Shutdown = %q, %v; want %q", ended, err, EndedByGuest)
	}
	if code, err := p.Wait(); code != 0 || err != nil {
		t.Errorf("Wait = %d, %v; want 0", code, err)
	}
	console, _ := os.ReadFile(cfg.ConsoleLog)
	if !strings.Contains(string(console), "fake firecracker: mode poweroff id "+cfg.ID) {
		t.Errorf("console log %q lacks the process's stdout", console)
	}
	if ended, err := p.Shutdown(ctx, time.Second); ended != EndedBefore || err != nil {
		t.Errorf("second Shutdown = %q, %v; want %q", ended, err, EndedBefore)
	}
}

func TestShutdownEscalates(t *testing.T) {
	tests := []struct {
		mode      string
		configure bool
		want      Ending
		code      int
		maxTook   time.Duration
	}{
		// The guest ignores ctrl-alt-delete: SIGTERM after the grace period.
		{"ignore-cad", true, EndedByTerm, -1, 2 * time.Second},
		// Before InstanceStart Firecracker refuses SendCtrlAltDel: no grace period.
		{"ignore-cad", false, EndedByTerm, -1, 400 * time.Millisecond},
		// Firecracker ignores SIGTERM too: SIGKILL.
		{"stubborn", true, EndedByKill, -1, 6 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.mode+"/configured="+strconv.FormatBool(tt.configure), func(t *testing.T) {
			p := startFake(t, fakeConfig(t, tt.mode))
			if tt.configure {
				if err := p.Configure(context.Background(), goodMachine()); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			ended, err := p.Shutdown(ctx, 300*time.Millisecond)
			took := time.Since(start)
			if err != nil || ended != tt.want {
				t.Errorf("Shutdown = %q, %v; want %q", ended, err, tt.want)
			}
			if code, err := p.Wait(); code != tt.code || err == nil {
				t.Errorf("Wait = %d, %v; want %d and an error", code, err, tt.code)
			}
			if took > tt.maxTook {
				t.Errorf("Shutdown took %v, more than %v", took, tt.maxTook)
			}
			t.Logf("Shutdown took %v", took.Round(time.Millisecond))
		})
	}
}

func TestShutdownContextEnds(t *testing.T) {
	p := startFake(t, fakeConfig(t, "ignore-cad"))
	if err := p.Configure(context.Background(), goodMachine()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	ended, err := p.Shutdown(ctx, time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) || ended != EndedByGuest {
		t.Errorf("Shutdown = %q, %v; want the deadline while waiting for the guest", ended, err)
	}
	if p.Exited() {
		t.Error("Shutdown killed the process although its context ended first")
	}
}

func TestStartFailures(t *testing.T) {
	t.Run("exits early", func(t *testing.T) {
		cfg := fakeConfig(t, "exit-early")
		_, err := Start(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), "FailedToBindSocket") {
			t.Errorf("error %v: want the process's own message", err)
		}
	})
	t.Run("never answers", func(t *testing.T) {
		cfg := fakeConfig(t, "no-api")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := Start(ctx, cfg)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v: want the start-up deadline", err)
		}
	})
	t.Run("missing binary", func(t *testing.T) {
		cfg := fakeConfig(t, "poweroff")
		cfg.Binary = filepath.Join(t.TempDir(), "firecracker")
		_, err := Start(context.Background(), cfg)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("error %v: want ErrUnavailable", err)
		}
	})
	t.Run("missing socket directory", func(t *testing.T) {
		cfg := fakeConfig(t, "poweroff")
		cfg.APISocket = filepath.Join(t.TempDir(), "no", "fc.sock")
		_, err := Start(context.Background(), cfg)
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("error %v: want ErrNotFound", err)
		}
	})
	t.Run("missing namespace", func(t *testing.T) {
		cfg := fakeConfig(t, "poweroff")
		cfg.NetNS = "/nonexistent/netns"
		_, err := Start(context.Background(), cfg)
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("error %v: want ErrNotFound", err)
		}
	})
	t.Run("socket path is a file", func(t *testing.T) {
		cfg := fakeConfig(t, "poweroff")
		os.WriteFile(cfg.APISocket, []byte("x"), 0o644)
		_, err := Start(context.Background(), cfg)
		if !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Errorf("error %v: want ErrAlreadyExists", err)
		}
	})
}

func TestStartSocketInUse(t *testing.T) {
	cfg := fakeConfig(t, "poweroff")
	first := startFake(t, cfg)
	_, err := Start(context.Background(), cfg)
	if !errors.Is(err, errdefs.ErrBusy) {
		t.Errorf("second Start on the same socket: %v; want ErrBusy", err)
	}
	if first.Exited() {
		t.Error("the first process died")
	}
}

func TestStartReplacesStaleSocket(t *testing.T) {
	cfg := fakeConfig(t, "poweroff")
	ln, err := net.Listen("unix", cfg.APISocket)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // a dead VMM's socket file stays behind
	p := startFake(t, cfg)
	if _, err := p.Info(context.Background()); err != nil {
		t.Errorf("Info on the new socket: %v", err)
	}
}

// TestStartNotTiedToContext cancels the start-up context as soon as Start
// returns: the process must live on.
func TestStartNotTiedToContext(t *testing.T) {
	cfg := fakeConfig(t, "poweroff")
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Start(ctx, cfg)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); p.Wait() })
	time.Sleep(100 * time.Millisecond)
	if p.Exited() {
		t.Fatal("the process exited when Start's context was cancelled")
	}
	if _, err := p.Info(context.Background()); err != nil {
		t.Errorf("Info: %v", err)
	}
}

func TestWaitFromManyGoroutines(t *testing.T) {
	p := startFake(t, fakeConfig(t, "poweroff"))
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = p.Wait()
			<-p.Done()
		}()
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, c := range codes {
		if c != -1 {
			t.Errorf("waiter %d got %d, want -1", i, c)
		}
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill after exit: %v", err)
	}
	if syscall.Kill(p.PID(), 0) != syscall.ESRCH {
		t.Errorf("pid %d still exists after Wait", p.PID())
	}
}

// TestStartInNetNS runs the fake through nsenter in a namespace the test
// makes: PID must be the fake itself, inside the namespace. Nothing boots
// and nothing is sent anywhere; it needs root for `ip netns`.
func TestStartInNetNS(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the network-namespace test in -short mode")
	}
	if os.Getuid() != 0 {
		t.Skip("skipping: creating a network namespace needs root")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed", tool)
		}
	}
	b := make([]byte, 4)
	rand.Read(b)
	ns := "bgf-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", ns, err, out)
		}
	})
	cfg := fakeConfig(t, "poweroff")
	cfg.NetNS = ns
	p := startFake(t, cfg)
	if argv := procArgv(t, p.PID()); argv[0] != cfg.Binary {
		t.Errorf("pid %d runs %q, want the fake (nsenter must exec it)", p.PID(), argv)
	}
	var nsSt, procSt syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", ns), &nsSt); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join("/proc", strconv.Itoa(p.PID()), "ns", "net"), &procSt); err != nil {
		t.Fatal(err)
	}
	if nsSt.Ino != procSt.Ino || nsSt.Dev != procSt.Dev {
		t.Errorf("pid %d is not in namespace %s", p.PID(), ns)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Configure(ctx, goodMachine()); err != nil {
		t.Fatal(err)
	}
	if ended, err := p.Shutdown(ctx, 5*time.Second); ended != EndedByGuest || err != nil {
		t.Errorf("Shutdown = %q, %v", ended, err)
	}
}
