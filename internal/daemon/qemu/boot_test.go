package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testing/guestboot"
)

// These tests boot the real guest kernel under QEMU (TCG on a host
// without usable KVM). They need root and QEMU, and skip in -short.

// TestBootShutdown boots with a read-only root and a writable second disk,
// then stops the guest with Shutdown: ctrl-alt-delete must reach the
// guest init as SIGINT and the guest must power off, QEMU exiting 0.
func TestBootShutdown(t *testing.T) {
	requireBootHost(t)
	cfg := guestConfig(t, "boot-shutdown")
	data := filepath.Join(t.TempDir(), "data.raw")
	if err := os.WriteFile(data, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	cfg.Disks = append(cfg.Disks, Disk{Path: data})

	start := time.Now()
	p := startGuest(t, cfg)
	toQMP := time.Since(start)
	line := waitConsole(t, p, cfg.ConsoleLog, readyMarker)
	toReady := time.Since(start)
	t.Logf("guest: %s", line)
	for key, want := range map[string]string{"vda_ro": "1", "vdb_ro": "0", "mac": "none", "cad": "ok"} {
		if got := guestboot.Field(line, key); got != want {
			t.Errorf("guest reports %s=%s, want %s", key, got, want)
		}
	}

	const grace = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), grace+10*time.Second)
	defer cancel()
	stop := time.Now()
	ended, err := p.Shutdown(ctx, grace)
	took := time.Since(stop)
	if err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if ended != EndedByGuest {
		t.Errorf("Shutdown ended by %q, want %q (the guest did not power off within %v)", ended, EndedByGuest, grace)
	}
	if code, err := p.Wait(); code != 0 || err != nil {
		t.Errorf("QEMU exited %d, %v; want 0", code, err)
	}
	console, _ := os.ReadFile(cfg.ConsoleLog)
	if !strings.Contains(string(console), sigintMarker) {
		t.Errorf("the guest init never saw SIGINT; console:\n%s", guestboot.LastLines(string(console), 20))
	}
	if _, err := os.Stat(cfg.QMPSocket); err == nil {
		t.Errorf("QEMU left its QMP socket %s", cfg.QMPSocket)
	}
	t.Logf("timings: Start (QMP answers) %v, start -> %s %v, Shutdown (ctrl-alt-del -> exit) %v",
		toQMP.Round(time.Millisecond), readyMarker, toReady.Round(time.Millisecond), took.Round(time.Millisecond))
}

// TestBootKill boots with a start-up context that is cancelled as soon as
// Start returns (the guest must still come up), then kills QEMU.
func TestBootKill(t *testing.T) {
	requireBootHost(t)
	cfg := guestConfig(t, "boot-kill")
	cfg.PIDFile = filepath.Join(t.TempDir(), "qemu.pid")

	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	p, err := Start(ctx, cfg)
	cancel()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Kill(); p.Wait() })
	line := waitConsole(t, p, cfg.ConsoleLog, readyMarker)
	toReady := time.Since(start)
	t.Logf("guest: %s", line)

	pidb, err := os.ReadFile(cfg.PIDFile)
	if err != nil || strings.TrimSpace(string(pidb)) != strconv.Itoa(p.PID()) {
		t.Errorf("pid file holds %q (%v), PID() is %d", pidb, err, p.PID())
	}
	if argv := procArgv(t, p.PID()); argv != nil {
		if id, ok := IDFromArgv(argv); !ok || id != cfg.ID {
			t.Errorf("IDFromArgv(/proc/%d/cmdline) = %q, %v; want %q", p.PID(), id, ok, cfg.ID)
		}
	}

	kill := time.Now()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait()
	if code != -1 || err == nil {
		t.Errorf("Wait after Kill = %d, %v; want -1 and an error", code, err)
	}
	if syscall.Kill(p.PID(), 0) != syscall.ESRCH {
		t.Errorf("pid %d still exists after Wait", p.PID())
	}
	t.Logf("timings: start -> %s %v, Kill -> reaped %v", readyMarker, toReady.Round(time.Millisecond), time.Since(kill).Round(time.Millisecond))
}

// TestBootNICInNamespace gives the guest a NIC on a TAP inside a network
// namespace the test makes; QEMU runs in it through Config.NetNS. The
// guest's eth0 must have the configured MAC. Nothing is created in the
// host's namespace; the guest init never brings eth0 up.
func TestBootNICInNamespace(t *testing.T) {
	requireBootHost(t)
	if _, err := exec.LookPath("ip"); err != nil {
		skipOrFail(t, "ip is not installed (Debian package iproute2)")
	}
	ns := guestboot.NewNetNS(t, "bgq")
	const tap, mac = "bgqtap0", "02:42:ac:1e:00:07"
	guestboot.Run(t, "ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
	guestboot.Run(t, "ip", "-n", ns, "link", "set", tap, "up")

	cfg := guestConfig(t, "boot-nic")
	cfg.NetNS = ns
	cfg.NICs = []NIC{{TAP: tap, MAC: mac}}
	start := time.Now()
	p := startGuest(t, cfg)
	line := waitConsole(t, p, cfg.ConsoleLog, readyMarker)
	toReady := time.Since(start)
	t.Logf("guest: %s", line)
	if got := guestboot.Field(line, "mac"); got != mac {
		t.Errorf("guest eth0 MAC %q, want %q", got, mac)
	}

	// PID() is QEMU itself (nsenter exec'd it), in the namespace.
	var nsSt, procSt syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", ns), &nsSt); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join("/proc", strconv.Itoa(p.PID()), "ns", "net"), &procSt); err != nil {
		t.Fatal(err)
	}
	if nsSt.Ino != procSt.Ino || nsSt.Dev != procSt.Dev {
		t.Errorf("QEMU (pid %d) is not in namespace %s", p.PID(), ns)
	}
	if argv := procArgv(t, p.PID()); len(argv) > 0 && filepath.Base(argv[0]) != DefaultBinary {
		t.Errorf("pid %d runs %q, want QEMU", p.PID(), argv[0])
	}
	if err := exec.Command("ip", "link", "show", "dev", tap).Run(); err == nil {
		t.Errorf("a %s device exists in the host's namespace", tap)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if ended, err := p.Shutdown(ctx, 20*time.Second); err != nil || ended != EndedByGuest {
		t.Errorf("Shutdown = %q, %v; want %q", ended, err, EndedByGuest)
	}
	t.Logf("timings: start -> %s %v (with a NIC, in namespace %s)", readyMarker, toReady.Round(time.Millisecond), ns)
}

// TestRealQEMUFailsEarly runs the real QEMU on a disk it cannot open: Start
// must return QEMU's own complaint. It boots nothing and needs no root.
func TestRealQEMUFailsEarly(t *testing.T) {
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		skipOrFail(t, DefaultBinary+" is not installed (Debian package qemu-system-x86)")
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		ID:        "early",
		Kernel:    kernel,
		Cmdline:   BaseCmdline(),
		Disks:     []Disk{{Path: dir}}, // a directory, not an image
		Accel:     AccelTCG,
		TSCkHz:    1000000,
		QMPSocket: filepath.Join(dir, "qmp.sock"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Start(ctx, cfg)
	if err == nil {
		p.Kill()
		p.Wait()
		t.Fatal("Start succeeded")
	}
	t.Logf("Start: %v", err)
	if !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), DefaultBinary+":") {
		t.Errorf("error %q does not carry QEMU's own message", err)
	}
}

// procArgv reads /proc/PID/cmdline.
func procArgv(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		t.Errorf("reading pid %d's command line: %v", pid, err)
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}
