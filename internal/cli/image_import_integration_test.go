package cli_test

// Integration tests of image import/register and kernel import through
// the real binary: as root, and as a member of the socket group whose
// own file permissions the daemon must apply.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/rpc"
)

const impNobody = 65534

// impGroup makes a throwaway system group for the daemon's socket and
// removes it when the test ends.
func impGroup(t *testing.T) (string, uint32) {
	t.Helper()
	group := fmt.Sprintf("bgrimp%04d", rand.IntN(10000))
	if out, err := exec.Command("groupadd", "--system", group).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v: %s", group, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("groupdel", group).CombinedOutput(); err != nil {
			t.Errorf("groupdel %s: %v: %s", group, err, out)
		}
	})
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return group, uint32(gid)
}

// impStartDaemon starts `bin daemon` for e and waits until it answers.
// The daemon runs bin as a non-root caller to read the files they name,
// so bin must be where that caller can execute it.
func impStartDaemon(t *testing.T, e *env, bin string) {
	t.Helper()
	logf, err := os.CreateTemp(e.dir, "daemon*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, append([]string{"daemon"}, e.flags(e.root, e.sock)...)...)
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("daemon pid %d ignored SIGTERM for 10s; killing it", cmd.Process.Pid)
			cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := rpc.Dial(ctx, e.sock)
		if err == nil {
			_, err = c.Ping(ctx)
			c.Close()
		}
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("daemon exited before answering:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("daemon did not answer within 10s:\n%s", log)
		}
	}
}

// impRun runs bin with args and e's flags as uid (0: as the test) with
// the supplementary groups given, for at most two minutes.
func impRun(t *testing.T, e *env, bin string, uid uint32, groups []uint32, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, e.flags(e.root, e.sock)...)...)
	cmd.Dir = e.dir
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: groups}}
	}
	return runCmd(t, cmd)
}

