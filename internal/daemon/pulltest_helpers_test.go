package daemon

// Helpers for the image pull tests (image_pull_test.go): a daemon with a
// loopback registry, pull-and-watch shorthands, checks that a failed pull
// left nothing, and readers of the ext4 a pull made through debugfs, so
// no test mounts anything.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"banger/internal/config"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
	"banger/internal/testing/ocitest"
)

// pullTimeout bounds one pull in these tests; the largest takes seconds.
const pullTimeout = 60 * time.Second

// pullEnv is a running daemon and a loopback registry.
type pullEnv struct {
	cfg config.Config
	r   *running
	c   *rpc.Client
	reg *ocitest.Registry
}

// pullSetup starts a registry and a daemon (see pullTestConfig).
func pullSetup(t *testing.T) *pullEnv {
	t.Helper()
	needRoot(t)
	pullNeedTools(t)
	reg := ocitest.StartRegistry(t)
	cfg := pullTestConfig(t)
	r := startDaemon(t, cfg)
	return &pullEnv{cfg: cfg, r: r, c: dialDaemon(t, cfg), reg: reg}
}

// pullTestConfig is testConfig with no image headroom, so each ext4 is as
// small as its content allows and mkfs stays quick.
func pullTestConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.ImageHeadroomMiB = 0
	return cfg
}

// pullNeedTools skips when e2fsprogs is missing: the daemon builds images
// with mkfs.ext4 and the tests read them back with debugfs and e2fsck.
func pullNeedTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs e2fsprogs (%s): the daemon builds ext4 images with it and the test reads them back", tool)
		}
	}
}

// start calls image.pull.
func (e *pullEnv) start(t *testing.T, p rpc.ImagePullParams) (rpc.OpStarted, error) {
	t.Helper()
	var started rpc.OpStarted
	err := e.c.Call(context.Background(), rpc.MethodImagePull, p, &started)
	return started, err
}

