package daemon

// Helpers shared by the image import, image register and kernel tests.
// Every name here starts with "imp" so it cannot collide with the pull
// tests' helpers in the same package.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// impEnv is a root daemon for image and kernel tests. Its guest init is a
// small stand-in file rather than the test binary, so images stay small
// and a 32 MiB ext4 has room for it.
type impEnv struct {
	cfg     config.Config
	r       *running
	c       *rpc.Client
	init    string // the stand-in init injected into every image
	initLen int64
	scratch string // inputs the tests make, outside the state root
}

// impSetup starts a daemon on a fresh root (root only; see needRoot).
func impSetup(t *testing.T) *impEnv {
	t.Helper()
	needRoot(t)
	cfg := testConfig(t)
	scratch := filepath.Join(filepath.Dir(cfg.Root), "in")
	if err := os.Mkdir(scratch, 0o700); err != nil {
		t.Fatal(err)
	}
	init := filepath.Join(filepath.Dir(cfg.Root), "init")
	body := bytes.Repeat([]byte("banger test init\n"), 300)
	if err := os.WriteFile(init, body, 0o755); err != nil {
		t.Fatal(err)
	}
	r := impStart(t, cfg, init)
	return &impEnv{cfg: cfg, r: r, c: dialDaemon(t, cfg), init: init, initLen: int64(len(body)), scratch: scratch}
}

// impStart is startDaemon with an explicit Executable (the guest init,
// and the helper that reads files as a non-root caller).
func impStart(t *testing.T, cfg config.Config, exe string) *running {
	t.Helper()
	d, err := Open(context.Background(), Options{Config: cfg, Executable: exe})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	allowStandInInit(d)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Serve(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// ctx is a per-call context bounded so a hang fails the test.
func impCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// runOp calls method, which starts an async op, and follows that op to
// its end. A call error is returned as is (no op started); a finished op
// is returned whatever its outcome.
func (e *impEnv) runOp(t *testing.T, method string, params any) (rpc.OpStarted, rpc.Op, error) {
	t.Helper()
	ctx := impCtx(t)
	var started rpc.OpStarted
	if err := e.c.Call(ctx, method, params, &started); err != nil {
		return started, rpc.Op{}, err
	}
	if started.OpID == "" {
		t.Fatalf("%s started no op: %+v", method, started)
	}
	final, err := e.c.WatchOp(ctx, started.OpID, nil)
	if err != nil {
		t.Fatalf("watch %s op %s: %v", method, started.OpID, err)
	}
	return started, final, nil
}

// mustImage runs an image op that must succeed and returns its image.
func (e *impEnv) mustImage(t *testing.T, method string, params any) rpc.Image {
	t.Helper()
	_, final, err := e.runOp(t, method, params)
	if err != nil {
		t.Fatalf("%s %+v: %v", method, params, err)
	}
	if final.State != "succeeded" {
		t.Fatalf("%s %+v: op %s: %s", method, params, final.State, final.Error)
	}
	var im rpc.Image
	if err := json.Unmarshal(final.Result, &im); err != nil {
		t.Fatalf("decode %s result %s: %v", method, final.Result, err)
	}
	if im.State != "ready" || im.ID == "" {
		t.Fatalf("%s made %+v, want a ready image", method, im)
	}
	return im
}

// failedOp runs an op that must start and then fail; it returns the
// op's error text and the id of the image it had reserved, if any.
func (e *impEnv) failedOp(t *testing.T, method string, params any) (msg, imageID string) {
	t.Helper()
	started, final, err := e.runOp(t, method, params)
	if err != nil {
		t.Fatalf("%s %+v: the call failed (%v); want an op that fails", method, params, err)
	}
	if final.State != "failed" || final.Error == "" {
		t.Fatalf("%s %+v: op ended %s (%q); want failed with a reason", method, params, final.State, final.Error)
	}
	if started.Image != nil {
		imageID = started.Image.ID
	}
	return final.Error, imageID
}

func (e *impEnv) show(t *testing.T, ref string) rpc.Image {
	t.Helper()
	var im rpc.Image
	if err := e.c.Call(impCtx(t), rpc.MethodImageShow, rpc.NameRef{Ref: ref}, &im); err != nil {
		t.Fatalf("image.show %s: %v", ref, err)
	}
	return im
}

func (e *impEnv) images(t *testing.T) []rpc.Image {
	t.Helper()
	var res rpc.ImageListResult
	if err := e.c.Call(impCtx(t), rpc.MethodImageList, nil, &res); err != nil {
		t.Fatal(err)
	}
	return res.Images
}

func (e *impEnv) kernels(t *testing.T) []rpc.Kernel {
	t.Helper()
	var res rpc.KernelListResult
	if err := e.c.Call(impCtx(t), rpc.MethodKernelList, nil, &res); err != nil {
		t.Fatal(err)
	}
	return res.Kernels
}

// importKernel calls kernel.import.
func (e *impEnv) importKernel(t *testing.T, p rpc.KernelImportParams) (rpc.Kernel, error) {
	t.Helper()
	var k rpc.Kernel
	err := e.c.Call(impCtx(t), rpc.MethodKernelImport, p, &k)
	return k, err
}

// assertImageGone checks that a failed or refused image left nothing: no
// row by id or name, no images/ID directory, nothing in staging.
func (e *impEnv) assertImageGone(t *testing.T, id, name string) {
	t.Helper()
	ctx := impCtx(t)
	if id != "" {
		if _, err := e.r.d.store.GetImage(ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("image %s still has a row (%v)", id, err)
		}
		impAssertMissing(t, filepath.Join(e.cfg.Root, "images", id))
	}
	if im, err := e.r.d.store.GetImageByName(ctx, name); !errdefs.IsNotFound(err) {
		t.Errorf("an image named %q is still recorded: %+v (%v)", name, im, err)
	}
	e.assertStagingEmpty(t)
}

func (e *impEnv) assertStagingEmpty(t *testing.T) {
	t.Helper()
	if names := impList(t, filepath.Join(e.cfg.Root, "staging")); len(names) != 0 {
		t.Errorf("staging holds %q, want it empty", names)
	}
}

// rootfs is the path of a ready image's ext4.
func (e *impEnv) rootfs(id string) string {
	return filepath.Join(e.cfg.Root, "images", id, "rootfs.ext4")
}

func impAssertMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists (Lstat: %v), want it gone", path, err)
	}
}

