package fcshim

// Helpers for the tests that boot a real guest through the shim. The
// kernel comes from scripts/guest-kernel.sh through the same cache
// test/kernelboot fills (/var/cache/banger-test/guest-kernel-<first 16 hex
// of the script's sha256>); this code is a copy of those helpers, as a
// _test package cannot be imported.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/daemon/qemu"
)

const (
	// cacheRoot holds built kernels, one dir per version of the script.
	cacheRoot = "/var/cache/banger-test"
	// readyMarker starts the line the guest init prints once up.
	readyMarker = "BGF-READY"
	// cmdlineMarker starts the line with the guest's /proc/cmdline.
	cmdlineMarker = "BGF-CMDLINE"
	// sigintMarker is printed by the guest init when ctrl-alt-delete
	// reached it as SIGINT.
	sigintMarker = "BGF-SIGINT"
	// guestBootTimeout bounds one boot; an idle host boots in about 3 s.
	guestBootTimeout = 90 * time.Second
)

// skipOrFail skips with reason, or fails when BANGER_TEST_REQUIRE_QEMU=1
// says this host must run the boot.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("BANGER_TEST_REQUIRE_QEMU") == "1" {
		t.Fatalf("BANGER_TEST_REQUIRE_QEMU=1 but %s", reason)
	}
	t.Skip("skipping the boot through fcshim: " + reason)
}

// requireBootHost skips (or fails, see skipOrFail) unless this host can
// boot a guest: not -short, root (building the kernel runs apt-get; TAPs
// and namespaces need it), QEMU, mkfs.ext4 and go.
func requireBootHost(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the boot through fcshim in -short mode")
	}
	if uid := os.Getuid(); uid != 0 {
		skipOrFail(t, fmt.Sprintf("needs root (building the kernel runs apt-get, the NIC test makes a namespace; uid is %d)", uid))
	}
	for tool, pkg := range map[string]string{qemu.DefaultBinary: "qemu-system-x86", "mkfs.ext4": "e2fsprogs", "go": "golang"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, fmt.Sprintf("%s is not installed (Debian package %s)", tool, pkg))
		}
	}
}

// repoRoot finds the banger module's root above the working dir.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && regexp.MustCompile(`(?m)^module\s+banger\s*$`).Match(data) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the banger module's go.mod above the working dir")
		}
		dir = parent
	}
}

var kernelFiles = []string{"vmlinux", "initrd", "kernel.txt"}

func kernelComplete(dir string) bool {
	for _, f := range kernelFiles {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
			return false
		}
	}
	return true
}

// kernelDir returns BANGER_TEST_KERNEL_DIR, or the cache dir named after
// the script's hash, building it with scripts/guest-kernel.sh if needed.
func kernelDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("BANGER_TEST_KERNEL_DIR"); dir != "" {
		if !kernelComplete(dir) {
			t.Fatalf("BANGER_TEST_KERNEL_DIR=%s lacks one of %v", dir, kernelFiles)
		}
		return dir
	}
	script := filepath.Join(repoRoot(t), "scripts", "guest-kernel.sh")
	data, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	final := filepath.Join(cacheRoot, "guest-kernel-"+hex.EncodeToString(sum[:])[:16])
	if kernelComplete(final) {
		return final
	}
	if err := os.MkdirAll(cacheRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(cacheRoot, ".building-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	t.Logf("kernel: building with %s into %s", script, final)
	start := time.Now()
	if out, err := exec.Command("bash", script, tmp).CombinedOutput(); err != nil {
		t.Fatalf("scripts/guest-kernel.sh failed: %v\n%s", err, out)
	}
	t.Logf("kernel: built in %v", time.Since(start).Round(100*time.Millisecond))
	if !kernelComplete(tmp) {
		t.Fatalf("scripts/guest-kernel.sh left no complete %v in %s", kernelFiles, tmp)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if kernelComplete(final) { // another process finished the same build first
			return final
		}
		t.Fatal(err)
	}
	return final
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

// goBuild runs go build in dir with env added, failing the test on error.
func goBuild(t testing.TB, dir string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", args, err, b)
	}
}

// buildGuestInit compiles guestInitSource into a static binary at out, as
// its own module whose golang.org/x/sys is the copy banger's go.mod selects.
func buildGuestInit(t testing.TB, out string) {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", "golang.org/x/sys")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	js, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go mod download golang.org/x/sys: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go mod download golang.org/x/sys: %v", err)
	}
	var mod struct{ Version, Dir string }
	if err := json.Unmarshal(js, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download -json golang.org/x/sys: no module dir in %s (%v)", js, err)
	}
	src := t.TempDir()
	gomod := fmt.Sprintf("module bgfinit\n\ngo 1.22\n\nrequire golang.org/x/sys %s\n\nreplace golang.org/x/sys => %s\n", mod.Version, mod.Dir)
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(guestInitSource), 0o644); err != nil {
		t.Fatal(err)
	}
	goBuild(t, src, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod"}, "-trimpath", "-ldflags=-s -w", "-o", out, ".")
}

// guestFiles is what every boot test shares, made once per test process:
// the kernel, a read-only root image and the shim binary.
type guestFiles struct {
	kernel, initrd, root, shim string
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
		goBuild(t, repoRoot(t), []string{"CGO_ENABLED=0"}, "-o", shim, "./internal/testing/fcshim/cmd/fcshim")
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
	kdir := kernelDir(t)
	dir := sharedDirLocked(t)
	shim := sharedShimLocked(t)
	tree := filepath.Join(dir, "rootfs")
	for _, d := range []string{"proc", "sys", "dev", "sbin", "tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	buildGuestInit(t, filepath.Join(tree, "sbin", "init"))
	root := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, root, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	shared.files = &guestFiles{
		kernel: filepath.Join(kdir, "vmlinux"),
		initrd: filepath.Join(kdir, "initrd"),
		root:   root,
		shim:   shim,
	}
	t.Logf("guest: kernel %s; shim, init and root image made in %v", kdir, time.Since(start).Round(time.Millisecond))
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
	deadline := time.Now().Add(guestBootTimeout)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(marker) + `.*$`)
	for {
		data, _ := os.ReadFile(log)
		if m := re.Find(data); m != nil {
			return strings.TrimSpace(string(m))
		}
		if exited() || time.Now().After(deadline) {
			t.Fatalf("no %s line on the console (shim exited: %v)\n--- console (last 40 lines):\n%s", marker, exited(), lastLines(data, 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// markerField returns key's value in a "MARKER k=v k=v" line.
func markerField(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
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
