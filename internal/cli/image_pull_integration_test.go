package cli_test

// Integration tests of `banger image pull` end to end: the real binary, a
// real `banger daemon`, a real registry on loopback (ocitest). They reuse
// integration_test.go's env, and need root like the rest of this tier.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/rpc"
	"banger/internal/testing/ocitest"
)

// pullCLIEnv is a daemon (images without headroom, so mkfs stays quick)
// and the docker config directory the CLI reads credentials from.
type pullCLIEnv struct {
	*env
	home, dockerConfig string
}

func newPullCLIEnv(t *testing.T) *pullCLIEnv {
	t.Helper()
	e := newEnv(t, "root")
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("image_headroom_mib = 0\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	e.startDaemon(t, e.root, e.sock)
	p := &pullCLIEnv{env: e, home: filepath.Join(e.dir, "home"), dockerConfig: filepath.Join(e.dir, "docker")}
	for _, d := range []string{p.home, p.dockerConfig} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// cmd is the binary with args, reading credentials only from
// p.dockerConfig (HOME and the podman locations point elsewhere).
func (p *pullCLIEnv) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := p.command(ctx, args...)
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "HOME", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR":
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+p.home, "DOCKER_CONFIG="+p.dockerConfig)
	return cmd
}

// run runs the binary to completion (at most 60s).
func (p *pullCLIEnv) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return runCmd(t, p.cmd(ctx, args...))
}