// impList lists a directory's names, sorted.
func impList(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// impSnapshot records every path below the dirs (type, mode, size and,
// for regular files, a digest), leaving out the store's files, whose
// contents change with every call.
func impSnapshot(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if strings.HasPrefix(de.Name(), "banger.db") || strings.HasSuffix(p, ".sock") {
				return nil
			}
			fi, err := de.Info()
			if err != nil {
				return err
			}
			desc := fmt.Sprintf("%v %d", fi.Mode(), fi.Size())
			if fi.Mode().IsRegular() {
				desc += " " + impSHA256(t, p)
			}
			out[p] = desc
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// impDiff describes how two snapshots differ ("" when they do not).
func impDiff(before, after map[string]string) string {
	var lines []string
	for p, a := range after {
		if b, ok := before[p]; !ok {
			lines = append(lines, "added "+p+" ("+a+")")
		} else if a != b {
			lines = append(lines, "changed "+p+": "+b+" -> "+a)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			lines = append(lines, "removed "+p)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func impSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func impWrite(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// impEntry is one tar entry and its contents.
type impEntry struct {
	hdr  tar.Header
	body string
}

// impTar builds an uncompressed tar of entries. Sizes of regular files
// are filled in; the format is PAX so long names survive.
func impTar(t *testing.T, entries ...impEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func impFile(name, body string, mode int64) impEntry {
	return impEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, body: body}
}

func impDir(name string, mode int64) impEntry {
	return impEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

func impSymlink(name, target string) impEntry {
	return impEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func impHardlink(name, target string) impEntry {
	return impEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

// impInode is what `debugfs -R "stat PATH"` says of one inode.
type impInode struct {
	Inode    int
	Type     string // regular, directory, symlink, FIFO, ...
	Mode     string // octal permission bits as debugfs prints them: 0644, 04755
	UID, GID int
	Size     int64
	Links    int
	LinkDest string // a fast symlink's target
}

var (
	impStatHead  = regexp.MustCompile(`Inode: (\d+)\s+Type: (\S+)\s+Mode:\s+(\d+)`)
	impStatOwner = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)\s+Project:\s+\d+\s+Size: (\d+)`)
	impStatLinks = regexp.MustCompile(`Links: (\d+)`)
	impStatDest  = regexp.MustCompile(`Fast link dest: "(.*)"`)
)

// impStat stats path inside the ext4 img with debugfs (no mount). ok is
// false when the path does not exist.
func impStat(t *testing.T, img, path string) (impInode, bool) {
	t.Helper()
	out := impDebugfs(t, img, "stat "+path)
	m := impStatHead.FindStringSubmatch(out)
	if m == nil {
		return impInode{}, false
	}
	var in impInode
	in.Inode, _ = strconv.Atoi(m[1])
	in.Type, in.Mode = m[2], m[3]
	if o := impStatOwner.FindStringSubmatch(out); o != nil {
		in.UID, _ = strconv.Atoi(o[1])
		in.GID, _ = strconv.Atoi(o[2])
		in.Size, _ = strconv.ParseInt(o[3], 10, 64)
	} else {
		t.Fatalf("debugfs stat %s: no owner line in:\n%s", path, out)
	}
	if l := impStatLinks.FindStringSubmatch(out); l != nil {
		in.Links, _ = strconv.Atoi(l[1])
	}
	if d := impStatDest.FindStringSubmatch(out); d != nil {
		in.LinkDest = d[1]
	}
	return in, true
}

// impMustStat is impStat for a path that must exist.
func impMustStat(t *testing.T, img, path string) impInode {
	t.Helper()
	in, ok := impStat(t, img, path)
	if !ok {
		t.Fatalf("%s is missing from %s", path, img)
	}
	return in
}

// impCat returns a file's contents from inside the ext4 img.
func impCat(t *testing.T, img, path string) string {
	t.Helper()
	return impDebugfs(t, img, "cat "+path)
}

func impDebugfs(t *testing.T, img, req string) string {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", req, img)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q %s: %v\n%s", req, img, err, stderr.String())
	}
	return stdout.String()
}

// impMkfs makes an ext4 image of size from the tree at dir, with no
// mount (mkfs.ext4 -d).
func impMkfs(t *testing.T, dir, img, size string) {
	t.Helper()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", dir, img, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d %s %s: %v\n%s", dir, img, err, out)
	}
}

// The stand-in guest kernel: a tiny static Go program, which is what
// checkVmlinux asks of a vmlinux (an x86-64 ELF executable), with a
// kernel banner in its .rodata.
const (
	impKernelVersion = "6.1.0-test"
	impVmlinuxSrc    = `package main

import "os"

const banner = "Linux version ` + impKernelVersion + ` (x)"

func main() {
	if len(os.Args) > 99 {
		println(banner)
	}
}
`
)

// impVmlinux builds the stand-in kernel into dir/vmlinux.
func impVmlinux(t *testing.T, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "vmlinux-src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	impWrite(t, filepath.Join(src, "go.mod"), []byte("module vmlinux\n\ngo 1.26\n"), 0o644)
	impWrite(t, filepath.Join(src, "main.go"), []byte(impVmlinuxSrc), 0o644)
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

// impBangerBinary is the real banger binary: $BANGER_TEST_BINARY, or one
// built into a directory every user may enter, so the daemon can run it
// as a non-root caller (`banger internal read`).
func impBangerBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("BANGER_TEST_BINARY"); bin != "" {
		return bin
	}
	dir, err := os.MkdirTemp("", "bgimpbin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "banger")
	build := exec.Command("go", "build", "-o", bin, "./cmd/banger")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as released: static, so it can be a guest's init
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/banger: %v\n%s", err, out)
	}
	return bin
}
