package kernelboot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
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
)

const (
	// cacheRoot holds built kernels, one dir per version of the script.
	cacheRoot = "/var/cache/banger-test"
	// marker is what the guest init prints when all its checks passed.
	marker = "BANGER-KERNELBOOT-OK"
	// failMarker is what it prints when one failed.
	failMarker = "BANGER-KERNELBOOT-FAIL"
)

// repoRoot finds the banger module's root by walking up from the test's
// working dir (the package dir) to the go.mod that declares module banger.
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

// kernelFiles are what scripts/guest-kernel.sh writes.
var kernelFiles = []string{"vmlinux", "initrd", "kernel.txt"}

func kernelComplete(dir string) bool {
	for _, f := range kernelFiles {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
			return false
		}
	}
	return true
}

// cacheDir is where the kernel made by the current script is cached: the
// name carries the script's hash, so editing the script rebuilds.
func cacheDir(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "guest-kernel.sh"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return filepath.Join(cacheRoot, "guest-kernel-"+hex.EncodeToString(sum[:])[:16])
}

var buildMu sync.Mutex

// existingKernelDir returns BANGER_TEST_KERNEL_DIR or the cache dir when it
// holds a complete build; "" otherwise.
func existingKernelDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("BANGER_TEST_KERNEL_DIR"); dir != "" {
		if !kernelComplete(dir) {
			t.Fatalf("BANGER_TEST_KERNEL_DIR=%s lacks one of %v", dir, kernelFiles)
		}
		return dir
	}
	if dir := cacheDir(t); kernelComplete(dir) {
		return dir
	}
	return ""
}

// kernelDir returns a dir with vmlinux, initrd and kernel.txt, building
// them with scripts/guest-kernel.sh into the cache when needed. The build
// goes to a temp dir that is renamed into place only when complete.
func kernelDir(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if dir := existingKernelDir(t); dir != "" {
		t.Logf("kernel: using %s", dir)
		return dir
	}
	final := cacheDir(t)
	if err := os.MkdirAll(cacheRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(cacheRoot, ".building-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	script := filepath.Join(repoRoot(t), "scripts", "guest-kernel.sh")
	t.Logf("kernel: building with %s into %s", script, final)
	start := time.Now()
	cmd := exec.Command("bash", script, tmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/guest-kernel.sh failed: %v\n%s", err, out)
	}
	t.Logf("kernel: script ran in %v:\n%s", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(string(out)))
	if !kernelComplete(tmp) {
		t.Fatalf("scripts/guest-kernel.sh left no complete %v in %s", kernelFiles, tmp)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp made it 0700
		t.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another process may have finished the same build first.
		if kernelComplete(final) {
			return final
		}
		t.Fatal(err)
	}
	return final
}

// readKernelInfo parses kernel.txt's key=value lines.
func readKernelInfo(t testing.TB, dir string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kernel.txt"))
	if err != nil {
		t.Fatal(err)
	}
	info := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			info[k] = v
		}
	}
	return info
}

// hostTSCkHz returns the host's TSC frequency in kHz for the guest's
// tsc_early_khz= (under TCG the guest's TSC calibration can hang on a busy
// host without it), and where the number came from. The kernel log's own
// measurement is preferred over /proc/cpuinfo's "cpu MHz", which may be the
// current, scaled clock.
func hostTSCkHz() (int, string) {
	re := regexp.MustCompile(`tsc: (?:Refined TSC clocksource calibration: |Detected )([0-9.]+) MHz`)
	// A raw non-blocking fd: through os.File, Go's poller would wait for
	// new records instead of returning EAGAIN at the end of the log.
	if fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0); err == nil {
		defer syscall.Close(fd)
		var khz int
		buf := make([]byte, 8192)
		for range 100000 {
			n, err := syscall.Read(fd, buf)
			if err == syscall.EPIPE || err == syscall.EINTR {
				continue // a record was overwritten while reading
			}
			if err != nil || n <= 0 {
				break // EAGAIN: the end of the log
			}
			if m := re.FindSubmatch(buf[:n]); m != nil {
				if mhz, err := strconv.ParseFloat(string(m[1]), 64); err == nil {
					khz = int(math.Round(mhz * 1000)) // the refined line comes last and wins
				}
			}
		}
		if khz > 0 {
			return khz, "kernel log (tsc:)"
		}
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m := regexp.MustCompile(`(?m)^cpu MHz\s*:\s*([0-9.]+)`).FindSubmatch(data)
		if m != nil {
			if mhz, err := strconv.ParseFloat(string(m[1]), 64); err == nil && mhz > 0 {
				return int(math.Round(mhz * 1000)), "/proc/cpuinfo cpu MHz"
			}
		}
	}
	return 0, ""
}

