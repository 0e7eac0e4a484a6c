package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/store"
	"banger/internal/testing/fakevmm"
	"banger/internal/testing/guestkernel"
	"banger/internal/testing/ocitest"
)

// crashPoints are the named points of internal/daemon/crashpoint.go, by
// the op that reaches them.
var crashPoints = map[string][]string{
	"create": {"create.recorded", "create.disk", "boot.tap", "boot.spawned", "boot.vmm", "boot.ready"},
	"start":  {"boot.tap", "boot.spawned", "boot.vmm", "boot.ready"},
	"stop":   {"stop.recorded", "stop.released"},
	"rm":     {"rm.recorded", "rm.stopped", "rm.files"},
	// Image ops: the pending row and staging made, then each step
	// before the row says ready.
	"pull":    {"image.staged", "pull.layers", "pull.flattened", "pull.built", "image.moved"},
	"import":  {"image.staged", "import.built", "image.moved"},
	"promote": {"image.staged", "promote.copied", "image.moved"},
}

// startDaemon (re)starts the daemon with extra environment, and waits for
// it to answer.
func (e *env) startDaemon(extraEnv ...string) {
	e.t.Helper()
	e.startDaemonFrom(e.bin, extraEnv...)
}

// startDaemonFrom is startDaemon running the daemon binary at bin.
func (e *env) startDaemonFrom(bin string, extraEnv ...string) {
	e.t.Helper()
	e.daemon = exec.Command(bin, append([]string{"daemon"}, e.args...)...)
	e.daemon.Stderr = e.log
	e.daemon.Env = append(os.Environ(), extraEnv...)
	if err := e.daemon.Start(); err != nil {
		e.t.Fatal(err)
	}
	exited, cmd := make(chan struct{}), e.daemon
	e.exited = exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, _, code := e.run("ls"); code == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("daemon did not answer:\n%s", tail(e.log.String(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killDaemon SIGKILLs the daemon (if it has not died already) and reaps it.
func (e *env) killDaemon() {
	e.daemon.Process.Signal(syscall.SIGKILL)
	e.waitDaemon()
}

type vmRow struct {
	ID, Name, State, IP string
	Reason              string `json:"state_reason"`
}

func (e *env) listVMs() []vmRow {
	e.t.Helper()
	var vms []vmRow
	if err := json.Unmarshal([]byte(e.ok("ls", "-o", "json")), &vms); err != nil {
		e.t.Fatal(err)
	}
	return vms
}

// The soak test: SIGKILL the daemon at each named phase of create, start,
// stop and rm, of an image pull (from a registry on loopback), import and
// promote, or from outside after a random delay, restart it, and check
// that the store agrees with the host, running VMs were adopted, no image
// was left half made (and an interrupted one can be made again), and
// nothing leaked. The VMM is the fake QEMU (internal/testing/fakevmm): a
// real process on the daemon's real QEMU path that boots in milliseconds
// and outlives the daemon, as QEMU does.
func TestCrashSoak(t *testing.T) {
	requireTier3(t)
	fake := fakevmm.Build(t)
	e := newEnv(t, fmt.Sprintf("vmm = \"qemu\"\nqemu_binary = %q\nreconcile_interval = \"500ms\"\n", fake))
	e.setupCrashImage()
	reg := ocitest.StartRegistry(t)
	pullRef := reg.Ref("soak:1")
	ocitest.Push(t, pullRef, ocitest.Image(t, ocitest.ImageConfig{Cmd: []string{"/bin/true"}},
		ocitest.Layer(t, ocitest.Dir("etc", 0o755), ocitest.File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n")),
		ocitest.Layer(t, ocitest.Dir("usr", 0o755), ocitest.SizedFile("usr/one.bin", 0o644, 256<<10)),
		ocitest.Layer(t, ocitest.Dir("usr", 0o755), ocitest.SizedFile("usr/two.bin", 0o644, 512<<10)),
	))

	trials := 80
	if s := os.Getenv("BANGER_SOAK_TRIALS"); s != "" {
		trials, _ = strconv.Atoi(s)
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("BANGER_SOAK_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (BANGER_SOAK_SEED reuses it; timing still differs)", seed)
	rng := rand.New(rand.NewSource(seed))
	ops := []string{"create", "start", "stop", "rm", "pull", "import", "promote"}
	outcomes := map[string]int{}
	for i := 0; i < trials; i++ {
		op := ops[rng.Intn(len(ops))]
		target := e.prepareFor(op, i)
		point := ""
		if rng.Intn(4) > 0 {
			pts := crashPoints[op]
			point = pts[rng.Intn(len(pts))]
		}
		// Restart with the crash point armed, then run the op.
		e.killDaemon()
		if point != "" {
			e.startDaemon("BANGER_TEST_CRASH_AT=" + point)
		} else {
			e.startDaemon()
		}
		var args []string
		imageName := fmt.Sprintf("i%d", i)
		switch op {
		case "create":
			args = []string{"create", "--image", "crash", "--name", target}
		case "rm":
			args = []string{"rm", "--force", target}
		case "pull":
			args = []string{"image", "pull", pullRef, "--name", imageName}
		case "import":
			args = []string{"image", "import", filepath.Join(e.dir, "crash-tree"), "--name", imageName}
		case "promote":
			args = []string{"image", "promote", target, imageName}
		default:
			args = []string{op, target}
		}
		cli := exec.Command(e.bin, append(append([]string{}, e.args...), args...)...)
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		cliDone := make(chan error, 1)
		go func() { cliDone <- cli.Wait() }()
		// The CLI ends, or the daemon kills itself at the point; without
		// one, the daemon is killed after a random delay. Then it is
		// restarted, as a service manager would, and the CLI (which
		// waits for the daemon to come back when it dies under an op it
		// follows) ends.
		var delay <-chan time.Time
		if point == "" {
			delay = time.After(time.Duration(rng.Intn(400)) * time.Millisecond)
		}
		cliEnded := false
		select {
		case <-cliDone:
			cliEnded = true
		case <-e.exited:
		case <-delay:
		case <-time.After(30 * time.Second):
		}
		e.killDaemon()
		e.startDaemon()
		if !cliEnded {
			select {
			case <-cliDone:
			case <-time.After(90 * time.Second):
				cli.Process.Kill()
				<-cliDone
				t.Fatalf("trial %d: %s %s did not end after the daemon came back", i, op, target)
			}
		}
		trial := fmt.Sprintf("trial %d (%s %s, crash at %q)", i, op, target, point)
		if point != "" && cli.ProcessState.ExitCode() == 0 {
			t.Errorf("%s: the CLI exited 0 though the daemon was killed under it", trial)
		}
		outcome := e.checkConsistent(trial, target)
		e.checkImages(trial)
		if op == "pull" || op == "import" || op == "promote" {
			outcome = e.checkImageOp(trial, imageName, point != "", args)
		}
		outcomes[op+"→"+outcome]++
		if t.Failed() {
			t.Logf("daemon log:\n%s", tail(e.log.String(), 40))
			return
		}
	}
	t.Logf("outcomes: %v", outcomes)
}

// setupCrashImage imports the guest kernel and a tiny image (the fake VMM
// reads neither; the daemon checks what it is given).
func (e *env) setupCrashImage() {
	e.t.Helper()
	k := guestkernel.Dir(e.t)
	e.ok("kernel", "import", filepath.Join(k, "vmlinux"), "--name", "debian", "--default")
	tree := filepath.Join(e.dir, "crash-tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	e.ok("image", "import", tree, "--name", "crash")
}

// prepareFor makes sure op has a VM to act on and returns its name: a new
// name for create, a stopped VM for start, a running one for stop and rm.
func (e *env) prepareFor(op string, i int) string {
	e.t.Helper()
	vms := e.listVMs()
	want := map[string]string{"start": "stopped", "stop": "running", "rm": "running", "promote": "stopped"}[op]
	if op == "create" || op == "pull" || op == "import" {
		return fmt.Sprintf("c%d", i)
	}
	for _, vm := range vms {
		if vm.State == want {
			return vm.Name
		}
	}
	name := fmt.Sprintf("p%d", i)
	e.ok("create", "--image", "crash", "--name", name)
	if want == "stopped" {
		e.ok("stop", name)
	}
	return name
}

// checkConsistent asserts the daemon's records and the host agree after a
// restart: every VM settled (running, stopped or error), each running VM
// adopted (exec works, its one VMM process alive), nothing without a
// record (TAP, VMM process, VM directory, IP allocation). It returns the
// state the trial's VM ended in, for the tally.
func (e *env) checkConsistent(trial, target string) string {
	e.t.Helper()
	vms := e.listVMs()
	byID := map[string]vmRow{}
	for _, vm := range vms {
		byID[vm.ID] = vm
		switch vm.State {
		case "running":
			if out, errs, code := e.run("exec", vm.Name, "--", "echo", "alive"); code != 0 || out != "alive\n" {
				e.t.Errorf("%s: running vm %s: exec = %q, %q, %d", trial, vm.Name, out, errs, code)
			}
		case "stopped", "error":
		default:
			e.t.Errorf("%s: vm %s left %s (%s) after the restart", trial, vm.Name, vm.State, vm.Reason)
		}
	}
	// VMM processes of this root: exactly one per running VM.
	root := filepath.Join(e.dir, "root")
	perVM := map[string]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(data), root+"/vms/") || !strings.Contains(string(data), "guest=banger-") {
			continue
		}
		for _, arg := range strings.Split(string(data), "\x00") {
			if id, ok := strings.CutPrefix(arg, "guest=banger-"); ok {
				perVM[id]++
			}
		}
	}
	for id, n := range perVM {
		if vm, ok := byID[id]; !ok || vm.State != "running" || n != 1 {
			e.t.Errorf("%s: %d VMM process(es) for vm %s (%+v)", trial, n, id, vm)
		}
	}
	for _, vm := range vms {
		if vm.State == "running" && perVM[vm.ID] != 1 {
			e.t.Errorf("%s: running vm %s has %d VMM processes", trial, vm.Name, perVM[vm.ID])
		}
	}
	// TAPs in the namespace: only running VMs' (bgt + 12 hex of the id);
	// idle pool TAPs (bgtp…) are the pool's.
	out, _ := exec.Command("ip", "-n", e.netns, "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		prefix, ok := strings.CutPrefix(name, "bgt")
		if !ok || strings.HasPrefix(prefix, "p") {
			continue
		}
		owned := false
		for _, vm := range vms {
			if strings.HasPrefix(vm.ID, prefix) && vm.State == "running" {
				owned = true
			}
		}
		if !owned {
			e.t.Errorf("%s: TAP %s has no running VM", trial, name)
		}
	}
	// VM directories and IP allocations: only for recorded VMs.
	dirs, _ := os.ReadDir(filepath.Join(root, "vms"))
	for _, d := range dirs {
		if _, ok := byID[d.Name()]; !ok {
			e.t.Errorf("%s: directory vms/%s has no VM", trial, d.Name())
		}
	}
	s, err := store.Open(context.Background(), filepath.Join(root, "banger.db"))
	if err != nil {
		e.t.Fatalf("%s: open the store: %v", trial, err)
	}
	allocs, err := s.ListIPAllocations(context.Background())
	s.Close()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, a := range allocs {
		if _, ok := byID[a.VMID]; !ok {
			e.t.Errorf("%s: IP %s allocated to vm %s, which has no record", trial, a.IP, a.VMID)
		}
	}
	// The daemon's own ledger agrees: no orphans.
	var res struct {
		Objects []struct {
			Kind, Name string
			Orphan     bool
		}
	}
	if err := json.Unmarshal([]byte(e.ok("doctor", "--fix", "--dry-run", "-o", "json")), &res); err != nil {
		e.t.Fatal(err)
	}
	for _, o := range res.Objects {
		if o.Orphan {
			e.t.Errorf("%s: the ledger reports orphan %s %s", trial, o.Kind, o.Name)
		}
	}
	for _, vm := range vms {
		if vm.Name == target {
			return vm.State
		}
	}
	return "gone"
}

type imageRow struct {
	ID, Name, State string
	Reason          string `json:"state_reason"`
}

func (e *env) listImages() []imageRow {
	e.t.Helper()
	var ims []imageRow
	if err := json.Unmarshal([]byte(e.ok("image", "ls", "-o", "json")), &ims); err != nil {
		e.t.Fatal(err)
	}
	return ims
}

// checkImages asserts that after a restart no image is left half made:
// every image is ready, images/ holds exactly their directories, staging
// is empty, and the layer cache holds only complete blobs, each with the
// digest it is named by (a partial download never took a digest's name).
func (e *env) checkImages(trial string) {
	e.t.Helper()
	root := filepath.Join(e.dir, "root")
	ids := map[string]bool{}
	for _, im := range e.listImages() {
		ids[im.ID] = true
		if im.State != "ready" {
			e.t.Errorf("%s: image %s left %s (%s) after the restart", trial, im.Name, im.State, im.Reason)
		}
	}
	dirs, _ := os.ReadDir(filepath.Join(root, "images"))
	for _, d := range dirs {
		if !ids[d.Name()] {
			e.t.Errorf("%s: directory images/%s has no image", trial, d.Name())
		}
	}
	if left, _ := os.ReadDir(filepath.Join(root, "staging")); len(left) != 0 {
		e.t.Errorf("%s: staging holds %d entries after the restart (%s…)", trial, len(left), left[0].Name())
	}
	filepath.WalkDir(filepath.Join(root, "layers"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(root, "layers"), p)
		alg, hexName, _ := strings.Cut(rel, "/")
		data, err := os.ReadFile(p)
		if err != nil {
			e.t.Errorf("%s: read cached layer %s: %v", trial, rel, err)
			return nil
		}
		if sum := sha256.Sum256(data); alg != "sha256" || hex.EncodeToString(sum[:]) != hexName {
			e.t.Errorf("%s: the layer cache holds %s, whose content has sha256 %x", trial, rel, sum)
		}
		return nil
	})
}

// checkImageOp settles an image op's trial: the image it was making is
// ready, or it is gone and its op (found in the store; op.list shows only
// this run's ops) says interrupted through `op show`, and running the same
// command again makes it. A crash point armed means the op must have been
// cut short. The image is removed after, so trials do not pile them up.
// It returns how the trial ended, for the tally.
func (e *env) checkImageOp(trial, name string, armed bool, args []string) string {
	e.t.Helper()
	s, err := store.Open(context.Background(), filepath.Join(e.dir, "root", "banger.db"))
	if err != nil {
		e.t.Fatalf("%s: open the store: %v", trial, err)
	}
	ops, err := s.ListOperations(context.Background())
	s.Close()
	if err != nil {
		e.t.Fatal(err)
	}
	opID := ""
	for _, op := range ops {
		if op.Target == name && strings.HasPrefix(op.Kind, "image.") {
			opID = op.ID
		}
	}
	var shown imageRow
	out, _, code := e.run("image", "show", name, "-o", "json")
	if code == 0 {
		if err := json.Unmarshal([]byte(out), &shown); err != nil {
			e.t.Fatal(err)
		}
	}
	made := code == 0 && shown.State == "ready"
	outcome := "ready"
	switch {
	case made && armed:
		e.t.Errorf("%s: the crash point was armed but image %s was made", trial, name)
	case !made && opID == "" && armed:
		e.t.Errorf("%s: the crash point was armed but image %s has no operation", trial, name)
	case !made && opID != "":
		var op struct{ State, Error string }
		if err := json.Unmarshal([]byte(e.ok("op", "show", opID, "-o", "json")), &op); err != nil {
			e.t.Fatal(err)
		}
		if op.State != "interrupted" || !strings.Contains(op.Error, "daemon stopped") {
			e.t.Errorf("%s: op show %s = %s (%q), want interrupted by the daemon stop", trial, opID, op.State, op.Error)
		}
		outcome = "interrupted"
	case !made:
		outcome = "not started"
	}
	if !made {
		e.ok(args...)
		e.checkImages(trial + ", retried")
		if err := json.Unmarshal([]byte(e.ok("image", "show", name, "-o", "json")), &shown); err != nil || shown.State != "ready" {
			e.t.Errorf("%s: the retry left image %s as %+v (%v)", trial, name, shown, err)
		}
	}
	e.ok("image", "rm", name)
	return outcome
}
