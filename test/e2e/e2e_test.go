package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/testing/guestkernel"
)

// requireTier3 skips (or, with BANGER_TEST_REQUIRE_QEMU=1, fails) when this
// host cannot boot guests.
func requireTier3(t *testing.T) {
	t.Helper()
	var why string
	switch {
	case testing.Short():
		t.Skip("end-to-end tier (boots guests under QEMU); skipped in -short")
	case os.Geteuid() != 0:
		why = "needs root (network namespaces, TAPs, the daemon)"
	default:
		for _, bin := range []string{"qemu-system-x86_64", "ip", "mkfs.ext4"} {
			if _, err := exec.LookPath(bin); err != nil {
				why = bin + " is not installed"
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("BANGER_TEST_REQUIRE_QEMU") == "1" {
		t.Fatalf("BANGER_TEST_REQUIRE_QEMU=1 but %s", why)
	}
	t.Skip(why)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds banger and the Firecracker shim once per test binary,
// into a directory anyone may read (the daemon runs banger as callers).
func binaries(t *testing.T) (banger, shim string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "bge-bin")
		if buildErr != nil {
			return
		}
		os.Chmod(binDir, 0o755)
		root := guestkernel.RepoRoot(t)
		for out, pkg := range map[string]string{"banger": "./cmd/banger", "fcshim": "./internal/testing/fcshim/cmd/fcshim"} {
			if out == "banger" && os.Getenv("BANGER_TEST_BINARY") != "" {
				data, err := os.ReadFile(os.Getenv("BANGER_TEST_BINARY"))
				if err == nil {
					err = os.WriteFile(filepath.Join(binDir, out), data, 0o755)
				}
				if err != nil {
					buildErr = err
					return
				}
				continue
			}
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, out), pkg)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "banger"), filepath.Join(binDir, "fcshim")
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// env is one daemon on a temporary root whose VM networking lives in a
// namespace this test made.
type env struct {
	t      *testing.T
	bin    string
	dir    string
	netns  string
	args   []string
	daemon *exec.Cmd
	exited chan struct{} // closed when daemon is reaped; nil: Wait directly
	log    *syncBuffer
}

// waitDaemon waits for the daemon process to exit and reaps it.
func (e *env) waitDaemon() {
	if e.exited != nil {
		<-e.exited
		return
	}
	e.daemon.Wait()
}

func newEnv(t *testing.T, extraConfig string) *env {
	t.Helper()
	bin, _ := binaries(t)
	dir, err := os.MkdirTemp("", "bge")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	e := &env{t: t, bin: bin, dir: dir, netns: "bge-" + randHex(4), log: &syncBuffer{}}
	t.Cleanup(e.cleanup)
	cfg := fmt.Sprintf("group = \"root\"\nnetns = %q\ndns_upstreams = [\"127.0.0.1:53\"]\ntap_pool_size = 1\nvm_vcpus = 2\nvm_memory_mib = 256\nimage_headroom_mib = 32\nboot_timeout = \"150s\"\n%s", e.netns, extraConfig)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.args = []string{"--root", filepath.Join(dir, "root"), "--socket", filepath.Join(dir, "s.sock"), "--config", filepath.Join(dir, "config.toml")}
	e.daemon = exec.Command(bin, append([]string{"daemon"}, e.args...)...)
	e.daemon.Stderr = e.log
	if err := e.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, _, code := e.run("ls"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not answer:\n%s", e.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

// run runs the CLI and returns stdout, stderr and the exit status.
func (e *env) run(args ...string) (string, string, int) { return e.runIn("", args...) }

// runIn runs the CLI in dir ("": the test's own working directory).
func (e *env) runIn(dir string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	cmd := exec.Command(e.bin, append(append([]string{}, e.args...), args...)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run banger %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs the CLI and fails the test unless it exits 0.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	out, errs, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", strings.Join(args, " "), code, out, errs, tail(e.log.String(), 30))
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup removes every VM, stops the daemon, kills any VMM it left, and
// deletes the namespace (which takes the bridge, TAPs and rules with it).
func (e *env) cleanup() {
	if out, _, code := e.run("ls", "-o", "json"); code == 0 {
		var vms []struct{ Name string }
		json.Unmarshal([]byte(out), &vms)
		for _, vm := range vms {
			e.run("rm", "--force", vm.Name)
		}
	}
	if e.daemon != nil && e.daemon.Process != nil {
		e.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { e.waitDaemon(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			e.daemon.Process.Kill()
			<-done
		}
	}
	for _, pid := range e.vmmPIDs() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// And any VMM no handles.json names (a daemon that died before it
	// recorded one, and did not clean up): its command line names a VM
	// directory under this env's root.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(data), filepath.Join(e.dir, "root", "vms")+"/") || !strings.Contains(string(data), "guest=banger-") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	exec.Command("ip", "netns", "delete", e.netns).Run()
	os.RemoveAll(e.dir)
}

// vmmPIDs are the VMM PIDs recorded in the VMs' handles.json files.
func (e *env) vmmPIDs() []int {
	var pids []int
	files, _ := filepath.Glob(filepath.Join(e.dir, "root", "vms", "*", "handles.json"))
	for _, f := range files {
		var h struct {
			PID int `json:"pid"`
		}
		if data, err := os.ReadFile(f); err == nil && json.Unmarshal(data, &h) == nil && h.PID > 0 {
			pids = append(pids, h.PID)
		}
	}
	return pids
}

// setupImages imports the kernel and a shell-less image holding only the
// probe.
func (e *env) setupImages() {
	e.t.Helper()
	k := guestkernel.Dir(e.t)
	e.ok("kernel", "import", filepath.Join(k, "vmlinux"), "--initrd", filepath.Join(k, "initrd"), "--name", "debian", "--default")
	tree := filepath.Join(e.dir, "tree")
	for _, d := range []string{"bin", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	buildProbe(e.t, filepath.Join(tree, "bin"))
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":  "root:x:0:\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(tree, name), []byte(body), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	e.ok("image", "import", tree, "--name", "probe")
}

func (e *env) show(name string) map[string]any {
	e.t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(e.ok("show", name, "-o", "json")), &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *env) create(name string) (ip, id string, took time.Duration) {
	e.t.Helper()
	start := time.Now()
	e.ok("create", "--image", "probe", "--name", name)
	took = time.Since(start)
	m := e.show(name)
	if m["state"] != "running" {
		e.t.Fatalf("vm %s is %v after create", name, m["state"])
	}
	return m["ip"].(string), m["id"].(string), took
}

// pidAlive: pid exists and has not exited. An exited process whose parent
// died (a VMM a restarted daemon left) may stay a zombie until init reaps
// it; it counts as gone.
func pidAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func TestQEMUBackend(t *testing.T) {
	requireTier3(t)
	e := newEnv(t, "vmm = \"qemu\"\n")
	e.setupImages()
	ipA, idA, took := e.create("alpha")
	t.Logf("create alpha (QEMU, TCG) took %v", took.Round(10*time.Millisecond))

	// exec: output and exit status, no shell in the image.
	if out := e.ok("exec", "alpha", "--", "/bin/probe", "echo", "hello", "from alpha"); out != "hello from alpha\n" {
		t.Errorf("exec echo printed %q", out)
	}
	out, errs, code := e.run("exec", "alpha", "--", "/bin/probe", "exit", "7")
	if code != 7 || !strings.Contains(errs, "exiting with 7") {
		t.Errorf("exec exit 7: code %d, stdout %q, stderr %q", code, out, errs)
	}
	if _, errs, code := e.run("exec", "alpha", "--", "/bin/sh", "-c", "true"); code == 0 {
		t.Errorf("/bin/sh ran in an image without a shell (stderr %q)", errs)
	}
	// stdin streams through with -i.
	cmd := exec.Command(e.bin, append(append([]string{}, e.args...), "exec", "-i", "alpha", "--", "/bin/probe", "cat")...)
	cmd.Stdin = strings.NewReader("piped through the daemon\n")
	if b, err := cmd.Output(); err != nil || string(b) != "piped through the daemon\n" {
		t.Errorf("exec -i cat: %q, %v", b, err)
	}

	// Ctrl-C in the CLI reaches the command as SIGINT; its exit status
	// comes back.
	intOut := &syncBuffer{}
	intCmd := exec.Command(e.bin, append(append([]string{}, e.args...), "exec", "alpha", "--", "/bin/probe", "wait-int")...)
	intCmd.Stdout = intOut
	if err := intCmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300 && !strings.Contains(intOut.String(), "waiting"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	intCmd.Process.Signal(syscall.SIGINT)
	intCmd.Wait()
	if code := intCmd.ProcessState.ExitCode(); code != 42 || !strings.Contains(intOut.String(), "got SIGINT") {
		t.Errorf("exec after Ctrl-C: exit %d, output %q; want 42 and the guest command seeing SIGINT", code, intOut.String())
	}

	// A second VM resolves the first by name.
	_, idB, took := e.create("beta")
	t.Logf("create beta took %v", took.Round(10*time.Millisecond))
	if out := e.ok("exec", "beta", "--", "/bin/probe", "resolve", "alpha.vm.banger"); strings.TrimSpace(out) != ipA {
		t.Errorf("beta resolved alpha.vm.banger to %q, want %s", out, ipA)
	}

	// The guest reaches DNS on the bridge address but no other port there.
	gw := "10.88.0.1"
	listener := exec.Command("ip", "netns", "exec", e.netns, filepath.Join(e.dir, "tree", "bin", "probe"), "listen", gw+":7777", "60s")
	if err := listener.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { listener.Process.Kill(); listener.Wait() }()
	time.Sleep(300 * time.Millisecond)
	if out, errs, code := e.run("exec", "alpha", "--", "/bin/probe", "connect", gw+":7777"); code == 0 {
		t.Errorf("the guest connected to %s:7777 on the bridge (out %q, err %q)", gw, out, errs)
	}
	if out := e.ok("exec", "alpha", "--", "/bin/probe", "connect", gw+":53"); !strings.Contains(out, "connected") {
		t.Errorf("the guest could not reach DNS over TCP on the bridge: %q", out)
	}

	// The guest powers off cleanly: its VMM exits and the console says so.
	pidA := e.handlesPID(idA)
	e.run("exec", "alpha", "--", "/.banger/init", "poweroff")
	deadline := time.Now().Add(30 * time.Second)
	for pidAlive(pidA) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pidAlive(pidA) {
		t.Errorf("the VMM (pid %d) still runs 30s after the guest's poweroff", pidA)
	}
	console, _ := os.ReadFile(filepath.Join(e.dir, "root", "vms", idA, "console.log"))
	if !bytes.Contains(console, []byte("BANGER-POWEROFF")) {
		t.Errorf("the console has no BANGER-POWEROFF line:\n%s", tail(string(console), 20))
	}
	// The daemon notices by itself and records the VM stopped.
	e.waitState("alpha", "stopped", 15*time.Second)
	if m := e.show("alpha"); m["state_reason"] != "the guest powered off" {
		t.Errorf("alpha stopped with reason %v", m["state_reason"])
	}

	// rm leaves nothing: no TAP, no process, no files, no rows.
	pidB := e.handlesPID(idB)
	e.ok("rm", "--force", "alpha")
	e.ok("rm", "--force", "beta")
	if pidAlive(pidB) {
		t.Errorf("beta's VMM (pid %d) survived rm", pidB)
	}
	links, _ := exec.Command("ip", "-n", e.netns, "-o", "link", "show").CombinedOutput()
	for _, id := range []string{idA, idB} {
		if strings.Contains(string(links), "bgt"+id[:12]) {
			t.Errorf("vm %s's TAP survived rm:\n%s", id, links)
		}
		if _, err := os.Stat(filepath.Join(e.dir, "root", "vms", id)); !os.IsNotExist(err) {
			t.Errorf("vm %s's directory survived rm", id)
		}
	}
	if out := e.ok("ls", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("ls after rm: %s", out)
	}
}

// waitState polls show until the VM reaches state.
func (e *env) waitState(name, state string, d time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := e.show(name)
		if m["state"] == state {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("vm %s is %v (%v), not %s after %v", name, m["state"], m["state_reason"], state, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// backend is one VMM configuration the lifecycle tests run on.
type backend struct {
	name   string // the subtest's name
	vmm    string // what `banger show` reports
	config string // the daemon's config lines
}

// forEachBackend runs f as a subtest on QEMU, then on the daemon's
// Firecracker path through the test-only shim (which boots the same
// configuration under QEMU: internal/testing/fcshim).
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	requireTier3(t)
	_, shim := binaries(t)
	for _, b := range []backend{
		// The reconciler runs often, so that a pass that took a VM's own
		// process for an orphan would show here.
		{"qemu", "qemu", "vmm = \"qemu\"\nreconcile_interval = \"300ms\"\n"},
		{"firecracker-shim", "firecracker", fmt.Sprintf("vmm = \"firecracker\"\nfirecracker_binary = %q\nreconcile_interval = \"300ms\"\n", shim)},
	} {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// TestLifecycle, on each backend: stop, start, restart and logs keep the
// VM's disk; set applies at the next start (memory the guest sees, a grown
// filesystem); promote makes an image a new VM boots from with the files
// written before; run --rm leaves nothing; rm ends the VMM. Illegal
// transitions are refused without changing anything.
func TestLifecycle(t *testing.T) {
	forEachBackend(t, testLifecycle)
}

func testLifecycle(t *testing.T, b backend) {
	e := newEnv(t, b.config)
	e.setupImages()
	_, id, took := e.create("delta")
	t.Logf("create delta (%s, TCG) took %v", b.name, took.Round(10*time.Millisecond))
	if m := e.show("delta"); m["vmm"] != b.vmm {
		t.Errorf("vmm = %v, want %s", m["vmm"], b.vmm)
	}
	if _, _, code := e.run("exec", "delta", "--", "/bin/probe", "exit", "3"); code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	e.ok("exec", "delta", "--", "/bin/probe", "write", "/root/kept", "written before the stop")
	if _, errs, code := e.run("start", "delta"); code == 0 || !strings.Contains(errs, "cannot start") {
		t.Errorf("start of a running VM: exit %d, %q", code, errs)
	}
	pid := e.handlesPID(id)
	e.ok("stop", "delta")
	if m := e.show("delta"); m["state"] != "stopped" {
		t.Errorf("after stop: %v", m["state"])
	}
	if pidAlive(pid) {
		t.Errorf("the VMM (pid %d) survived stop", pid)
	}
	links, _ := exec.Command("ip", "-n", e.netns, "-o", "link", "show").CombinedOutput()
	if strings.Contains(string(links), "bgt"+id[:12]) {
		t.Errorf("the TAP survived stop:\n%s", links)
	}
	if _, errs, code := e.run("stop", "delta"); code == 0 || !strings.Contains(errs, "cannot stop") {
		t.Errorf("stop of a stopped VM: exit %d, %q", code, errs)
	}
	if _, errs, code := e.run("exec", "delta", "--", "/bin/probe", "echo"); code == 0 || !strings.Contains(errs, "not running") {
		t.Errorf("exec in a stopped VM: exit %d, %q", code, errs)
	}
	// set: applied at the next start; the disk grows (filesystem too),
	// never shrinks.
	if _, errs, code := e.run("set", "delta", "--disk", "0"); code == 0 {
		t.Errorf("set with nothing to set succeeded: %q", errs)
	}
	e.ok("set", "delta", "--mem", "384", "--disk", "2")
	if _, errs, code := e.run("set", "delta", "--disk", "1"); code == 0 || !strings.Contains(errs, "only grow") {
		t.Errorf("shrinking the disk: exit %d, %q", code, errs)
	}
	e.ok("start", "delta")
	if out := e.ok("exec", "delta", "--", "/bin/probe", "read", "/root/kept"); out != "written before the stop" {
		t.Errorf("after start the file reads %q", out)
	}
	meminfo := e.ok("exec", "delta", "--", "/bin/probe", "read", "/proc/meminfo")
	var memKB int
	fmt.Sscanf(meminfo, "MemTotal: %d kB", &memKB)
	if memKB < 300<<10 || memKB > 384<<10 {
		t.Errorf("after set --mem 384 the guest has MemTotal %d kB", memKB)
	}
	var rootBytes int64
	fmt.Sscan(e.ok("exec", "delta", "--", "/bin/probe", "statfs", "/"), &rootBytes)
	if rootBytes < 1800<<20 {
		t.Errorf("after set --disk 2 the root filesystem is %d bytes", rootBytes)
	}
	if _, errs, code := e.run("set", "delta", "--disk", "3"); code == 0 || !strings.Contains(errs, "stop it") {
		t.Errorf("growing a running VM's disk: exit %d, %q", code, errs)
	}
	e.ok("restart", "delta")
	if out := e.ok("exec", "delta", "--", "/bin/probe", "echo", "back"); out != "back\n" {
		t.Errorf("after restart exec printed %q", out)
	}
	if logs := e.ok("logs", "delta"); !strings.Contains(logs, "BANGER-READY") {
		t.Errorf("logs has no BANGER-READY:\n%s", tail(logs, 10))
	}

	// promote: a stopped VM's disk becomes an image; a VM created from it
	// sees what was written before.
	if _, errs, code := e.run("image", "promote", "delta", "promoted"); code == 0 || !strings.Contains(errs, "stop it first") {
		t.Errorf("promote of a running VM: exit %d, %q", code, errs)
	}
	e.ok("stop", "delta")
	e.ok("image", "promote", "delta", "promoted")
	var im map[string]any
	json.Unmarshal([]byte(e.ok("image", "show", "promoted", "-o", "json")), &im)
	if im["source"] != "promote" || im["state"] != "ready" {
		t.Errorf("promoted image: %v", im)
	}
	e.ok("create", "--image", "promoted", "--name", "epsilon")
	if out := e.ok("exec", "epsilon", "--", "/bin/probe", "read", "/root/kept"); out != "written before the stop" {
		t.Errorf("a VM from the promoted image reads %q", out)
	}
	pidE := e.handlesPID(e.show("epsilon")["id"].(string))
	e.ok("rm", "--force", "epsilon")
	if pidAlive(pidE) {
		t.Errorf("epsilon's VMM (pid %d) survived rm", pidE)
	}
	e.ok("rm", "--force", "delta")

	// run --rm: create, the command's output and status, then nothing left.
	out, errs, code := e.run("run", "--rm", "--no-workspace", "--image", "probe", "--", "/bin/probe", "exit", "6")
	if code != 6 || !strings.Contains(errs, "exiting with 6") {
		t.Errorf("run --rm exit 6: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	e.noVMs("after run --rm")
	if pids := e.vmmPIDs(); len(pids) != 0 {
		t.Errorf("VMM handles left after rm: %v", pids)
	}
}

// handlesPID reads a VM's VMM PID from its handles.json.
func (e *env) handlesPID(id string) int {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(e.dir, "root", "vms", id, "handles.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var h struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(data, &h); err != nil || h.PID <= 0 {
		e.t.Fatalf("handles.json of %s: %s (%v)", id, data, err)
	}
	return h.PID
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
