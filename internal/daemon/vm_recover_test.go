package daemon

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/store"
)

// A daemon restart keeps running VMs running: the new daemon adopts them
// (same VMM process, exec works, DNS name back), watches them (a VMM
// killed from outside is noticed and released), and can stop and remove
// them.
func TestRestartAdoptsRunningVMs(t *testing.T) {
	e := vmtSetup(t, nil)
	a := e.mustCreate(t, "keep-a")
	b := e.mustCreate(t, "keep-b")
	c := e.mustCreate(t, "was-stopped")
	e.mustStop(t, "was-stopped")
	pidA, pidB := e.handlesPID(t, a.ID), e.handlesPID(t, b.ID)

	e.restartDaemon(t)

	for _, vm := range []struct {
		id, name string
		pid      int
	}{{a.ID, a.Name, pidA}, {b.ID, b.Name, pidB}} {
		e.assertRunning(t, vm.id, vm.name)
		if got := e.handlesPID(t, vm.id); got != vm.pid {
			t.Errorf("vm %s: VMM pid %d after the restart, want the same process %d", vm.name, got, vm.pid)
		}
		if out, code, err := e.exec(vm.name, "echo", "adopted"); err != nil || code != 0 || out != "adopted\n" {
			t.Errorf("exec in adopted vm %s = %q, %d, %v", vm.name, out, code, err)
		}
	}
	e.assertDown(t, c.ID, c.Name, store.VMStopped, "stopped by request")

	// Killed from outside: the adopted VMM's watcher notices.
	if err := syscall.Kill(pidA, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !vmtWaitFor(5*time.Second, func() bool {
		vm, ok := e.row(t, a.ID)
		return ok && vm.State == store.VMStopped
	}) {
		vm, _ := e.row(t, a.ID)
		t.Fatalf("vm %s after its adopted VMM was killed: %s (%q), want stopped within 5 s", a.Name, vm.State, vm.StateReason)
	}
	e.assertDown(t, a.ID, a.Name, store.VMStopped, "adopted after a daemon restart")

	// An adopted VM stops and goes like any other.
	if err := e.rm(b.Name, true); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, b.ID, b.Name)
	e.mustStart(t, c.Name)
	e.assertRunning(t, c.ID, c.Name)
}

// What a crash cut short is completed or rolled back at the next start,
// and a VMM that died while no daemon ran is noticed.
func TestRestartSettlesInterruptedOps(t *testing.T) {
	e := vmtSetup(t, nil)
	creating := e.mustCreate(t, "creating")
	starting := e.mustCreate(t, "starting")
	stopping := e.mustCreate(t, "stopping")
	removing := e.mustCreate(t, "removing")
	died := e.mustCreate(t, "died")
	recycled := e.mustCreate(t, "recycled")
	ctx := context.Background()
	// The rows as a daemon that died mid-op left them.
	setRow := func(id string, change func(*store.VM)) {
		t.Helper()
		if err := e.d.vms.updateVM(ctx, id, change); err != nil {
			t.Fatal(err)
		}
	}
	setRow(creating.ID, func(v *store.VM) { v.State, v.StartedAt = store.VMStarting, time.Time{} })
	setRow(starting.ID, func(v *store.VM) { v.State = store.VMStarting })
	setRow(stopping.ID, func(v *store.VM) { v.State = store.VMStopping })
	setRow(removing.ID, func(v *store.VM) { v.State, v.StateReason = store.VMStopping, reasonRemoving })
	diedPID := e.handlesPID(t, died.ID)
	// A VM whose recorded VMM identity no longer matches (a recycled PID):
	// never adopted.
	recycledPID := e.handlesPID(t, recycled.ID)
	var h vmHandles
	data, _ := os.ReadFile(e.d.layout.VMHandles(recycled.ID))
	json.Unmarshal(data, &h)
	h.PIDStart++
	if err := writeHandles(e.d.layout.VMHandles(recycled.ID), &h); err != nil {
		t.Fatal(err)
	}

	e.c.Close()
	e.r.stop(t)
	syscall.Kill(diedPID, syscall.SIGKILL)
	waitGone(diedPID, 5*time.Second)
	e.restartDaemon(t)

	e.assertGone(t, creating.ID, creating.Name)
	e.assertGone(t, removing.ID, removing.Name)
	e.assertDown(t, starting.ID, starting.Name, store.VMStopped, "interrupted: the daemon stopped while the VM was starting")
	e.assertDown(t, stopping.ID, stopping.Name, store.VMStopped, "completed after a daemon restart")
	e.assertDown(t, died.ID, died.Name, store.VMStopped, "the VMM exited while the daemon was not running")
	if vm, _ := e.row(t, recycled.ID); vm.State != store.VMStopped || !strings.Contains(vm.StateReason, "exited while the daemon") {
		t.Errorf("vm with a recycled pid: %s (%q), want stopped", vm.State, vm.StateReason)
	}
	// recover leaves the process alone (it is not the VMM recorded); but
	// its command line still names this VM under this root, so the
	// ledger sweep Open runs before serving removes it as an orphan, as
	// the reconciler's first pass would. A truly recycled PID runs
	// another program, which the ledger never claims (ledger_test.go:
	// the foreign process).
	if !waitGone(recycledPID, 5*time.Second) {
		t.Errorf("pid %d, a process naming vm %s that no handles.json names, outlived the restart", recycledPID, recycled.Name)
		syscall.Kill(recycledPID, syscall.SIGKILL)
	}
	// Every settled VM starts again.
	for _, name := range []string{starting.Name, stopping.Name, died.Name} {
		e.mustStart(t, name)
	}
}

// handlesPID is the VMM pid the daemon has recorded for the VM.
func (e *vmtEnv) handlesPID(t testing.TB, id string) int {
	t.Helper()
	h, ok := e.handles(t, id)
	if !ok {
		t.Fatalf("vm %s: no handles", id)
	}
	return h.PID
}

// processGone reports whether pid no longer exists.
func processGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// waitGone waits up to d for pid to exit.
func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if processGone(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return processGone(pid)
}