// impJSON runs a listing as root with -o json and decodes it.
func impJSON[T any](t *testing.T, e *env, args ...string) T {
	t.Helper()
	var v T
	code, out, errOut := e.banger(t, append(args, "-o", "json")...)
	if code != 0 {
		t.Fatalf("%v exited %d: %s", args, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v printed %q: %v", args, out, err)
	}
	return v
}

func impMkdir(t *testing.T, p string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func impWriteFile(t *testing.T, p, body string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// impRootfsTree makes dir/etc/hostname holding host.
func impRootfsTree(t *testing.T, dir, host string) string {
	t.Helper()
	impMkdir(t, filepath.Join(dir, "etc"), 0o755)
	impWriteFile(t, filepath.Join(dir, "etc", "hostname"), host+"\n", 0o644)
	return dir
}

// impTarOf tars dir into out with the system tar.
func impTarOf(t *testing.T, dir, out string) string {
	t.Helper()
	if msg, err := exec.Command("tar", "-C", dir, "-cf", out, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar %s: %v: %s", dir, err, msg)
	}
	return out
}

// impVmlinux builds a stand-in kernel into dir: a static x86-64 Go
// executable with a kernel banner in its .rodata.
func impVmlinux(t *testing.T, dir string) string {
	t.Helper()
	src := impMkdir(t, filepath.Join(dir, "vmlinux-src"), 0o755)
	impWriteFile(t, filepath.Join(src, "go.mod"), "module vmlinux\n\ngo 1.26\n", 0o644)
	impWriteFile(t, filepath.Join(src, "main.go"), `package main

import "os"

const banner = "Linux version 6.1.0-test (x)"

func main() {
	if len(os.Args) > 99 {
		println(banner)
	}
}
`, 0o644)
	out := filepath.Join(dir, "vmlinux")
	build := exec.Command("go", "build", "-trimpath", "-buildmode=exe", "-ldflags=-s -w", "-o", out, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in vmlinux: %v\n%s", err, msg)
	}
	if err := os.RemoveAll(src); err != nil {
		t.Fatal(err)
	}
	return out
}

// impHostname reads /etc/hostname inside an image's ext4, without
// mounting it.
func impHostname(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat /etc/hostname", img).Output()
	if err != nil {
		t.Fatalf("debugfs cat /etc/hostname %s: %v", img, err)
	}
	return string(out)
}

// The daemon reads what a caller names with the caller's permissions: a
// member of the socket group gets what they could read themselves, and
// nothing else.
func TestImportAsCallerUsesTheirPermissions(t *testing.T) {
	requireRoot(t)
	group, gid := impGroup(t)
	e := newEnv(t, group)
	if err := os.Chmod(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A copy of the binary nobody can execute, for the CLI and for the
	// daemon, which runs it as the caller to read their files.
	bin := filepath.Join(e.dir, "banger")
	copyFile(t, bangerBin, bin, 0o755)
	impStartDaemon(t, e, bin)
	as := func(args ...string) (int, string, string) {
		t.Helper()
		return impRun(t, e, bin, impNobody, []uint32{gid}, args...)
	}

	closed := impMkdir(t, filepath.Join(e.dir, "root-only"), 0o700)
	closedTree := impRootfsTree(t, filepath.Join(closed, "tree"), "closed")
	closedTar := impTarOf(t, closedTree, filepath.Join(closed, "rootfs.tar"))
	os.Chmod(closedTar, 0o644) // readable itself; its directory is not

	pub := impMkdir(t, filepath.Join(e.dir, "pub"), 0o755)
	tree := impRootfsTree(t, filepath.Join(pub, "tree"), "from-dir")
	tarball := impTarOf(t, impRootfsTree(t, filepath.Join(e.dir, "tar-src"), "from-tar"), filepath.Join(pub, "rootfs.tar"))
	os.Chmod(tarball, 0o644)
	private := impTarOf(t, tree, filepath.Join(pub, "private.tar"))
	os.Chmod(private, 0o600)
	mixed := impRootfsTree(t, filepath.Join(pub, "mixed"), "mixed")
	impWriteFile(t, filepath.Join(mixed, "etc", "shadow"), "root:secret\n", 0o600)
	ext4 := filepath.Join(pub, "base.ext4")
	if msg, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, ext4, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, msg)
	}
	os.Chmod(ext4, 0o644)
	vmlinux := impVmlinux(t, pub)
	os.Chmod(vmlinux, 0o644)
	privateKernel := filepath.Join(pub, "vmlinux-private")
	copyFile(t, vmlinux, privateKernel, 0o600)

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"closed directory", []string{"image", "import", closedTree, "--name", "x1"}, []string{closedTree, "permission denied"}},
		{"file in a closed directory", []string{"image", "import", closedTar, "--name", "x2"}, []string{closedTar, "permission denied"}},
		{"private file", []string{"image", "import", private, "--name", "x3"}, []string{private, "permission denied"}},
		{"missing file", []string{"image", "import", filepath.Join(pub, "nonesuch.tar"), "--name", "x4"}, []string{filepath.Join(pub, "nonesuch.tar"), "does not exist"}},
		{"private file in the tree", []string{"image", "import", mixed, "--name", "x5"}, []string{"etc/shadow", "permission denied"}},
		{"private ext4", []string{"image", "register", "--rootfs", private, "--name", "x6"}, []string{private, "permission denied"}},
		{"private kernel", []string{"kernel", "import", privateKernel, "--name", "k0"}, []string{privateKernel, "permission denied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := as(tc.args...)
			if code != 1 {
				t.Errorf("%v as nobody exited %d (stdout %q); want 1", tc.args, code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("%v as nobody: stderr %q does not say %q", tc.args, errOut, w)
				}
			}
			if strings.Contains(errOut, "banger: banger:") {
				t.Errorf("stderr %q repeats the helper's prefix", errOut)
			}
			if strings.Contains(errOut, "root:secret") {
				t.Errorf("stderr %q leaks the private file", errOut)
			}
		})
	}
	if ims := impJSON[[]rpc.Image](t, e, "image", "ls"); len(ims) != 0 {
		t.Errorf("refused imports left images: %+v", ims)
	}
	if ks := impJSON[[]rpc.Kernel](t, e, "kernel", "ls"); len(ks) != 0 {
		t.Errorf("the refused kernel import left kernels: %+v", ks)
	}

	// What nobody may read, nobody may import. The stream is read by
	// the import's operation after the call that opened it returned.
	for _, tc := range []struct {
		name, src, host string
		args            []string
	}{
		{"from-tar", tarball, "from-tar\n", []string{"image", "import", tarball}},
		{"from-dir", tree, "from-dir\n", []string{"image", "import", tree}},
		{"from-ext4", ext4, "from-dir\n", []string{"image", "register", "--rootfs", ext4}},
	} {
		code, out, errOut := as(append(tc.args, "--name", tc.name)...)
		if code != 0 || !strings.Contains(out, "Image "+tc.name+" ready") {
			t.Fatalf("import of %s as nobody exited %d, stdout %q, stderr %q; want it ready", tc.src, code, out, errOut)
		}
		im := impJSON[rpc.Image](t, e, "image", "show", tc.name)
		if im.State != "ready" || im.Source != tc.args[1] || im.SourceRef != tc.src {
			t.Errorf("image %s = %+v", tc.name, im)
		}
		if got := impHostname(t, im.Path); got != tc.host {
			t.Errorf("image %s holds /etc/hostname %q, want %q", tc.name, got, tc.host)
		}
	}
	code, out, errOut := as("kernel", "import", vmlinux, "--name", "k1", "--default")
	if code != 0 || !strings.Contains(out, "Kernel k1 added (default)") || !strings.Contains(out, "6.1.0-test") {
		t.Errorf("kernel import as nobody exited %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestImageAndKernelCLIAsRoot(t *testing.T) {
	e := newEnv(t, "root")
	e.startDaemon(t, e.root, e.sock)
	tree := impRootfsTree(t, filepath.Join(e.dir, "tree"), "cli")

	code, out, errOut := e.banger(t, "image", "import", tree, "--name", "n")
	if code != 0 || !strings.HasPrefix(out, "Image n ready: ") {
		t.Fatalf("image import exited %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A relative path is the CLI's to resolve, against its working
	// directory (e.dir).
	code, out, errOut = e.banger(t, "image", "import", "tree", "--name", "rel")
	if code != 0 || !strings.HasPrefix(out, "Image rel ready: ") {
		t.Fatalf("image import of a relative path exited %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = e.banger(t, "image", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME ") {
		t.Fatalf("image ls exited %d, printed %q (stderr %q); want a header and two rows", code, out, errOut)
	}
	for i, name := range []string{"n", "rel"} {
		if f := strings.Fields(lines[i+1]); len(f) < 5 || f[0] != name || f[2] != "ready" || f[3] != "import" || f[4] != tree {
			t.Errorf("image ls row %q; want %s, ready, import %s", lines[i+1], name, tree)
		}
	}
	im := impJSON[rpc.Image](t, e, "image", "show", "n")
	if im.Source != "import" || im.SourceRef != tree || im.State != "ready" || impHostname(t, im.Path) != "cli\n" {
		t.Errorf("image show n = %+v", im)
	}

	garbage := impWriteFile(t, filepath.Join(e.dir, "garbage.tar"), strings.Repeat("garbage\n", 100), 0o644)
	code, _, errOut = e.banger(t, "image", "import", garbage, "--name", "g")
	if code != 1 || !strings.Contains(errOut, "neither gzip, zstd nor a tar archive") || !strings.Contains(errOut, garbage) {
		t.Errorf("import of garbage exited %d, stderr %q; want 1 and why", code, errOut)
	}

	vmlinux := impVmlinux(t, e.dir)
	fi, err := os.Stat(vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut = e.banger(t, "kernel", "import", vmlinux, "--name", "k", "--default")
	if code != 0 || !strings.HasPrefix(out, "Kernel k added (default): ") || !strings.Contains(out, "version 6.1.0-test") {
		t.Fatalf("kernel import exited %d, stdout %q, stderr %q", code, out, errOut)
	}
	ks := impJSON[[]rpc.Kernel](t, e, "kernel", "ls")
	if len(ks) != 1 || ks[0].Name != "k" || !ks[0].Default || ks[0].Version != "6.1.0-test" || ks[0].SizeBytes != fi.Size() || ks[0].HasInitrd {
		t.Errorf("kernel ls -o json = %+v; want k, default, 6.1.0-test, %d bytes, no initrd", ks, fi.Size())
	}
	code, out, _ = e.banger(t, "kernel", "ls")
	if f := strings.Fields(strings.Join(strings.Split(out, "\n")[1:], " ")); code != 0 || len(f) < 5 || f[0] != "k" || f[2] != "6.1.0-test" || f[3] != "no" || f[4] != "yes" {
		t.Errorf("kernel ls printed %q; want k, its version, no initrd, default", out)
	}
	code, _, errOut = e.banger(t, "kernel", "import", tree, "--name", "d")
	if code != 1 || !strings.Contains(errOut, "is a directory") {
		t.Errorf("kernel import of a directory exited %d, stderr %q", code, errOut)
	}

	for _, args := range [][]string{{"image", "rm", "n", "rel"}, {"kernel", "rm", "k"}} {
		if code, out, errOut := e.banger(t, args...); code != 0 || !strings.Contains(out, "Removed") {
			t.Errorf("%v exited %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	if ims := impJSON[[]rpc.Image](t, e, "image", "ls"); len(ims) != 0 {
		t.Errorf("images after rm: %+v", ims)
	}
	if entries, err := os.ReadDir(filepath.Join(e.root, "images")); err != nil || len(entries) != 0 {
		t.Errorf("images/ after rm holds %v (%v)", entries, err)
	}
}
