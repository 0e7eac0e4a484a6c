package qemu

// Helpers for the tests that boot a real guest. The kernel comes from
// scripts/guest-kernel.sh through the same cache test/kernelboot fills
// (/var/cache/banger-test/guest-kernel-<hash of the script>); this code is
// a copy of that package's helpers, as a _test package cannot be imported.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// cacheRoot holds built kernels, one dir per version of the script.
	cacheRoot = "/var/cache/banger-test"
	// readyMarker starts the line the guest init prints once up.
	readyMarker = "BGQ-READY"
	// sigintMarker is printed by the guest init when ctrl-alt-delete
	// reached it as SIGINT.
	sigintMarker = "BGQ-SIGINT"
	// bootTimeout bounds one boot; an idle host boots in about 3 s.
	bootTimeout = 90 * time.Second
)

// skipOrFail skips with reason, or fails when BANGER_TEST_REQUIRE_QEMU=1
// says this host must run the boot.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("BANGER_TEST_REQUIRE_QEMU") == "1" {
		t.Fatalf("BANGER_TEST_REQUIRE_QEMU=1 but %s", reason)
	}
	t.Skip("skipping the QEMU boot: " + reason)
}

// requireBootHost skips (or fails, see skipOrFail) unless this host can
// boot a guest: not -short, root (building the kernel runs apt-get; TAPs
// and namespaces need it), QEMU, mkfs.ext4 and go.
func requireBootHost(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the QEMU boot in -short mode")
	}
	if uid := os.Getuid(); uid != 0 {
		skipOrFail(t, fmt.Sprintf("needs root (building the kernel runs apt-get, the NIC test makes a namespace; uid is %d)", uid))
	}
	for tool, pkg := range map[string]string{DefaultBinary: "qemu-system-x86", "mkfs.ext4": "e2fsprogs", "go": "golang"} {
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
	gomod := fmt.Sprintf("module bgqinit\n\ngo 1.22\n\nrequire golang.org/x/sys %s\n\nreplace golang.org/x/sys => %s\n", mod.Version, mod.Dir)
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(guestInitSource), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOWORK=off", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the guest init: %v\n%s", err, b)
	}
}

// guestFiles is what every boot test shares: the kernel and a read-only
// root image, made once per test process.
type guestFiles struct {
	kernel, initrd, root string
}

var shared struct {
	mu    sync.Mutex
	dir   string // removed by removeSharedGuest
	files *guestFiles
}

// sharedGuest returns the kernel and the root image (an ext4 whose
// /sbin/init is guestInitSource), making them on first use.
func sharedGuest(t *testing.T) guestFiles {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.files != nil {
		return *shared.files
	}
	start := time.Now()
	kdir := kernelDir(t)
	dir, err := os.MkdirTemp("", "bgq-guest-")
	if err != nil {
		t.Fatal(err)
	}
	shared.dir = dir
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
	}
	t.Logf("guest: kernel %s, root image made in %v", kdir, time.Since(start).Round(time.Millisecond))
	return *shared.files
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
		Kernel:     g.kernel,
		Initrd:     g.initrd,
		Cmdline:    BaseCmdline() + " root=/dev/vda ro quiet",
		Disks:      []Disk{{Path: g.root, ReadOnly: true}},
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
	deadline := time.Now().Add(bootTimeout)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(marker) + `.*$`)
	for {
		data, _ := os.ReadFile(log)
		if m := re.Find(data); m != nil {
			return strings.TrimSpace(string(m))
		}
		if p.Exited() || time.Now().After(deadline) {
			how := "still running"
			if p.Exited() {
				code, err := p.Wait()
				how = fmt.Sprintf("exited %d, %v", code, err)
			}
			t.Fatalf("no %s line on the console (QEMU %s)\n--- QEMU output:\n%s\n--- console (last 30 lines):\n%s",
				marker, how, p.Output(), lastLines(data, 30))
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

// field returns key's value in a "MARKER k=v k=v" line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}
