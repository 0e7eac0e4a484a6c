package fcshim

// Helpers for the tests that boot a real guest through the shim. The
// kernel (through the cache test/kernelboot fills), the root image and the
// console reading come from internal/testing/guestkernel and guestboot;
// the guest init's source is this package's own.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/daemon/qemu"
	"banger/internal/testing/guestboot"
	"banger/internal/testing/guestkernel"
)

const (
	// readyMarker starts the line the guest init prints once up.
	readyMarker = "BGF-READY"
	// cmdlineMarker starts the line with the guest's /proc/cmdline.
	cmdlineMarker = "BGF-CMDLINE"
	// sigintMarker is printed by the guest init when ctrl-alt-delete
	// reached it as SIGINT.
	sigintMarker = "BGF-SIGINT"
	// guestBootTimeout bounds one boot; an idle host boots in about 3 s.
	guestBootTimeout = 90 * time.Second
	// bootWhat names these tests in skip messages.
	bootWhat = "the boot through fcshim"
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
	guestboot.RequireHost(t, bootWhat, qemu.DefaultBinary)
}

// guestInitSource is the guest's /sbin/init. It asks the kernel to turn
// ctrl-alt-delete into SIGINT for it, prints its command line and
// readyMarker with what it sees (eth0's MAC, whether vda and vdb are
// read-only), then waits: on SIGINT it prints sigintMarker and powers off.
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
	os.MkdirAll("/proc", 0o755)
	unix.Mount("proc", "/proc", "proc", 0, "")
	fmt.Printf("\n` + cmdlineMarker + ` %s\n", read("/proc/cmdline"))
	fmt.Printf("` + readyMarker + ` mac=%s vda_ro=%s vdb_ro=%s cad=%s\n",
		read("/sys/class/net/eth0/address"), read("/sys/block/vda/ro"), read("/sys/block/vdb/ro"), cad)
	<-sig
	fmt.Printf("` + sigintMarker + `\n")
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Printf("reboot(POWER_OFF): %v\n", err)
	select {}
}
`

// guestFiles is what every boot test shares, made once per test process:
// the kernel, a read-only root image and the shim binary.
type guestFiles struct {
	guestboot.Guest
	Shim string
}

var shared struct {
	mu    sync.Mutex
	dir   string // removed by removeShared
	shim  string
	files *guestFiles
}

// sharedDirLocked is the per-process temp dir for shared files.
func sharedDirLocked(t *testing.T) string {
	t.Helper()
	if shared.dir == "" {
		dir, err := os.MkdirTemp("", "bgf-guest-")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
	}
	return shared.dir
}

// sharedShim builds the fcshim binary on first use (needs go, not root).
func sharedShim(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: building the fcshim binary in -short mode")
	}
	if _, err := exec.LookPath("go"); err != nil {
		skipOrFail(t, "go is not installed (Debian package golang): the test builds the fcshim binary")
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	return sharedShimLocked(t)
}

func sharedShimLocked(t *testing.T) string {
	t.Helper()
	if shared.shim == "" {
		shim := filepath.Join(sharedDirLocked(t), "fcshim")
		start := time.Now()
		guestboot.GoBuild(t, guestkernel.RepoRoot(t), []string{"CGO_ENABLED=0"}, "-o", shim, "./internal/testing/fcshim/cmd/fcshim")
		t.Logf("fcshim built in %v", time.Since(start).Round(time.Millisecond))
		shared.shim = shim
	}
	return shared.shim
}

// sharedGuest returns the kernel, the root image (an ext4 whose /sbin/init
// is guestInitSource) and the fcshim binary, making them on first use.
func sharedGuest(t *testing.T) guestFiles {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.files != nil {
		return *shared.files
	}
	start := time.Now()
	dir := sharedDirLocked(t)
	shim := sharedShimLocked(t)
	shared.files = &guestFiles{Guest: guestboot.MakeGuest(t, dir, guestInitSource), Shim: shim}
	t.Logf("guest: kernel %s; shim, init and root image made in %v", shared.files.KernelDir, time.Since(start).Round(time.Millisecond))
	return *shared.files
}

func removeShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// waitConsole polls the console log until a line starting with marker
// appears and returns that line; it fails if the process exits (exited
// reports it) or guestBootTimeout passes first.
func waitConsole(t *testing.T, log, marker string, exited func() bool) string {
	t.Helper()
	line, data, ok := guestboot.WaitLine(log, marker, guestBootTimeout, exited)
	if !ok {
		t.Fatalf("no %s line on the console (shim exited: %v)\n--- console (last 40 lines):\n%s", marker, exited(), guestboot.LastLines(string(data), 40))
	}
	return line
}

// procArgv reads /proc/PID/cmdline; nil if the process is gone.
func procArgv(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// findQEMU returns the pid of the QEMU running VM id (found by its command
// line, qemu.IDFromArgv), or 0.
func findQEMU(id string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, ok := qemu.IDFromArgv(procArgv(pid)); ok && got == id {
			return pid
		}
	}
	return 0
}

// parentPID reads a process's parent from /proc/PID/stat.
func parentPID(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
	f := strings.Fields(rest)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// gone waits up to d for pid to end: no such process, or a zombie (dead,
// waiting for whoever inherited it to reap it).
func gone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if syscall.Kill(pid, 0) == syscall.ESRCH || procState(pid) == "Z" {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procState is the state letter in /proc/PID/stat, or "".
func procState(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