// guestInitSource is the guest's /sbin/init: it checks it runs as PID 1 with
// /dev/vda mounted as /, prints the marker with the kernel release and the
// root fs type on the console and powers the VM off.
const guestInitSource = `package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	release, fstype, err := check()
	if err != nil {
		fmt.Printf("\n` + failMarker + ` %v\n", err)
	} else {
		fmt.Printf("\n` + marker + ` %s %s\n", release, fstype)
	}
	unix.Sync()
	err = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Printf("` + failMarker + ` reboot(POWER_OFF): %v\n", err)
	os.Exit(1)
}

func check() (release, fstype string, err error) {
	if pid := os.Getpid(); pid != 1 {
		return "", "", fmt.Errorf("running as PID %d, not 1", pid)
	}
	if _, err := os.Stat("/proc/self/mounts"); err != nil {
		if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
			return "", "", fmt.Errorf("mount /proc: %v", err)
		}
	}
	if _, err := os.Stat("/dev/vda"); err != nil {
		if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
			return "", "", fmt.Errorf("mount /dev: %v", err)
		}
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return "", "", err
	}
	release = unix.ByteSliceToString(uts.Release[:])

	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	var dev string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[1] == "/" {
			dev, fstype = fields[0], fields[2] // the last mount on / is the visible one
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	if dev != "/dev/vda" {
		return "", "", fmt.Errorf("/ is %q (%s), not /dev/vda", dev, fstype)
	}
	var root, vda unix.Stat_t
	if err := unix.Stat("/", &root); err != nil {
		return "", "", err
	}
	if err := unix.Stat("/dev/vda", &vda); err != nil {
		return "", "", err
	}
	if vda.Mode&unix.S_IFMT != unix.S_IFBLK || vda.Rdev != root.Dev {
		return "", "", errors.New("/dev/vda is not the device that holds /")
	}
	return release, fstype, nil
}
`

// buildGuestInit compiles guestInitSource into a static binary at out. It is
// its own module whose golang.org/x/sys is replaced by the copy banger's
// go.mod selects (downloaded into the module cache if needed), so it builds
// offline once banger's modules are there.
func buildGuestInit(t testing.TB, out string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the guest init: %v", err)
	}
	cmd := exec.Command(goBin, "mod", "download", "-json", "golang.org/x/sys")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	js, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download golang.org/x/sys: %v\n%s", err, exitStderr(err))
	}
	var mod struct{ Version, Dir string }
	if err := json.Unmarshal(js, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download -json golang.org/x/sys: no module dir in %s (%v)", js, err)
	}
	src := t.TempDir()
	gomod := fmt.Sprintf("module kernelbootinit\n\ngo 1.22\n\nrequire golang.org/x/sys %s\n\nreplace golang.org/x/sys => %s\n", mod.Version, mod.Dir)
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(guestInitSource), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOWORK=off", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the guest init: %v\n%s", err, b)
	}
}

func exitStderr(err error) []byte {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.Stderr
	}
	return nil
}

