package cli_test

// Integration tests: the real banger binary, a real daemon process on a
// socket in a temp dir. They need root (the daemon refuses to run without
// it, and chowns its socket) and are skipped by `go test -short`.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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

// bangerBin is the binary under test, set by TestMain when the
// integration tests can run.
var bangerBin string

const shutdownTimeout = 5 * time.Second

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	bangerBin = os.Getenv("BANGER_TEST_BINARY")
	buildDir := ""
	if bangerBin == "" {
		var err error
		if buildDir, err = os.MkdirTemp("", "bgrbin"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bangerBin = filepath.Join(buildDir, "banger")
		build := exec.Command("go", "build", "-o", bangerBin, "./cmd/banger")
		build.Dir = "../.."
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // as released: static, so it can be a guest's init
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./cmd/banger: %v\n%s", err, out)
			os.RemoveAll(buildDir)
			os.Exit(1)
		}
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: runs a real daemon; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("integration test: the daemon must run as root (it chowns its socket and will manage devices); run go test as root")
	}
}

// env is one test's daemon setup: a short temp dir holding the state root,
// the socket and the config file.
type env struct {
	dir, root, sock, config string
}

func newEnv(t *testing.T, group string) *env {
	t.Helper()
	requireRoot(t)
	dir, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{dir: dir, root: filepath.Join(dir, "root"), sock: filepath.Join(dir, "s.sock"), config: filepath.Join(dir, "config.toml")}
	cfg := fmt.Sprintf("group = %q\nshutdown_timeout = %q\nlog_level = \"debug\"\n", group, shutdownTimeout)
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// flags are the global flags that point the binary at e, with root and
// socket overridable.
func (e *env) flags(root, sock string) []string {
	return []string{"--root", root, "--socket", sock, "--config", e.config}
}

// command returns the binary with args (after e's flags).
func (e *env) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bangerBin, append(args, e.flags(e.root, e.sock)...)...)
	cmd.Dir = e.dir
	return cmd
}

// runCmd runs cmd to completion (at most 30s) and returns its exit code
// and output.
func runCmd(t *testing.T, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v\nstderr: %s", cmd, err, errOut.String())
	}
	return code, out.String(), errOut.String()
}

// banger runs the binary against e's daemon.
func (e *env) banger(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runCmd(t, e.command(ctx, args...))
}

// daemonProc is a running `banger daemon`.
type daemonProc struct {
	cmd  *exec.Cmd
	log  string        // its stderr
	done chan struct{} // closed when it exited; then err is set
	err  error
}

func (p *daemonProc) pid() int { return p.cmd.Process.Pid }

