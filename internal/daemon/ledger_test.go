package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/vmnet"
	"banger/internal/rpc"
	"banger/internal/store"
)

// plantOrphans leaves what a crash could: a TAP, a VM directory and a VMM
// process for a VM no record has. It also starts a process that looks
// like another daemon's VMM (another root), which is not this daemon's
// to touch. It returns the orphan VMM's and the foreign process's PIDs.
func (e *vmtEnv) plantOrphans(t *testing.T, ghost string) (orphanPID, foreignPID int) {
	t.Helper()
	tap, err := vmnet.TAPName(ghost)
	if err != nil {
		t.Fatal(err)
	}
	e.ipLink(t, "tuntap", "add", tap, "mode", "tap")
	if err := os.MkdirAll(filepath.Join(e.d.layout.VMDir(ghost), "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	start := func(argv0 string) int {
		cmd := exec.Command("bash", "-c", "exec -a "+argv0+" sleep 60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		t.Cleanup(func() { cmd.Process.Kill() })
		vmtWaitFor(2*time.Second, func() bool {
			exe, _ := procExe(cmd.Process.Pid)
			return strings.HasSuffix(exe, "/sleep")
		})
		return cmd.Process.Pid
	}
	orphanPID = start("guest=banger-" + ghost + ",qmp=" + e.d.layout.VMMSocket(ghost))
	foreignPID = start("guest=banger-" + ghost + ",qmp=/elsewhere/vms/" + ghost + "/vmm.sock")
	return orphanPID, foreignPID
}

func (e *vmtEnv) reconcile(t *testing.T, dryRun bool) map[string]rpc.HostObject {
	t.Helper()
	var res rpc.ReconcileResult
	if err := e.c.Call(e.ctx(), rpc.MethodReconcile, rpc.ReconcileParams{DryRun: dryRun}, &res); err != nil {
		t.Fatal(err)
	}
	out := map[string]rpc.HostObject{}
	for _, o := range res.Objects {
		out[o.Kind+" "+o.Name] = o
	}
	return out
}

// doctor --fix: the ledger lists every object with its owner; --dry-run
// changes nothing; --fix removes the orphans and only them.
func TestLedgerFindsAndRemovesOrphans(t *testing.T) {
	e := vmtSetup(t, func(c *config.Config) { c.ReconcileInterval = config.Duration(time.Hour) })
	vm := e.mustCreate(t, "owned")
	ghost := store.NewID()
	orphanPID, foreignPID := e.plantOrphans(t, ghost)
	tap, _ := vmnet.TAPName(ghost)
	ownTAP, _ := vmnet.TAPName(vm.ID)
	want := []struct {
		key    string
		orphan bool
	}{
		{"tap " + tap, true},
		{"tap " + ownTAP, false},
		{"vm-dir " + e.d.layout.VMDir(ghost), true},
		{"vm-dir " + e.d.layout.VMDir(vm.ID), false},
		{"vmm " + itoa(orphanPID), true},
		{"vmm " + itoa(e.handlesPID(t, vm.ID)), false},
	}
	check := func(got map[string]rpc.HostObject, removed bool) {
		t.Helper()
		for _, w := range want {
			o, ok := got[w.key]
			if !ok {
				t.Errorf("ledger lacks %s; it has %v", w.key, keys(got))
				continue
			}
			if o.Orphan != w.orphan || o.Removed != (w.orphan && removed) || o.Error != "" {
				t.Errorf("%s: %+v, want orphan %v removed %v", w.key, o, w.orphan, w.orphan && removed)
			}
		}
		if _, ok := got["vmm "+itoa(foreignPID)]; ok {
			t.Errorf("the ledger lists pid %d, another root's VMM", foreignPID)
		}
	}

	check(e.reconcile(t, true), false)
	if !e.linkExists(t, tap) || processGone(orphanPID) {
		t.Fatal("--dry-run removed something")
	}
	if _, err := os.Stat(e.d.layout.VMDir(ghost)); err != nil {
		t.Fatal("--dry-run removed the orphan directory")
	}

	check(e.reconcile(t, false), true)
	if e.linkExists(t, tap) {
		t.Errorf("orphan TAP %s still exists", tap)
	}
	if !waitGone(orphanPID, 5*time.Second) {
		t.Errorf("orphan VMM %d still runs", orphanPID)
	}
	if _, err := os.Stat(e.d.layout.VMDir(ghost)); !os.IsNotExist(err) {
		t.Errorf("orphan directory: %v, want it gone", err)
	}
	if processGone(foreignPID) {
		t.Errorf("another root's VMM (pid %d) was killed", foreignPID)
	}
	e.assertRunning(t, vm.ID, vm.Name)
	if got := e.reconcile(t, true); len(orphansIn(got)) != 0 {
		t.Errorf("orphans after --fix: %v", orphansIn(got))
	}
}

// The background reconciler removes orphans by itself within a few
// intervals.
func TestReconcilerSweepsInBackground(t *testing.T) {
	e := vmtSetup(t, func(c *config.Config) { c.ReconcileInterval = config.Duration(200 * time.Millisecond) })
	vm := e.mustCreate(t, "bystander")
	ghost := store.NewID()
	orphanPID, _ := e.plantOrphans(t, ghost)
	tap, _ := vmnet.TAPName(ghost)
	if !vmtWaitFor(5*time.Second, func() bool {
		_, err := os.Stat(e.d.layout.VMDir(ghost))
		return !e.linkExists(t, tap) && processGone(orphanPID) && os.IsNotExist(err)
	}) {
		t.Errorf("after 5 s: orphan TAP exists %v, orphan VMM gone %v", e.linkExists(t, tap), processGone(orphanPID))
	}
	e.assertRunning(t, vm.ID, vm.Name)
}

func (e *vmtEnv) linkExists(t *testing.T, name string) bool {
	for _, l := range e.vmTAPs(t) {
		if l == name {
			return true
		}
	}
	return false
}

func orphansIn(m map[string]rpc.HostObject) []string {
	var out []string
	for k, o := range m {
		if o.Orphan {
			out = append(out, k)
		}
	}
	return out
}

func keys(m map[string]rpc.HostObject) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// A process's descendants are its own (the ledger must not take a VMM's
// helper, such as the Firecracker shim's QEMU, for an orphan).
func TestDescendsFrom(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	child := cmd.Process.Pid
	if !descendsFrom(child, os.Getpid()) || !descendsFrom(child, child) {
		t.Errorf("child %d does not descend from the test (%d) or itself", child, os.Getpid())
	}
	if descendsFrom(os.Getpid(), child) {
		t.Errorf("the test descends from its child")
	}
}
