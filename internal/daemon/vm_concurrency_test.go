package daemon

// Concurrency of VM lifecycle ops (issue 5, item 6; run with -race): ops
// on one VM serialise on vmLocks[id], ops on distinct VMs overlap, and a
// mixed load on shared and distinct VMs ends with the store and the host
// in agreement. The VMM is the fake of vmtest_vmm_test.go.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/daemon/vmnet"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// While one op holds a VM's lock across a (gated) boot, a second op on the
// same VM waits for it, then acts on the state the first one left.
func TestVMOpsOnOneVMSerialise(t *testing.T) {
	e := vmtSetup(t, nil)
	for i, tc := range []struct {
		name          string
		first, second string
	}{
		{"stop waits for start", "start", "stop"},
		{"stop waits for restart", "restart", "stop"},
		{"rm waits for create", "create", "rm"},
		{"exec waits for start", "start", "exec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("ser-%d", i)
			if tc.first != "create" {
				e.mustCreate(t, name)
				if tc.first == "start" {
					e.mustStop(t, name)
				}
			}
			gate := make(chan struct{})
			var once sync.Once
			release := func() { once.Do(func() { close(gate) }) }
			defer release()
			e.vmm.planOnce(vmtPlan{bootGate: gate})
			launched := e.vmm.notifyLaunches()

			var started rpc.VMStarted
			var err error
			switch tc.first {
			case "create":
				err = e.c.Call(e.ctx(), rpc.MethodVMCreate, rpc.VMCreateParams{Name: name, Image: e.image.Name}, &started)
			case "start":
				err = e.c.Call(e.ctx(), rpc.MethodVMStart, rpc.NameRef{Ref: name}, &started)
			case "restart":
				err = e.c.Call(e.ctx(), rpc.MethodVMRestart, rpc.VMStopParams{Ref: name, TimeoutSeconds: 1}, &started)
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.first, err)
			}
			id := started.VM.ID
			select {
			case <-launched:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s never launched the VMM", tc.first)
			}

			type result struct {
				at  time.Time
				err error
			}
			second := make(chan result, 1)
			go func() {
				var err error
				switch tc.second {
				case "stop":
					var vm rpc.VM
					if vm, err = e.stop(name, 1); err == nil && vm.State != "stopped" {
						err = fmt.Errorf("stop left it %s", vm.State)
					}
				case "rm":
					err = e.rm(name, true)
				case "exec":
					var out string
					var code int
					if out, code, err = e.exec(name, "echo", "ran"); err == nil && (out != "ran\n" || code != 0) {
						err = fmt.Errorf("exec = %q, %d", out, code)
					}
				}
				second <- result{time.Now(), err}
			}()
			select {
			case r := <-second:
				t.Fatalf("%s returned (%v) while %s held the VM's lock", tc.second, r.err, tc.first)
			case <-time.After(300 * time.Millisecond):
			}
			releasedAt := time.Now()
			release()
			final, err := e.c.WatchOp(e.ctx(), started.OpID, nil)
			if err != nil || final.State != "succeeded" {
				t.Fatalf("%s: %+v, %v", tc.first, final, err)
			}
			r := <-second
			// Had the second op not waited, it would have found the VM
			// starting and been refused.
			if r.err != nil {
				t.Fatalf("%s after %s: %v", tc.second, tc.first, r.err)
			}
			if r.at.Before(releasedAt) {
				t.Errorf("%s returned at %s, before the boot was released at %s", tc.second, r.at.Format(time.StampMicro), releasedAt.Format(time.StampMicro))
			}
			procs := e.vmm.procsOf(id)
			_, keyAt, shutAt := procs[len(procs)-1].times()
			if tc.second != "exec" && !shutAt.After(keyAt) {
				t.Errorf("%s asked the guest to power off at %s, before it had booted at %s", tc.second, shutAt.Format(time.StampMicro), keyAt.Format(time.StampMicro))
			}
			switch tc.second {
			case "rm":
				e.assertGone(t, id, name)
			case "stop":
				e.assertDown(t, id, name, store.VMStopped, "stopped by request")
			case "exec":
				e.assertRunning(t, id, name)
			}
		})
	}
}