func (p *daemonProc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// wait waits up to d for the daemon to exit and reports whether it did.
func (p *daemonProc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// startDaemon starts `banger daemon` on root and sock and waits until it
// answers `banger ls`. It is stopped (SIGTERM, then SIGKILL after 10s)
// when the test ends.
func (e *env) startDaemon(t *testing.T, root, sock string) *daemonProc {
	t.Helper()
	logf, err := os.CreateTemp(e.dir, "daemon*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bangerBin, append([]string{"daemon"}, e.flags(root, sock)...)...)
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{cmd: cmd, log: logf.Name(), done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if p.wait(0) {
			return
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if !p.wait(10 * time.Second) {
			t.Errorf("daemon pid %d ignored SIGTERM for 10s; killing it", p.pid())
			cmd.Process.Kill()
			<-p.done
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ls := exec.CommandContext(ctx, bangerBin, append([]string{"ls"}, e.flags(root, sock)...)...)
		err := ls.Run()
		cancel()
		if err == nil {
			return p
		}
		if p.wait(0) {
			t.Fatalf("daemon exited before answering (%v):\n%s", p.err, p.logText())
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not answer `banger ls` within 10s:\n%s", p.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readPIDFile(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "banger.pid"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	return statT(t, path).Ino
}

func assertAnswers(t *testing.T, e *env) {
	t.Helper()
	if code, out, errOut := e.banger(t, "ls"); code != 0 || !strings.HasPrefix(out, "NAME") {
		t.Errorf("banger ls exited %d, printed %q, stderr %q; want 0 and the table header", code, out, errOut)
	}
}

func assertNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists (Lstat: %v)", path, err)
	}
}

func TestDaemonAnswers(t *testing.T) {
	e := newEnv(t, "root")
	e.startDaemon(t, e.root, e.sock)

	code, out, errOut := e.banger(t, "ls")
	if code != 0 || !strings.HasPrefix(out, "NAME ") || strings.Count(out, "\n") != 1 {
		t.Errorf("ls exited %d, printed %q (stderr %q); want 0 and only the header", code, out, errOut)
	}
	for _, args := range [][]string{{"ls", "-o", "json"}, {"op", "ls", "-o", "json"}} {
		code, out, errOut := e.banger(t, args...)
		if code != 0 || strings.TrimSpace(out) != "[]" {
			t.Errorf("%v exited %d, printed %q (stderr %q); want 0 and []", args, code, out, errOut)
		}
	}
	code, out, errOut = e.banger(t, "version")
	if code != 0 || !strings.HasPrefix(out, "banger ") {
		t.Errorf("version exited %d, printed %q (stderr %q)", code, out, errOut)
	}
}

func TestDoctorJSON(t *testing.T) {
	e := newEnv(t, "root")
	e.startDaemon(t, e.root, e.sock)

	code, out, errOut := e.banger(t, "doctor", "-o", "json")
	var r struct {
		Checks []struct{ Name, Status string }
		VMM    struct{ Name, Why string }
		Disk   struct{ Name, Why string }
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor -o json (exit %d) printed %q: %v\nstderr: %s", code, out, err, errOut)
	}
	if len(r.Checks) < 12 {
		t.Errorf("doctor has %d checks, want at least 12", len(r.Checks))
	}
	failed := false
	for _, c := range r.Checks {
		if c.Name == "" || (c.Status != "ok" && c.Status != "warn" && c.Status != "fail") {
			t.Errorf("doctor check %+v: want a name and a status ok|warn|fail", c)
		}
		failed = failed || c.Status == "fail"
	}
	if r.VMM.Name == "" || r.VMM.Why == "" || r.Disk.Name == "" || r.Disk.Why == "" {
		t.Errorf("doctor: vmm %+v, disk %+v: want names and reasons", r.VMM, r.Disk)
	}
	if want := map[bool]int{false: 0, true: 1}[failed]; code != want {
		t.Errorf("doctor exited %d (some check failed: %v), want %d", code, failed, want)
	}
}

func TestSocketModeAndPIDFile(t *testing.T) {
	e := newEnv(t, "root")
	p := e.startDaemon(t, e.root, e.sock)

	fi, err := os.Lstat(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().String(); got != "Srw-rw----" {
		t.Errorf("socket mode %s, want Srw-rw----", got)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 0 || st.Gid != 0 {
		t.Errorf("socket owned %d:%d, want 0:0", st.Uid, st.Gid)
	}
	if got, want := readPIDFile(t, e.root), fmt.Sprintf("%d\n", p.pid()); got != want {
		t.Errorf("pid file holds %q, want %q", got, want)
	}
}

func TestSecondDaemonSameRoot(t *testing.T) {
	e := newEnv(t, "root")
	p := e.startDaemon(t, e.root, e.sock)
	pidBefore, inoBefore := readPIDFile(t, e.root), inode(t, e.sock)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, bangerBin, append([]string{"daemon"}, e.flags(e.root, filepath.Join(e.dir, "s2.sock"))...)...)
	code, _, errOut := runCmd(t, second)
	if code == 0 {
		t.Errorf("second daemon on the same root exited 0, want an error")
	}
	for _, want := range []string{"already running", fmt.Sprintf("pid %d", p.pid())} {
		if !strings.Contains(errOut, want) {
			t.Errorf("second daemon's stderr %q does not contain %q", errOut, want)
		}
	}

	assertAnswers(t, e)
	if got := readPIDFile(t, e.root); got != pidBefore {
		t.Errorf("pid file changed from %q to %q", pidBefore, got)
	}
	if got := inode(t, e.sock); got != inoBefore {
		t.Errorf("socket inode changed from %d to %d", inoBefore, got)
	}
	assertNotExist(t, filepath.Join(e.dir, "s2.sock"))
}

func TestSecondDaemonSameSocket(t *testing.T) {
	e := newEnv(t, "root")
	e.startDaemon(t, e.root, e.sock)
	inoBefore := inode(t, e.sock)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, bangerBin, append([]string{"daemon"}, e.flags(filepath.Join(e.dir, "root2"), e.sock)...)...)
	code, _, errOut := runCmd(t, second)
	if code == 0 {
		t.Errorf("second daemon on the same socket exited 0, want an error")
	}
	if !strings.Contains(errOut, e.sock) {
		t.Errorf("second daemon's stderr %q does not name the socket %s", errOut, e.sock)
	}
	assertAnswers(t, e)
	if got := inode(t, e.sock); got != inoBefore {
		t.Errorf("socket inode changed from %d to %d", inoBefore, got)
	}
	assertNotExist(t, filepath.Join(e.dir, "root2", "banger.pid"))
}

func TestSIGTERMStopsCleanly(t *testing.T) {
	e := newEnv(t, "root")
	p := e.startDaemon(t, e.root, e.sock)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !p.wait(shutdownTimeout) {
		t.Fatalf("daemon still running %s after SIGTERM:\n%s", shutdownTimeout, p.logText())
	}
	if p.err != nil {
		t.Errorf("daemon exited with %v after SIGTERM, want status 0:\n%s", p.err, p.logText())
	}
	assertNotExist(t, e.sock)
	assertNotExist(t, filepath.Join(e.root, "banger.pid"))

	code, _, errOut := e.banger(t, "ls")
	if code != 1 || !strings.Contains(errOut, "not running") {
		t.Errorf("ls after stop exited %d, stderr %q; want 1 and \"not running\"", code, errOut)
	}
}

func TestRestartAfterSIGKILL(t *testing.T) {
	e := newEnv(t, "root")
	p := e.startDaemon(t, e.root, e.sock)

	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if _, err := os.Lstat(e.sock); err != nil {
		t.Fatalf("no stale socket after SIGKILL: %v", err)
	}
	if got := readPIDFile(t, e.root); got != fmt.Sprintf("%d\n", p.pid()) {
		t.Fatalf("stale pid file holds %q, want the killed daemon's pid %d", got, p.pid())
	}

	// Answering proves the stale socket was replaced (nothing listened on
	// it). Its inode number is no proof: the filesystem may reuse it.
	p2 := e.startDaemon(t, e.root, e.sock)
	assertAnswers(t, e)
	if got, want := readPIDFile(t, e.root), fmt.Sprintf("%d\n", p2.pid()); got != want {
		t.Errorf("pid file holds %q after restart, want %q", got, want)
	}
}

func TestRPCClient(t *testing.T) {
	e := newEnv(t, "root")
	p := e.startDaemon(t, e.root, e.sock)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rpc.Dial(ctx, e.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping, err := c.Ping(ctx)
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if ping.PID != p.pid() {
		t.Errorf("Ping pid = %d, want %d", ping.PID, p.pid())
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.Root != e.root || info.Socket != e.sock || info.ConfigFile != e.config || info.PID != p.pid() || info.SchemaVersion < 1 || info.Version == "" {
		t.Errorf("Info = %+v, want root %s, socket %s, config %s, pid %d, schema >= 1, a version", info, e.root, e.sock, e.config, p.pid())
	}
	if age := time.Since(info.StartedAt); age < 0 || age > time.Minute {
		t.Errorf("Info started_at %v is not within the last minute", info.StartedAt)
	}
}

// TestUnauthorisedCaller checks both guards: the socket's 0660 root:group
// mode, and the daemon's peer-credential check behind it.
func TestUnauthorisedCaller(t *testing.T) {
	requireRoot(t)
	const nobody = 65534
	group := fmt.Sprintf("bgrtest%04d", rand.IntN(10000))
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
	gid64, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	gid := uint32(gid64)

	e := newEnv(t, group)
	if err := os.Chmod(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A copy of the binary that nobody can execute wherever the original is.
	bin := filepath.Join(e.dir, "banger")
	copyFile(t, bangerBin, bin, 0o755)
	e.startDaemon(t, e.root, e.sock)

	if st := statT(t, e.sock); st.Gid != gid {
		t.Errorf("socket gid %d, want %d (%s)", st.Gid, gid, group)
	}
	lsAs := func(groups ...uint32) (int, string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"ls"}, e.flags(e.root, e.sock)...)...)
		cmd.Dir = e.dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: groups}}
		return runCmd(t, cmd)
	}

	// The socket's mode keeps nobody out.
	code, out, errOut := lsAs()
	if code != 1 || out != "" || !strings.Contains(errOut, "permission denied") {
		t.Errorf("ls as nobody exited %d, stdout %q, stderr %q; want 1 and permission denied", code, out, errOut)
	}

	// With the mode opened up, the daemon itself closes the connection.
	if err := os.Chmod(e.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = lsAs()
	if code != 1 || out != "" || !strings.Contains(errOut, "not allowed") {
		t.Errorf("ls as nobody on a 0666 socket exited %d, stdout %q, stderr %q; want 1 and the connection closed (not allowed)", code, out, errOut)
	}
	if err := os.Chmod(e.sock, 0o660); err != nil {
		t.Fatal(err)
	}
	assertAnswers(t, e)

	code, out, errOut = lsAs(gid)
	if code != 0 || !strings.HasPrefix(out, "NAME") {
		t.Errorf("ls as nobody in group %s exited %d, stdout %q, stderr %q; want 0 and the table header", group, code, out, errOut)
	}
}

func statT(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
