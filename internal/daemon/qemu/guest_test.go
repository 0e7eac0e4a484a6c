package qemu

// Helpers for the tests that boot a real guest. The kernel (through the
// cache test/kernelboot fills), the root image and the console reading
// come from internal/testing/guestkernel and guestboot; the guest init's
// source is this package's own.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"banger/internal/testing/guestboot"
)

const (
	// readyMarker starts the line the guest init prints once up.
	readyMarker = "BGQ-READY"
	// sigintMarker is printed by the guest init when ctrl-alt-delete
	// reached it as SIGINT.
	sigintMarker = "BGQ-SIGINT"
	// bootTimeout bounds one boot; an idle host boots in about 3 s.
	bootTimeout = 90 * time.Second
	// bootWhat names these tests in skip messages.
	bootWhat = "the QEMU boot"
)

// skipOrFail skips with reason, or fails when BANGER_TEST_REQUIRE_QEMU=1
// says this host must run the boot.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	guestboot.SkipOrFail(t, bootWhat, reason)
}

// requireBootHost skips (or fails, see skipOrFail) unless this host can
// boot a guest (see guestboot.RequireHost).
func requireBootHost(t *testing.T) {
	t.Helper()
	guestboot.RequireHost(t, bootWhat, DefaultBinary)
}

// guestInitSource is the guest's /sbin/init. It asks the kernel to turn
// ctrl-alt-delete into SIGINT for it, prints readyMarker with what it sees
// (eth0's MAC, whether vda and vdb are read-only), then waits: on SIGINT
// it prints sigintMarker and powers off.
const guestInitSource = `package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"

	"golang.org/x/sys/unix"
)

func read(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "none"
	}
	return strings.TrimSpace(string(b))
}

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGINT)
	cad := "ok"
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		cad = strings.ReplaceAll(err.Error(), " ", "_")
	}
	fmt.Printf("\n` + readyMarker + ` mac=%s vda_ro=%s vdb_ro=%s cad=%s\n",
		read("/sys/class/net/eth0/address"), read("/sys/block/vda/ro"), read("/sys/block/vdb/ro"), cad)
	<-sig
	fmt.Printf("` + sigintMarker + `\n")
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Printf("reboot(POWER_OFF): %v\n", err)
	select {}
}
`

// shared is what every boot test shares, made once per test process: the
// kernel and a read-only root image.
var shared struct {
	mu    sync.Mutex
	dir   string // removed by removeSharedGuest
	guest *guestboot.Guest
}

// sharedGuest returns the kernel and the root image (an ext4 whose
// /sbin/init is guestInitSource), making them on first use.
func sharedGuest(t *testing.T) guestboot.Guest {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.guest != nil {
		return *shared.guest
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", "bgq-guest-")
	if err != nil {
		t.Fatal(err)
	}
	shared.dir = dir
	g := guestboot.MakeGuest(t, dir, guestInitSource)
	shared.guest = &g
	t.Logf("guest: kernel %s, root image made in %v", g.KernelDir, time.Since(start).Round(time.Millisecond))
	return g
}

func removeSharedGuest() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// guestConfig is a Config booting the shared guest with its root disk
// read-only, QEMU's files in a temp dir.
func guestConfig(t *testing.T, id string) Config {
	t.Helper()
	g := sharedGuest(t)
	dir := t.TempDir()
	return Config{
		ID:         id,
		Kernel:     g.Kernel,
		Initrd:     g.Initrd,
		Cmdline:    BaseCmdline() + " root=/dev/vda ro quiet",
		Disks:      []Disk{{Path: g.Root, ReadOnly: true}},
		VCPUs:      2,
		MemoryMiB:  256,
		ConsoleLog: filepath.Join(dir, "console.log"),
		QMPSocket:  filepath.Join(dir, "qmp.sock"),
		LogFile:    filepath.Join(dir, "qemu.log"),
	}
}

// startGuest starts cfg and makes sure QEMU is gone when the test ends.
func startGuest(t *testing.T, cfg Config) *Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
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

// waitConsole polls the console log until a line starting with marker
// appears and returns that line; it fails if QEMU exits or bootTimeout
// passes first.
func waitConsole(t *testing.T, p *Process, log, marker string) string {
	t.Helper()
	line, data, ok := guestboot.WaitLine(log, marker, bootTimeout, p.Exited)
	if !ok {
		how := "still running"
		if p.Exited() {
			code, err := p.Wait()
			how = fmt.Sprintf("exited %d, %v", code, err)
		}
		t.Fatalf("no %s line on the console (QEMU %s)\n--- QEMU output:\n%s\n--- console (last 30 lines):\n%s",
			marker, how, p.Output(), guestboot.LastLines(string(data), 30))
	}
	return line
}