// Boots of distinct VMs overlap: four creates, then four starts, each boot
// taking 500 ms, finish together in well under 4 × 500 ms.
func TestVMOpsOnDistinctVMsOverlap(t *testing.T) {
	e := vmtSetup(t, nil)
	const boot = 500 * time.Millisecond
	e.vmm.setPlan(func(bootSpec) vmtPlan { return vmtPlan{bootDelay: boot} })
	names := []string{"ov-0", "ov-1", "ov-2", "ov-3"}
	ids := make([]string, len(names))

	run4 := func(what string, op func(i int) error) {
		t.Helper()
		begin := time.Now()
		errs := make([]error, len(names))
		var wg sync.WaitGroup
		for i := range names {
			wg.Go(func() { errs[i] = op(i) })
		}
		wg.Wait()
		took := time.Since(begin)
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var lastLaunch, firstBooted time.Time
		for _, id := range ids {
			procs := e.vmm.procsOf(id)
			launched, booted, _ := procs[len(procs)-1].times()
			if launched.After(lastLaunch) {
				lastLaunch = launched
			}
			if firstBooted.IsZero() || booted.Before(firstBooted) {
				firstBooted = booted
			}
		}
		t.Logf("4 × %s with %s boots: %s; the last VMM started %s before the first guest was up",
			what, boot, took.Round(time.Millisecond), firstBooted.Sub(lastLaunch).Round(time.Millisecond))
		if !lastLaunch.Before(firstBooted) {
			t.Errorf("%s: the boots did not overlap: the last VMM started at %s, after the first guest was up at %s",
				what, lastLaunch.Format(time.StampMicro), firstBooted.Format(time.StampMicro))
		}
		if took >= 4*boot {
			t.Errorf("%s: 4 boots of %s took %s, as long as one after another", what, boot, took)
		}
	}

	run4("create", func(i int) error {
		started, final, err := e.create(names[i])
		ids[i] = started.VM.ID
		if err == nil && final.State != "succeeded" {
			err = fmt.Errorf("create %s: %s", names[i], final.Error)
		}
		return err
	})
	for _, name := range names {
		e.mustStop(t, name)
	}
	run4("start", func(i int) error {
		final, err := e.start(names[i])
		if err == nil && final.State != "succeeded" {
			err = fmt.Errorf("start %s: %s", names[i], final.Error)
		}
		return err
	})
	for i, name := range names {
		e.assertRunning(t, ids[i], name)
	}
}

// A bounded mixed load — create, start, stop, restart, set, rm, ls and exec
// from eight goroutines on shared and distinct VMs, with failures injected
// into some boots and shutdowns and VMMs killed from outside — ends with
// the store and the host in agreement.
func TestVMStress(t *testing.T) {
	e := vmtSetup(t, nil)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BANGER_VMT_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set BANGER_VMT_SEED to reuse it; timing still differs)", seed)
	var planMu sync.Mutex
	planRand := rand.New(rand.NewPCG(seed, 0))
	e.vmm.setPlan(func(bootSpec) vmtPlan {
		planMu.Lock()
		defer planMu.Unlock()
		p := vmtPlan{bootDelay: time.Duration(planRand.IntN(20)) * time.Millisecond}
		switch x := planRand.IntN(100); {
		case x < 4:
			p.launchErr = errors.New("injected launch failure")
		case x < 8:
			p.exitEarly = true
		case x < 12:
			p.sshErr = errors.New("injected ssh failure")
		case x < 20:
			p.shutdownErr = errors.New("injected shutdown failure")
		}
		return p
	})

	const workers, opsPer = 8, 15
	shared := []string{"st-a", "st-b", "st-c"}
	names := slices.Clone(shared)
	for w := range workers {
		names = append(names, fmt.Sprintf("st-g%d", w))
	}
	all := []string{"create", "start", "stop", "restart", "set", "rm", "ls", "exec", "crash"}
	// Mostly an op the VM's state (as last seen: others change it
	// meanwhile) allows, so that many ops do something; else any op.
	pick := func(r *rand.Rand, name string) string {
		if r.IntN(4) == 0 {
			return all[r.IntN(len(all))]
		}
		vm, err := e.d.store.GetVMByName(context.Background(), name)
		var ops []string
		switch {
		case err != nil:
			ops = []string{"create"}
		case vm.State == store.VMRunning:
			ops = []string{"stop", "stop", "restart", "exec", "exec", "set", "rm", "ls", "crash"}
		default:
			ops = []string{"start", "start", "start", "set", "rm", "ls"}
		}
		return ops[r.IntN(len(ops))]
	}
	var countsMu sync.Mutex
	counts := map[string]int{} // "op outcome" → how many, for the log
	count := func(key string) {
		countsMu.Lock()
		counts[key]++
		countsMu.Unlock()
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(w)+1))
			for i := range opsPer {
				name := names[len(shared)+w]
				if r.IntN(2) == 0 {
					name = shared[r.IntN(len(shared))]
				}
				op := pick(r, name)
				outcome, err := e.stressOp(op, name, r)
				count(op + " " + outcome)
				if err != nil {
					t.Errorf("worker %d, op %d: %s %s: %v", w, i, op, name, err)
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("the stress load did not finish in 90 s: a deadlock?")
	}
	var summary []string
	countsMu.Lock()
	for k, n := range counts {
		summary = append(summary, fmt.Sprintf("%s: %d", k, n))
	}
	countsMu.Unlock()
	sort.Strings(summary)
	t.Logf("outcomes: %s", strings.Join(summary, ", "))

	e.vmm.setPlan(nil)
	// The exit watchers of crashed VMs may still be at work.
	vmtWaitFor(5*time.Second, func() bool {
		rows, _ := e.d.store.ListVMs(context.Background())
		for _, vm := range rows {
			if vm.State == store.VMRunning && len(vmtPIDs(vm.ID)) == 0 {
				return false
			}
		}
		return true
	})
	if l := e.log.lines("stopped by itself", "level=WARN"); len(l) != 0 {
		t.Errorf("exit watchers failed: %q", l)
	}
	e.assertAgree(t, names)

	// Everything goes, and takes everything with it.
	for _, name := range names {
		if err := e.rm(name, true); err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("rm %s: %v", name, err)
		}
	}
	e.assertAgree(t, names)
	if vms, err := e.c.ListVMs(e.ctx()); err != nil || len(vms) != 0 {
		t.Errorf("after removing all: %d VMs (%v)", len(vms), err)
	}
}