// watch follows op to its end and returns its final status and every
// status op.watch streamed.
func (e *pullEnv) watch(t *testing.T, opID string) (rpc.Op, []rpc.Op) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pullTimeout)
	defer cancel()
	var mu sync.Mutex
	var events []rpc.Op
	final, err := e.c.WatchOp(ctx, opID, func(op rpc.Op) {
		mu.Lock()
		events = append(events, op)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("op.watch %s: %v", opID, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return final, slices.Clone(events)
}

// pull starts p and follows it to its end.
func (e *pullEnv) pull(t *testing.T, p rpc.ImagePullParams) (rpc.Op, []rpc.Op) {
	t.Helper()
	started := e.mustStart(t, p)
	return e.watch(t, started.OpID)
}

// mustStart starts p and checks the answer names an op and the pending
// image.
func (e *pullEnv) mustStart(t *testing.T, p rpc.ImagePullParams) rpc.OpStarted {
	t.Helper()
	started, err := e.start(t, p)
	if err != nil {
		t.Fatalf("image.pull %s: %v", p.Ref, err)
	}
	if started.OpID == "" || started.Image == nil || started.Image.State != "pending" || started.Image.ID == "" {
		t.Fatalf("image.pull %s answered %+v, want an op id and the pending image", p.Ref, started)
	}
	return started
}

// pullOK pulls p, requires success and returns the image in the op's
// result and the events op.watch streamed.
func (e *pullEnv) pullOK(t *testing.T, p rpc.ImagePullParams) (rpc.Image, []rpc.Op) {
	t.Helper()
	final, events := e.pull(t, p)
	return pullResult(t, final), events
}

// pullResult checks that final succeeded and decodes its image.
func pullResult(t *testing.T, final rpc.Op) rpc.Image {
	t.Helper()
	if final.State != "succeeded" {
		t.Fatalf("pull op %s (%s) ended %s: %s", final.ID, final.Target, final.State, final.Error)
	}
	var im rpc.Image
	if err := json.Unmarshal(final.Result, &im); err != nil {
		t.Fatalf("pull op %s: result %s: %v", final.ID, final.Result, err)
	}
	if im.ID == "" || im.State != "ready" {
		t.Fatalf("pull op %s: result image %+v, want a ready image", final.ID, im)
	}
	return im
}

// pullFails pulls p and requires the op to fail (not be cancelled); it
// returns the final status.
func (e *pullEnv) pullFails(t *testing.T, p rpc.ImagePullParams) rpc.Op {
	t.Helper()
	final, _ := e.pull(t, p)
	if final.State != "failed" || final.Error == "" {
		t.Fatalf("pull %s ended %s (%q), want failed with a reason", p.Ref, final.State, final.Error)
	}
	return final
}

// waitOp polls op.get until cond holds (at most pullTimeout) and returns
// that status. Polling, not op.watch, so no request is in flight when a
// test stops the daemon.
func (e *pullEnv) waitOp(t *testing.T, opID string, what string, cond func(rpc.Op) bool) rpc.Op {
	t.Helper()
	deadline := time.Now().Add(pullTimeout)
	for {
		op, err := e.c.GetOp(context.Background(), opID)
		if err != nil {
			t.Fatalf("op.get %s: %v", opID, err)
		}
		if cond(op) {
			return op
		}
		if op.Done() || time.Now().After(deadline) {
			t.Fatalf("op %s never got to %s; it is %s (%s): %+v", opID, what, op.State, op.Error, op.Progress)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pullDownloading reports whether a pull has received some layer bytes.
func pullDownloading(op rpc.Op) bool {
	return op.State == "running" && op.Progress.Unit == "bytes" && op.Progress.Done > 0
}

// assertNoImage checks that nothing of the image called name is left: no
// row, no directory under images/ but those of the ready images, nothing
// in staging.
func (e *pullEnv) assertNoImage(t *testing.T, name string) {
	t.Helper()
	var im rpc.Image
	if err := e.c.Call(context.Background(), rpc.MethodImageShow, rpc.NameRef{Ref: name}, &im); !errdefs.IsNotFound(err) {
		t.Errorf("image.show %s = %+v, %v; want not found", name, im, err)
	}
	pullAssertRootClean(t, e.cfg, e.r.d.store)
}

// pullAssertRootClean checks the state root against the store: every
// image is ready, images/ holds exactly their directories, and staging is
// empty (no image tree, no half-downloaded layer).
func pullAssertRootClean(t *testing.T, cfg config.Config, s *store.Store) {
	t.Helper()
	ims, err := s.ListImages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, im := range ims {
		if im.State != store.ImageReady {
			t.Errorf("the store holds image %s (%s) in state %s", im.Name, im.ID, im.State)
		}
		want = append(want, im.ID)
	}
	slices.Sort(want)
	if got := pullDirNames(t, filepath.Join(cfg.Root, "images")); !slices.Equal(got, want) {
		t.Errorf("images/ holds %v, want the ready images' directories %v", got, want)
	}
	if got := pullDirNames(t, filepath.Join(cfg.Root, "staging")); len(got) != 0 {
		t.Errorf("staging holds %v, want nothing", got)
	}
}

// pullDirNames lists dir, sorted.
func pullDirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// pullDigest is the digest of a layer or image.
func pullDigest(t *testing.T, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// pullBodySHA256 is the sha256 of the content ocitest generates for a
// SizedFile called name.
func pullBodySHA256(t *testing.T, name string, size int64) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, ocitest.GeneratedBody(name, size)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// pullDebugfs runs one debugfs request against img (read-only) and returns
// its standard output and error.
func pullDebugfs(t *testing.T, img, request string) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command("debugfs", "-R", request, img)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q %s: %v\n%s", request, img, err, errOut.String())
	}
	return out.String(), errOut.String()
}

// pullInode is what `debugfs -R "stat PATH"` says of an inode.
type pullInode struct {
	Inode      int
	Type       string // "regular", "directory", "symlink", "character special", "FIFO", ...
	Mode       string // octal as debugfs prints it: "0644", "04755"
	UID, GID   int
	Size       int64
	Links      int
	Mtime      int64  // seconds since the epoch
	Device     string // "MAJOR:MINOR", decimal, for device nodes
	LinkTarget string // a fast symlink's target
	Xattrs     map[string]string
}

var (
	pullDebugfsInodeRE  = regexp.MustCompile(`Inode: (\d+)\s+Type: ([A-Za-z ]+?)\s+Mode:\s+(\d+)`)
	pullDebugfsOwnerRE  = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	pullDebugfsSizeRE   = regexp.MustCompile(`Project:\s+\d+\s+Size: (\d+)`)
	pullDebugfsLinksRE  = regexp.MustCompile(`Links: (\d+)`)
	pullDebugfsMtimeRE  = regexp.MustCompile(`(?m)^\s*mtime: 0x([0-9a-f]+):`)
	pullDebugfsDeviceRE = regexp.MustCompile(`Device major/minor number: (\d+):(\d+)`)
	pullDebugfsLinkRE   = regexp.MustCompile(`Fast link dest: "(.*)"`)
	pullDebugfsXattrRE  = regexp.MustCompile(`(?m)^\s+(\S+) \(\d+\) = "(.*)"$`)
)

// pullStat stats path in img; ok is false when the image has no such
// path.
func pullStat(t *testing.T, img, path string) (in pullInode, ok bool) {
	t.Helper()
	out, errOut := pullDebugfs(t, img, "stat "+path)
	if strings.Contains(errOut, "File not found") {
		return pullInode{}, false
	}
	m := pullDebugfsInodeRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs stat %s: unexpected output:\n%s%s", path, out, errOut)
	}
	atoi := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("debugfs stat %s: %q: %v", path, s, err)
		}
		return n
	}
	in = pullInode{Inode: atoi(m[1]), Type: m[2], Mode: m[3]}
	if m := pullDebugfsOwnerRE.FindStringSubmatch(out); m != nil {
		in.UID, in.GID = atoi(m[1]), atoi(m[2])
	}
	if m := pullDebugfsSizeRE.FindStringSubmatch(out); m != nil {
		in.Size = int64(atoi(m[1]))
	}
	if m := pullDebugfsLinksRE.FindStringSubmatch(out); m != nil {
		in.Links = atoi(m[1])
	}
	if m := pullDebugfsMtimeRE.FindStringSubmatch(out); m != nil {
		sec, err := strconv.ParseInt(m[1], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		in.Mtime = sec
	}
	if m := pullDebugfsDeviceRE.FindStringSubmatch(out); m != nil {
		in.Device = strconv.Itoa(atoi(m[1])) + ":" + strconv.Itoa(atoi(m[2]))
	}
	if m := pullDebugfsLinkRE.FindStringSubmatch(out); m != nil {
		in.LinkTarget = m[1]
	}
	if _, rest, found := strings.Cut(out, "Extended attributes:\n"); found {
		in.Xattrs = map[string]string{}
		for _, m := range pullDebugfsXattrRE.FindAllStringSubmatch(rest, -1) {
			in.Xattrs[m[1]] = m[2]
		}
	}
	return in, true
}

// pullMustStat is pullStat for a path that must exist.
func pullMustStat(t *testing.T, img, path string) pullInode {
	t.Helper()
	in, ok := pullStat(t, img, path)
	if !ok {
		t.Fatalf("%s has no %s", img, path)
	}
	return in
}

// pullCatSHA256 streams path's content out of img and returns its size and
// sha256.
func pullCatSHA256(t *testing.T, img, path string) (int64, string) {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", "cat "+path, img)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, cerr := io.Copy(h, out)
	if err := cmd.Wait(); err != nil || cerr != nil {
		t.Fatalf("debugfs cat %s: %v %v\n%s", path, err, cerr, errOut.String())
	}
	return n, hex.EncodeToString(h.Sum(nil))
}

// pullCat returns the content of a small file in img.
func pullCat(t *testing.T, img, path string) string {
	t.Helper()
	out, errOut := pullDebugfs(t, img, "cat "+path)
	if strings.Contains(errOut, "File not found") {
		t.Fatalf("%s has no %s", img, path)
	}
	return out
}

// pullFsck runs `e2fsck -fn` on img and fails the test unless the file
// system is clean.
func pullFsck(t *testing.T, img string) {
	t.Helper()
	cmd := exec.Command("e2fsck", "-fn", img)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

// pullFileMode returns path's permission bits (and setuid etc.).
func pullFileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// pullSetupWithRegistry is pullSetup with a registry the test started
// (one with auth, say).
func pullSetupWithRegistry(t *testing.T, reg *ocitest.Registry) *pullEnv {
	t.Helper()
	needRoot(t)
	pullNeedTools(t)
	cfg := pullTestConfig(t)
	r := startDaemon(t, cfg)
	return &pullEnv{cfg: cfg, r: r, c: dialDaemon(t, cfg), reg: reg}
}

// pullAssertNoLayerBlob checks that the layer cache has no blob (and so no
// partial one) for digest.
func pullAssertNoLayerBlob(t *testing.T, cfg config.Config, digest string) {
	t.Helper()
	p := filepath.Join(cfg.Root, "layers", "sha256", strings.TrimPrefix(digest, "sha256:"))
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the layer cache holds %s (Lstat: %v), want nothing for it", digest, err)
	}
}

// pullAssertNoOpenFilesUnder checks that this process (the daemon runs in
// it) holds no descriptor on anything under dir: a pull that ended must
// have released its staging tree.
func pullAssertNoOpenFilesUnder(t *testing.T, dir string) {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil {
			continue // closed since the listing
		}
		if strings.HasPrefix(target, dir+"/") || target == dir || strings.HasPrefix(target, dir+" ") {
			t.Errorf("descriptor %s is still open on %s", fd.Name(), target)
		}
	}
}

// pullProxy is a registry proxy on loopback in front of a test registry
// that misbehaves on chosen blobs: it flips a byte in the middle of those
// in corrupt and never answers for those in stall (until the client goes
// away). Everything else passes through untouched.
type pullProxy struct {
	host           string
	corrupt, stall map[string]bool
	closing        chan struct{} // closed at cleanup: stalled answers end
}

func startPullProxy(t *testing.T, backend string, corrupt, stall []string) *pullProxy {
	t.Helper()
	p := &pullProxy{corrupt: map[string]bool{}, stall: map[string]bool{}, closing: make(chan struct{})}
	for _, d := range corrupt {
		p.corrupt[d] = true
	}
	for _, d := range stall {
		p.stall[d] = true
	}
	tr := &http.Transport{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: backend})
			r.Out.Host = backend
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
		ModifyResponse: func(resp *http.Response) error {
			if d, ok := pullBlobDigest(resp.Request); ok && p.corrupt[d] && resp.StatusCode == http.StatusOK {
				resp.Body = &pullFlipper{rc: resp.Body, at: resp.ContentLength / 2}
			}
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if d, ok := pullBlobDigest(req); ok && p.stall[d] {
			select {
			case <-req.Context().Done():
			case <-p.closing:
			}
			return
		}
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(func() {
		// Closed before the daemon stops (cleanups run last first): end
		// the stalled answers, or Close would wait for them.
		close(p.closing)
		srv.CloseClientConnections()
		srv.Close()
		tr.CloseIdleConnections()
	})
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	p.host = u.Host
	return p
}

// pullBlobDigest returns the digest of a blob GET (/v2/REPO/blobs/DIGEST).
func pullBlobDigest(req *http.Request) (string, bool) {
	if req.Method != http.MethodGet {
		return "", false
	}
	i := strings.LastIndex(req.URL.Path, "/blobs/")
	if i < 0 {
		return "", false
	}
	d := req.URL.Path[i+len("/blobs/"):]
	return d, strings.HasPrefix(d, "sha256:")
}

// pullFlipper flips the bits of the byte at offset at.
type pullFlipper struct {
	rc  io.ReadCloser
	at  int64
	off int64
}

func (f *pullFlipper) Read(p []byte) (int, error) {
	n, err := f.rc.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

func (f *pullFlipper) Close() error { return f.rc.Close() }