// json runs the binary with -o json, requires success and decodes stdout.
func (p *pullCLIEnv) json(t *testing.T, v any, args ...string) {
	t.Helper()
	code, out, errOut := p.run(t, append(args, "-o", "json")...)
	if code != 0 {
		t.Fatalf("banger %v exited %d: %s", args, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("banger %v printed %q: %v", args, out, err)
	}
}

// pullPushSlow pushes an image of one layer with a file of size bytes at
// repo:1 and returns its ref and digest.
func pullPushSlow(t *testing.T, reg *ocitest.Registry, repo string, size int64, opts ...remote.Option) (string, string) {
	t.Helper()
	img := ocitest.Image(t, ocitest.ImageConfig{Cmd: []string{"/bin/sh"}},
		ocitest.Layer(t, ocitest.Dir("opt", 0o755), ocitest.SizedFile("opt/"+repo+".bin", 0o644, size)))
	ref := reg.Ref(repo + ":1")
	ocitest.Push(t, ref, img, opts...)
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref, d.String()
}

func TestCLIPullWithDockerConfigCredentials(t *testing.T) {
	p := newPullCLIEnv(t)
	reg := ocitest.StartRegistryWithAuth(t, "bob", "hunter2")
	ref, digest := pullPushSlow(t, reg, "private", 4<<20, remote.WithAuth(&authn.Basic{Username: "bob", Password: "hunter2"}))

	// Without credentials in the docker config, the registry says no.
	code, out, errOut := p.run(t, "image", "pull", ref, "--name", "priv")
	if code != 1 || !strings.Contains(strings.ToLower(errOut), "unauthorized") {
		t.Errorf("pull without credentials exited %d, stdout %q, stderr %q; want 1 and unauthorized", code, out, errOut)
	}

	// With them, it succeeds. The registry sends the layer slowly enough
	// (about 3s) for the plain-line display to print more than once.
	ocitest.WriteDockerConfig(t, p.dockerConfig, reg.Host(), "bob", "hunter2")
	reg.SetBlobRate(512 << 10)
	code, out, errOut = p.run(t, "image", "pull", ref, "--name", "priv")
	if code != 0 || !strings.HasPrefix(out, "Image priv ready: ") {
		t.Fatalf("pull with docker config credentials exited %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "Pulling "+ref+" as image priv (operation ") {
		t.Errorf("stderr starts %q, want the Pulling line", lines[0])
	}
	downloads := 0
	for _, l := range lines[1:] {
		if strings.Contains(l, "\x1b") {
			t.Errorf("non-terminal progress holds an escape sequence: %q", l)
		}
		if !strings.HasPrefix(l, "pull priv: ") {
			t.Errorf("progress line %q does not start with the op's title", l)
		}
		if strings.HasPrefix(l, "pull priv: download ") {
			downloads++
		}
	}
	if downloads < 2 {
		t.Errorf("%d download lines during a 3s download, want periodic lines:\n%s", downloads, errOut)
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "pull priv: succeeded") {
		t.Errorf("the last progress line is %q, want the succeeded line", last)
	}

	var list []rpc.Image
	p.json(t, &list, "image", "ls")
	if len(list) != 1 || list[0].Name != "priv" || list[0].State != "ready" || list[0].SourceRef != ref {
		t.Errorf("image ls -o json = %+v, want the one image priv, ready, from %s", list, ref)
	}
	var shown rpc.Image
	p.json(t, &shown, "image", "show", "priv")
	if shown.Digest != digest || shown.Path == "" {
		t.Errorf("image show priv -o json = %+v, want digest %s and a path", shown, digest)
	}
	if _, err := os.Stat(shown.Path); err != nil {
		t.Error(err)
	}

	code, out, errOut = p.run(t, "image", "rm", "priv")
	if code != 0 || out != "Removed image priv\n" {
		t.Errorf("image rm priv exited %d, stdout %q, stderr %q", code, out, errOut)
	}
	p.json(t, &list, "image", "ls")
	if len(list) != 0 {
		t.Errorf("image ls after rm = %+v, want none", list)
	}
	assertNotExist(t, filepath.Dir(shown.Path))
}

func TestCLIPullJSONStream(t *testing.T) {
	p := newPullCLIEnv(t)
	reg := ocitest.StartRegistry(t)
	ref, digest := pullPushSlow(t, reg, "app", 1<<20)

	code, out, errOut := p.run(t, "image", "pull", ref, "-o", "json")
	if code != 0 {
		t.Fatalf("pull -o json exited %d: %s", code, errOut)
	}
	if errOut != "" {
		t.Errorf("pull -o json wrote to stderr: %q", errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("pull -o json printed %d lines, want a stream:\n%s", len(lines), out)
	}
	var last rpc.Op
	for i, l := range lines {
		var op rpc.Op
		if err := json.Unmarshal([]byte(l), &op); err != nil {
			t.Fatalf("line %d %q is not a JSON op: %v", i+1, l, err)
		}
		if op.ID == "" || op.Kind != rpc.MethodImagePull || op.Target != "app:1" {
			t.Errorf("line %d: op %+v, want the image.pull of app:1", i+1, op)
		}
		if i > 0 && (op.Seq <= last.Seq || op.ID != last.ID) {
			t.Errorf("line %d: seq %d after %d (op %s after %s); want one op, seq increasing", i+1, op.Seq, last.Seq, op.ID, last.ID)
		}
		last = op
	}
	var im rpc.Image
	if last.State != "succeeded" || json.Unmarshal(last.Result, &im) != nil || im.Name != "app:1" || im.Digest != digest {
		t.Errorf("last line: %s %s, result %s; want succeeded with the image app:1 (%s)", last.State, last.Error, last.Result, digest)
	}
}

// pullProc is a `banger image pull` running in the background.
type pullProc struct {
	cmd   *exec.Cmd
	done  chan struct{}
	lines chan string // stderr, line by line

	mu     sync.Mutex
	stderr strings.Builder // guarded by mu
}

func (p *pullCLIEnv) startPull(t *testing.T, args ...string) *pullProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	pp := &pullProc{cmd: p.cmd(ctx, append([]string{"image", "pull"}, args...)...), done: make(chan struct{}), lines: make(chan string, 1000)}
	pp.cmd.Stdout = io.Discard
	r, err := pp.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			pp.mu.Lock()
			pp.stderr.WriteString(sc.Text() + "\n")
			pp.mu.Unlock()
			select {
			case pp.lines <- sc.Text():
			default:
			}
		}
		close(pp.lines)
		pp.cmd.Wait()
		close(pp.done)
	}()
	t.Cleanup(func() { <-pp.done })
	return pp
}

var pullOpIDRE = regexp.MustCompile(`\(operation ([0-9a-f]+)\)`)

// opID waits for the Pulling line and returns the operation's id.
func (pp *pullProc) opID(t *testing.T) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-pp.lines:
			if !ok {
				t.Fatalf("banger image pull ended before naming its operation:\n%s", pp.errText())
			}
			if m := pullOpIDRE.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("banger image pull named no operation in 30s:\n%s", pp.errText())
		}
	}
}

func (pp *pullProc) errText() string {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.stderr.String()
}