// stressOp runs op on the VM name and sorts the outcome: success, a refusal
// a concurrent op explains (not found, wrong state, name taken), or an
// injected failure are expected; anything else is returned as an error.
func (e *vmtEnv) stressOp(op, name string, r *rand.Rand) (string, error) {
	callErr := func(err error) (string, error) {
		switch {
		case err == nil:
			return "ok", nil
		case errdefs.IsNotFound(err):
			return "not found", nil
		case errdefs.IsFailedPrecondition(err):
			return "refused", nil
		case errdefs.IsAlreadyExists(err):
			return "exists", nil
		}
		return "error", err
	}
	opResult := func(final rpc.Op, err error) (string, error) {
		if err != nil {
			return callErr(err)
		}
		switch {
		case final.State == "succeeded":
			return "ok", nil
		case final.State != "failed":
		case strings.Contains(final.Error, "injected"), strings.Contains(final.Error, "the VM exited before"):
			// Injected, or a crash op killed the VMM during the boot.
			return "failed boot", nil
		case strings.Contains(final.Error, "failed precondition"):
			return "refused", nil
		case strings.Contains(final.Error, "not found"):
			return "not found", nil
		}
		return "error", fmt.Errorf("op %s: %s", final.State, final.Error)
	}
	switch op {
	case "create":
		_, final, err := e.create(name)
		return opResult(final, err)
	case "start":
		return opResult(e.start(name))
	case "restart":
		return opResult(e.restart(name, 1))
	case "stop":
		_, err := e.stop(name, 1)
		return callErr(err)
	case "rm":
		return callErr(e.rm(name, true))
	case "set":
		return callErr(e.c.Call(e.ctx(), rpc.MethodVMSet, rpc.VMSetParams{Ref: name, VCPUs: 1 + r.IntN(2), MemoryMiB: 128 + 64*r.IntN(2)}, nil))
	case "ls":
		_, err := e.c.ListVMs(e.ctx())
		return callErr(err)
	case "crash":
		// The VMM dies under the daemon: the exit watcher's turn.
		vm, err := e.d.store.GetVMByName(context.Background(), name)
		if err != nil {
			return "not found", nil
		}
		p := e.vmm.latest(func(p *vmtProc) bool { return p.vm == vm.ID })
		if p == nil || p.exitedNow() {
			return "no vmm", nil
		}
		p.cmd.Process.Kill()
		return "killed", nil
	case "exec":
		out, code, err := e.exec(name, "echo", "ok")
		if err == nil && (out != "ok\n" || code != 0) {
			return "error", fmt.Errorf("exec = %q, exit %d", out, code)
		}
		if err != nil && (strings.Contains(err.Error(), "reach the guest") || strings.Contains(err.Error(), "closed the session without an exit status") || strings.Contains(err.Error(), "(its VMM exited)")) {
			// Stopped (or crashed) after the state check: exec holds the
			// VM's lock only for the check, not across the command.
			return "gone", nil
		}
		return callErr(err)
	}
	return "error", fmt.Errorf("unknown op %q", op)
}

