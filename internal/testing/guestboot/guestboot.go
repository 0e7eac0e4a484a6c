// Package guestboot holds the mechanics the tests that boot a real guest
// share: building a guest's /sbin/init from Go source, making a raw ext4
// root image around it, and reading what the guest prints on its console.
// The kernel comes from package guestkernel; each test keeps its own init
// source, markers and boot.
package guestboot

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"banger/internal/testing/guestkernel"
)

// SkipOrFail skips the test with reason, or fails it when
// BANGER_TEST_REQUIRE_QEMU=1 says this host must run it. what names what
// is skipped ("the QEMU boot").
func SkipOrFail(t testing.TB, what, reason string) {
	t.Helper()
	if os.Getenv("BANGER_TEST_REQUIRE_QEMU") == "1" {
		t.Fatalf("BANGER_TEST_REQUIRE_QEMU=1 but %s", reason)
	}
	t.Skip("skipping " + what + ": " + reason)
}

// RequireHost skips (or fails, see SkipOrFail) unless this host can boot a
// guest: not -short, root (building the kernel runs apt-get; TAPs and
// namespaces need it), qemuBinary, mkfs.ext4 and go.
func RequireHost(t testing.TB, what, qemuBinary string) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping " + what + " in -short mode")
	}
	if uid := os.Getuid(); uid != 0 {
		SkipOrFail(t, what, fmt.Sprintf("needs root (building the kernel runs apt-get, the NIC test makes a namespace; uid is %d)", uid))
	}
	for tool, pkg := range map[string]string{qemuBinary: "qemu-system-x86", "mkfs.ext4": "e2fsprogs", "go": "golang"} {
		if _, err := exec.LookPath(tool); err != nil {
			SkipOrFail(t, what, fmt.Sprintf("%s is not installed (Debian package %s)", tool, pkg))
		}
	}
}

// GoBuild runs go build in dir (with GOWORK=off and env added), failing
// the test on error.
func GoBuild(t testing.TB, dir string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", args, err, b)
	}
}

// BuildInit compiles source, a main package that may import
// golang.org/x/sys, into a static linux/amd64 binary at out. It is built as
// its own module whose golang.org/x/sys is replaced by the copy banger's
// go.mod selects (downloaded into the module cache if needed), so it builds
// offline once banger's modules are there.
func BuildInit(t testing.TB, source, out string) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command is needed to build the guest init: %v", err)
	}
	cmd := exec.Command("go", "mod", "download", "-json", "golang.org/x/sys")
	cmd.Dir = guestkernel.RepoRoot(t)
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
	gomod := fmt.Sprintf("module guestinit\n\ngo 1.22\n\nrequire golang.org/x/sys %s\n\nreplace golang.org/x/sys => %s\n", mod.Version, mod.Dir)
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(source), 0o644); err != nil {
		t.Fatal(err)
	}
	GoBuild(t, src, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod"}, "-trimpath", "-ldflags=-s -w", "-o", out, ".")
}

// RootImage makes dir/root.ext4, a 64 MiB raw ext4 image whose /sbin/init
// is initSource built by BuildInit, with the empty directories an init
// mounts on (/proc, /sys, /dev, /tmp, /run) and files (path below / ->
// content, mode 0644). It uses mkfs.ext4 -d on the tree dir/rootfs: no
// mount, no loop device.
func RootImage(t testing.TB, dir, initSource string, files map[string]string) string {
	t.Helper()
	tree := filepath.Join(dir, "rootfs")
	for _, d := range []string{"proc", "sys", "dev", "sbin", "tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	BuildInit(t, initSource, filepath.Join(tree, "sbin", "init"))
	for name, content := range files {
		path := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// Guest is what a boot needs: the kernel and initrd from guestkernel.Dir
// and a root image from RootImage.
type Guest struct {
	KernelDir, Kernel, Initrd, Root string
}

// MakeGuest returns the guest kernel (building it if needed) and a root
// image in dir whose /sbin/init is initSource (see RootImage).
func MakeGuest(t testing.TB, dir, initSource string) Guest {
	t.Helper()
	kdir := guestkernel.Dir(t)
	return Guest{
		KernelDir: kdir,
		Kernel:    filepath.Join(kdir, "vmlinux"),
		Initrd:    filepath.Join(kdir, "initrd"),
		Root:      RootImage(t, dir, initSource, nil),
	}
}

// WaitLine polls the console log at path until a line starting with marker
// appears and returns it, trimmed, with ok true. It gives up when exited
// reports the VM's process gone or timeout passes, returning ok false and
// the console as it was, for the caller's failure message.
func WaitLine(path, marker string, timeout time.Duration, exited func() bool) (line string, console []byte, ok bool) {
	deadline := time.Now().Add(timeout)
	// Only a whole line counts: the console may hold half of one while
	// the guest is still writing it.
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(marker) + `[^\n]*\n`)
	for {
		data, _ := os.ReadFile(path)
		if m := re.Find(data); m != nil {
			return strings.TrimSpace(string(m)), data, true
		}
		if exited() || time.Now().After(deadline) {
			// One last read: the guest may have finished the line just
			// before it exited.
			data, _ = os.ReadFile(path)
			if m := re.Find(data); m != nil {
				return strings.TrimSpace(string(m)), data, true
			}
			return "", data, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LastLines returns at most n last lines of s, for failure messages.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Field returns key's value in a "MARKER k=v k=v" console line; "" when
// it has none.
func Field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// NewNetNS makes a network namespace prefix-<random> and deletes it when
// the test ends (cleanups run last-in first-out, so after whatever the
// test later started in it is gone).
func NewNetNS(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	ns := prefix + "-" + hex.EncodeToString(b)
	Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", ns, err, out)
		}
	})
	return ns
}

// Run runs argv, failing the test with its output on error.
func Run(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}