// interrupt sends SIGINT and returns the exit status.
func (pp *pullProc) interrupt(t *testing.T) int {
	t.Helper()
	if err := pp.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pp.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("banger image pull still running 30s after SIGINT:\n%s", pp.errText())
	}
	return pp.cmd.ProcessState.ExitCode()
}

// waitDownloading polls the daemon until op has received layer bytes.
func (p *pullCLIEnv) waitDownloading(t *testing.T, opID string) {
	t.Helper()
	c, err := rpc.Dial(context.Background(), p.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		op, err := c.GetOp(context.Background(), opID)
		if err != nil {
			t.Fatal(err)
		}
		if op.State == "running" && op.Progress.Unit == "bytes" && op.Progress.Done > 0 {
			return
		}
		if op.Done() || time.Now().After(deadline) {
			t.Fatalf("op %s never got to downloading: %+v", opID, op)
		}
	}
}

func (p *pullCLIEnv) opState(t *testing.T, opID string) rpc.Op {
	t.Helper()
	var op rpc.Op
	p.json(t, &op, "op", "show", opID)
	return op
}

// TestCLIPullInterrupt: Ctrl-C stops following, not the pull, which
// --attach then follows to its end; with --cancel-on-interrupt it cancels
// the pull.
func TestCLIPullInterrupt(t *testing.T) {
	p := newPullCLIEnv(t)
	reg := ocitest.StartRegistry(t)
	// About 3s each at the rate below: Ctrl-C lands mid-download.
	bgRef, _ := pullPushSlow(t, reg, "bg", 4<<20)
	cxRef, _ := pullPushSlow(t, reg, "cx", 4<<20)
	reg.SetBlobRate(512 << 10)

	pp := p.startPull(t, bgRef, "--name", "bg")
	opID := pp.opID(t)
	p.waitDownloading(t, opID)
	if code := pp.interrupt(t); code != 130 {
		t.Errorf("interrupted pull exited %d, want 130:\n%s", code, pp.errText())
	}
	if hint := "goes on in the daemon. Follow it with `banger image pull --attach " + opID + "`"; !strings.Contains(pp.errText(), hint) {
		t.Errorf("interrupted pull's stderr lacks %q:\n%s", hint, pp.errText())
	}
	if op := p.opState(t, opID); op.State != "running" {
		t.Errorf("after Ctrl-C the op is %s (%s), want still running", op.State, op.Error)
	}
	code, out, errOut := p.run(t, "image", "pull", "--attach", opID)
	if code != 0 || !strings.HasPrefix(out, "Image bg ready: ") || !strings.Contains(errOut, "pull bg: succeeded") {
		t.Errorf("pull --attach %s exited %d, stdout %q, stderr:\n%s", opID, code, out, errOut)
	}
	if op := p.opState(t, opID); op.State != "succeeded" {
		t.Errorf("op %s ended %s (%s), want succeeded", opID, op.State, op.Error)
	}

	pp = p.startPull(t, cxRef, "--name", "cx", "--cancel-on-interrupt")
	opID = pp.opID(t)
	p.waitDownloading(t, opID)
	if code := pp.interrupt(t); code != 130 {
		t.Errorf("interrupted pull --cancel-on-interrupt exited %d, want 130:\n%s", code, pp.errText())
	}
	if !strings.Contains(pp.errText(), "cancelling operation "+opID) || !strings.Contains(pp.errText(), "pull cx: canceled") {
		t.Errorf("pull --cancel-on-interrupt's stderr does not show the cancel:\n%s", pp.errText())
	}
	if op := p.opState(t, opID); op.State != "canceled" {
		t.Errorf("op %s ended %s (%s), want canceled", opID, op.State, op.Error)
	}
	if code, _, errOut := p.run(t, "image", "show", "cx"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("image show cx after the cancel exited %d, stderr %q; want 1 and not found", code, errOut)
	}
	var list []rpc.Image
	p.json(t, &list, "image", "ls")
	if len(list) != 1 || list[0].Name != "bg" {
		t.Errorf("images after the cancel: %+v, want only bg", list)
	}
	entries, err := os.ReadDir(filepath.Join(p.root, "staging"))
	if err != nil || len(entries) != 0 {
		t.Errorf("staging after the cancel: %v, %v; want empty", entries, err)
	}
	if entries, err := os.ReadDir(filepath.Join(p.root, "images")); err != nil || len(entries) != 1 || entries[0].Name() != list[0].ID {
		t.Errorf("images/ after the cancel: %v, %v; want only bg's directory", entries, err)
	}
}