// assertAgree checks the store against the host once no op runs: each VM
// row is running exactly when its VMM process lives; the TAPs in the
// namespace are the running VMs'; so are the DNS names (of every name in
// names); the IP allocations, the VM directories and the handle cache are
// the rows'; no VM lock entry is left.
func (e *vmtEnv) assertAgree(t *testing.T, names []string) {
	t.Helper()
	ctx := context.Background()
	rows, err := e.d.store.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rowIDs := map[string]bool{}
	var wantTAPs []string
	running := map[string]store.VM{}
	for _, vm := range rows {
		rowIDs[vm.ID] = true
		switch vm.State {
		case store.VMRunning:
			running[vm.Name] = vm
			tap, _ := vmnet.TAPName(vm.ID)
			wantTAPs = append(wantTAPs, tap)
			e.assertRunning(t, vm.ID, vm.Name)
		case store.VMStopped, store.VMError:
			if pids := vmtPIDs(vm.ID); len(pids) != 0 {
				t.Errorf("vm %s is %s (%q) but its VMM runs: %v", vm.Name, vm.State, vm.StateReason, pids)
			}
		default:
			t.Errorf("vm %s is %s with no op running", vm.Name, vm.State)
		}
	}
	for _, name := range names {
		ip, ok := e.dnsLookup(name)
		if vm, run := running[name]; run != ok {
			t.Errorf("vm %s: in DNS %v (%s), running %v (%s)", name, ok, ip, run, vm.State)
		}
	}
	sort.Strings(wantTAPs)
	if got := e.vmTAPs(t); !slices.Equal(got, wantTAPs) {
		t.Errorf("VM TAPs in netns %s: %v; the running VMs': %v", e.netns, got, wantTAPs)
	}
	// No fake VMM lives for a VM that is not running.
	e.vmm.mu.Lock()
	procs := slices.Clone(e.vmm.procs)
	e.vmm.mu.Unlock()
	for _, p := range procs {
		if p.exitedNow() {
			continue
		}
		if vm, ok := e.row(t, p.vm); !ok || vm.State != store.VMRunning || e.latestPID(t, vm.ID) != p.PID() {
			t.Errorf("fake VMM pid %d of vm %s lives on; the VM: %+v (row %v)", p.PID(), p.vm, vm, ok)
		}
	}
	allocs, err := e.d.store.ListIPAllocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]bool{}
	for _, a := range allocs {
		if !rowIDs[a.VMID] {
			t.Errorf("IP %s is allocated to vm %s, which has no row", a.IP, a.VMID)
		}
		if ips[a.IP] {
			t.Errorf("IP %s is allocated twice", a.IP)
		}
		ips[a.IP] = true
	}
	if len(allocs) != len(rows) {
		t.Errorf("%d IP allocations for %d VMs", len(allocs), len(rows))
	}
	dirs, err := os.ReadDir(e.d.layout.VMsDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if !rowIDs[d.Name()] {
			t.Errorf("%s/%s has no VM row", e.d.layout.VMsDir(), d.Name())
		}
	}
	if len(dirs) != len(rows) {
		t.Errorf("%d VM directories for %d VMs", len(dirs), len(rows))
	}
	e.d.vms.handles.mu.Lock()
	cached := len(e.d.vms.handles.m)
	for id := range e.d.vms.handles.m {
		if !rowIDs[id] {
			t.Errorf("handles of vm %s are cached, but it has no row", id)
		}
	}
	e.d.vms.handles.mu.Unlock()
	if cached != len(rows) {
		t.Errorf("%d VMs' handles cached for %d VMs", cached, len(rows))
	}
	if n := e.d.vmLocks.len(); n != 0 {
		t.Errorf("%d VM lock entries left with no op running", n)
	}
}

// latestPID is the PID the VM's handles name.
func (e *vmtEnv) latestPID(t *testing.T, id string) int {
	t.Helper()
	h, _ := e.handles(t, id)
	return h.PID
}