// makeRootImage makes a 64 MiB raw ext4 image whose /sbin/init is the guest
// init, with mkfs.ext4 -d (no mount, no loop device).
func makeRootImage(t testing.TB, dir string) string {
	t.Helper()
	tree := filepath.Join(dir, "rootfs")
	for _, d := range []string{"proc", "sys", "dev", "etc", "sbin", "tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	buildGuestInit(t, filepath.Join(tree, "sbin", "init"))
	if err := os.WriteFile(filepath.Join(tree, "etc", "hostname"), []byte("kernelboot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// bootResult is what one QEMU run gave.
type bootResult struct {
	exitErr  error         // QEMU's exit (nil: status 0)
	timedOut bool          // killed after the timeout
	toMarker time.Duration // QEMU start to the marker on the console (0: never)
	toExit   time.Duration // QEMU start to QEMU's exit
	serial   string        // the console log
	stderr   string        // QEMU's own output
}

// bootQEMU boots kernel dir + img under QEMU's microvm machine and waits for
// QEMU to exit, killing it (by PID) after timeout. The console log is
// polled to time the marker.
func bootQEMU(t testing.TB, qemu, kdir, img, cmdline, serialLog string, timeout time.Duration) bootResult {
	t.Helper()
	args := []string{
		"-M", "microvm,x-option-roms=off,isa-serial=on",
		"-accel", "tcg,thread=multi",
		"-cpu", "max", "-smp", "2", "-m", "256M",
		"-nodefaults", "-no-user-config", "-nographic", "-monitor", "none", "-no-reboot",
		"-kernel", filepath.Join(kdir, "vmlinux"),
		"-initrd", filepath.Join(kdir, "initrd"),
		"-append", cmdline,
		"-drive", "id=root,if=none,format=raw,file=" + img,
		"-device", "virtio-blk-device,drive=root",
		"-serial", "file:" + serialLog,
	}
	cmd := exec.Command(qemu, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// QEMU dies with the test process, whatever happens to the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-done
		}
	})

	var res bootResult
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	checkMarker := func() {
		if res.toMarker == 0 {
			if data, err := os.ReadFile(serialLog); err == nil && bytes.Contains(data, []byte(marker)) {
				res.toMarker = time.Since(start)
			}
		}
	}
loop:
	for {
		select {
		case err := <-done:
			exited = true
			res.exitErr = err
			res.toExit = time.Since(start)
			break loop
		case <-poll.C:
			checkMarker()
		case <-deadline.C:
			res.timedOut = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
			res.exitErr = <-done
			exited = true
			res.toExit = time.Since(start)
			break loop
		}
	}
	checkMarker()
	if data, err := os.ReadFile(serialLog); err == nil {
		res.serial = string(data)
	}
	res.stderr = stderr.String()
	return res
}

// lastLines returns at most n last lines of s, for failure messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cpioEntry is one member of a newc ("070701") cpio archive.
type cpioEntry struct {
	name string
	mode uint32
	data []byte
}

// readCpio parses a newc cpio archive up to its TRAILER!!! entry.
func readCpio(r io.Reader) ([]cpioEntry, error) {
	br := bufio.NewReader(r)
	var entries []cpioEntry
	var off int64
	skip := func(n int64) error {
		if pad := (4 - n%4) % 4; pad > 0 {
			if _, err := io.CopyN(io.Discard, br, pad); err != nil {
				return err
			}
			off += pad
		}
		return nil
	}
	for {
		var hdr [110]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, fmt.Errorf("cpio header at %d: %w", off, err)
		}
		off += 110
		if string(hdr[:6]) != "070701" {
			return nil, fmt.Errorf("cpio header at %d: magic %q, want 070701 (newc)", off-110, hdr[:6])
		}
		field := func(i int) (uint32, error) {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			return uint32(v), err
		}
		mode, err1 := field(1)
		size, err2 := field(6)
		namesize, err3 := field(11)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("cpio header at %d: %w", off-110, err)
		}
		name := make([]byte, namesize)
		if _, err := io.ReadFull(br, name); err != nil {
			return nil, err
		}
		off += int64(namesize)
		if err := skip(110 + int64(namesize)); err != nil {
			return nil, err
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, err
		}
		off += int64(size)
		if err := skip(int64(size)); err != nil {
			return nil, err
		}
		n := strings.TrimRight(string(name), "\x00")
		if n == "TRAILER!!!" {
			return entries, nil
		}
		entries = append(entries, cpioEntry{name: strings.TrimPrefix(n, "./"), mode: mode, data: data})
	}
}
