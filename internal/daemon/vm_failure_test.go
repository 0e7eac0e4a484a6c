package daemon

// Failure injection at each phase of vm.create, vm.start, vm.stop,
// vm.restart and vm.rm, and the exit watcher: after each, nothing the op
// took is left behind (issue 5, item 5). The VMM is the fake of
// vmtest_vmm_test.go (the env: vmtest_env_test.go); everything else is the daemon's real code.

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/vmnet"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// The fake VMM runs the daemon's whole lifecycle: this is the baseline
// the failure tests depart from.
func TestVMLifecycleWithFakeVMM(t *testing.T) {
	e := vmtSetup(t, nil)
	vm := e.mustCreate(t, "life")
	e.assertRunning(t, vm.ID, vm.Name)
	if out, code, err := e.exec("life", "echo", "hello from the guest"); err != nil || code != 0 || out != "hello from the guest\n" {
		t.Fatalf("exec = %q, %d, %v", out, code, err)
	}
	e.mustStop(t, "life")
	e.assertDown(t, vm.ID, vm.Name, store.VMStopped, "stopped by request")
	e.mustStart(t, "life")
	e.assertRunning(t, vm.ID, vm.Name)
	if final, err := e.restart("life", 1); err != nil || final.State != "succeeded" {
		t.Fatalf("restart: %v; op %s: %s", err, final.State, final.Error)
	}
	e.assertRunning(t, vm.ID, vm.Name)
	if n := len(e.vmm.procsOf(vm.ID)); n != 3 {
		t.Errorf("%d VMM launches, want 3 (create, start, restart)", n)
	}
	if err := e.rm("life", false); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("rm of a running VM without force = %v, want failed precondition", err)
	}
	e.assertRunning(t, vm.ID, vm.Name)
	if err := e.rm("life", true); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, vm.ID, vm.Name)
	if n := e.d.vmLocks.len(); n != 0 {
		t.Errorf("%d VM lock entries left, want 0", n)
	}
}

// assertPhase: the op failed in phase, and the VMM was launched for it
// exactly when the phase is the boot or later.
func (e *vmtEnv) assertPhase(t *testing.T, final rpc.Op, id, phase string) {
	t.Helper()
	if final.Progress.Phase != phase {
		t.Errorf("op %s failed in phase %q, want %q", final.Kind, final.Progress.Phase, phase)
	}
	launched := false
	for _, l := range e.vmm.launchesOf(id) {
		launched = launched || l.at.After(final.StartedAt)
	}
	if want := phase == "boot" || phase == "ssh"; launched != want {
		t.Errorf("op %s failing in phase %q: VMM launched %v, want %v", final.Kind, phase, launched, want)
	}
}

// ipLink runs `ip -n NS ARGS...` in the test's namespace.
func (e *vmtEnv) ipLink(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", e.netns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", e.netns, strings.Join(args, " "), err, out)
	}
}

// blockTAP puts a bridge where the VM's TAP goes: the TAP pool adopts the
// existing link as the VM's TAP and cannot make a bridge a port of the
// VMs' bridge, so acquiring the TAP fails.
func (e *vmtEnv) blockTAP(t *testing.T, id string) {
	t.Helper()
	name, err := vmnet.TAPName(id)
	if err != nil {
		t.Fatal(err)
	}
	e.ipLink(t, "link", "add", name, "type", "bridge")
}

func TestVMCreateFailureReleasesEverything(t *testing.T) {
	const bootTimeout = 1500 * time.Millisecond
	e := vmtSetup(t, func(c *config.Config) { c.BootTimeout = config.Duration(bootTimeout) })
	// A first VM sets the network up and stays through every case: a
	// failed create must not touch it.
	bystander := e.mustCreate(t, "bystander")

	for _, tc := range []struct {
		name  string
		vm    string
		setup func(t *testing.T) // before the create
		plan  vmtPlan
		phase string // the op's phase when it failed
		want  string // in the op's error
	}{{
		name: "disk clone fails",
		vm:   "cf-disk",
		setup: func(t *testing.T) {
			rootfs := e.d.layout.ImageRootfs(e.image.ID)
			if err := os.Rename(rootfs, rootfs+".away"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Rename(rootfs+".away", rootfs) })
		},
		phase: "disk",
		want:  "make the disk",
	}, {
		name: "TAP acquisition fails",
		vm:   "cf-tap",
		setup: func(t *testing.T) {
			// No bridge to make the TAP a port of. Put it back after,
			// with the bystander's TAP as its port again.
			e.ipLink(t, "link", "del", e.cfg.Bridge)
			t.Cleanup(func() {
				subnet := netip.MustParsePrefix(e.cfg.Subnet)
				gw := netip.PrefixFrom(vmnet.Gateway(subnet), subnet.Bits())
				tap, _ := vmnet.TAPName(bystander.ID)
				e.ipLink(t, "link", "add", e.cfg.Bridge, "type", "bridge")
				e.ipLink(t, "addr", "add", gw.String(), "dev", e.cfg.Bridge)
				e.ipLink(t, "link", "set", e.cfg.Bridge, "up")
				e.ipLink(t, "link", "set", tap, "master", e.cfg.Bridge)
			})
		},
		phase: "network",
		want:  "get a TAP",
	}, {
		name:  "VMM fails to start",
		vm:    "cf-launch",
		plan:  vmtPlan{launchErr: errors.New("qemu: could not open disk image: injected")},
		phase: "boot",
		want:  "could not open disk image: injected",
	}, {
		name:  "VMM exits before the host key",
		vm:    "cf-exit",
		plan:  vmtPlan{exitEarly: true},
		phase: "ssh",
		want:  "exited before its init announced an SSH host key",
	}, {
		name:  "guest never announces a host key",
		vm:    "cf-nokey",
		plan:  vmtPlan{noHostKey: true},
		phase: "ssh",
		want:  "announced no SSH host key",
	}, {
		name:  "VMM exits after the host key, before SSH answers",
		vm:    "cf-exit-ssh",
		plan:  vmtPlan{exitAfterKey: true},
		phase: "ssh",
		want:  "the VM exited before its SSH answered",
	}, {
		name:  "wait for SSH fails",
		vm:    "cf-ssh",
		plan:  vmtPlan{sshErr: errors.New("ssh handshake with guest: injected")},
		phase: "ssh",
		want:  "ssh handshake with guest: injected",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			e.vmm.planOnce(tc.plan)
			defer e.vmm.setPlan(nil)
			name := tc.vm
			begin := time.Now()
			started, final, err := e.create(name)
			if err != nil {
				t.Fatalf("vm.create call: %v; want an op that fails", err)
			}
			// Only a guest that never announces its key is waited for
			// until the boot timeout.
			if took := time.Since(begin); took >= bootTimeout && !tc.plan.noHostKey {
				t.Errorf("the failed create took %s, the boot timeout", took)
			}
			e.assertOpFailed(t, final, name, tc.want)
			e.assertPhase(t, final, started.VM.ID, tc.phase)
			e.assertGone(t, started.VM.ID, name)
		})
	}
	e.assertRunning(t, bystander.ID, bystander.Name)
	// Nothing a failed create did stands in the way of the next one, with
	// the same name.
	again := e.mustCreate(t, "cf-launch")
	e.assertRunning(t, again.ID, again.Name)
}

// A create cancelled while the guest boots releases everything too.
func TestVMCreateCancelledReleasesEverything(t *testing.T) {
	e := vmtSetup(t, nil)
	gate := make(chan struct{})
	defer close(gate)
	e.vmm.planOnce(vmtPlan{bootGate: gate})
	launched := e.vmm.notifyLaunches()
	ctx := e.ctx()
	var started rpc.VMStarted
	if err := e.c.Call(ctx, rpc.MethodVMCreate, rpc.VMCreateParams{Name: "cancelled", Image: e.image.Name}, &started); err != nil {
		t.Fatal(err)
	}
	<-launched // the VMM runs; the guest is "booting"
	if err := e.c.CancelOp(ctx, started.OpID); err != nil {
		t.Fatal(err)
	}
	final, err := e.c.WatchOp(ctx, started.OpID, nil)
	if err != nil || final.State != "canceled" {
		t.Fatalf("cancelled create: %+v, %v; want canceled", final, err)
	}
	if row, err := e.d.store.GetOperation(ctx, final.ID); err != nil || row.State != store.OpCanceled {
		t.Errorf("the op in the store: %+v, %v; want canceled", row, err)
	}
	e.assertGone(t, started.VM.ID, "cancelled")
}

func TestVMStartFailureKeepsOnlyTheDisk(t *testing.T) {
	e := vmtSetup(t, func(c *config.Config) { c.BootTimeout = config.Duration(1500 * time.Millisecond) })
	vm := e.mustCreate(t, "sf")
	e.mustStop(t, "sf")

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T)
		plan  vmtPlan
		phase string // the op's phase when it failed
		want  string // in the op's error and the VM's state reason
	}{{
		name:  "TAP acquisition fails",
		setup: func(t *testing.T) { e.blockTAP(t, vm.ID) },
		phase: "network",
		want:  "get a TAP",
	}, {
		name:  "VMM fails to start",
		plan:  vmtPlan{launchErr: errors.New("qemu: could not open disk image: injected")},
		phase: "boot",
		want:  "could not open disk image: injected",
	}, {
		name:  "VMM exits before the host key",
		plan:  vmtPlan{exitEarly: true},
		phase: "ssh",
		want:  "exited before its init announced an SSH host key",
	}, {
		name:  "guest never announces a host key",
		plan:  vmtPlan{noHostKey: true},
		phase: "ssh",
		want:  "announced no SSH host key",
	}, {
		name:  "VMM exits after the host key, before SSH answers",
		plan:  vmtPlan{exitAfterKey: true},
		phase: "ssh",
		want:  "the VM exited before its SSH answered",
	}, {
		name:  "wait for SSH fails",
		plan:  vmtPlan{sshErr: errors.New("ssh handshake with guest: injected")},
		phase: "ssh",
		want:  "ssh handshake with guest: injected",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			e.vmm.planFor(vm.ID, tc.plan)
			final, err := e.start("sf")
			e.vmm.setPlan(nil)
			if err != nil {
				t.Fatalf("vm.start call: %v; want an op that fails", err)
			}
			e.assertOpFailed(t, final, "sf", tc.want)
			e.assertPhase(t, final, vm.ID, tc.phase)
			e.assertDown(t, vm.ID, "sf", store.VMError, tc.want)
			// The failure left nothing in the way of the next start.
			e.mustStart(t, "sf")
			e.assertRunning(t, vm.ID, "sf")
			e.mustStop(t, "sf")
		})
	}
}

// A start cancelled while the guest boots leaves the VM in error, holding
// only its disk.
func TestVMStartCancelled(t *testing.T) {
	e := vmtSetup(t, nil)
	vm := e.mustCreate(t, "sc")
	e.mustStop(t, "sc")
	gate := make(chan struct{})
	defer close(gate)
	e.vmm.planOnce(vmtPlan{bootGate: gate})
	launched := e.vmm.notifyLaunches()
	ctx := e.ctx()
	var started rpc.VMStarted
	if err := e.c.Call(ctx, rpc.MethodVMStart, rpc.NameRef{Ref: "sc"}, &started); err != nil {
		t.Fatal(err)
	}
	<-launched
	if err := e.c.CancelOp(ctx, started.OpID); err != nil {
		t.Fatal(err)
	}
	final, err := e.c.WatchOp(ctx, started.OpID, nil)
	if err != nil || final.State != "canceled" {
		t.Fatalf("cancelled start: %+v, %v; want canceled", final, err)
	}
	if row, err := e.d.store.GetOperation(ctx, final.ID); err != nil || row.State != store.OpCanceled {
		t.Errorf("the op in the store: %+v, %v; want canceled", row, err)
	}
	e.assertDown(t, vm.ID, "sc", store.VMError, "canceled")
	e.mustStart(t, "sc")
	e.assertRunning(t, vm.ID, "sc")
}

// A guest that does not power off when asked is killed: stop, restart and
// rm all end with the VMM gone.
func TestVMShutdownFailureKills(t *testing.T) {
	e := vmtSetup(t, nil)
	shutdownErr := vmtPlan{shutdownErr: errors.New("qmp: connection reset: injected")}
	hang := vmtPlan{shutdownHang: true}

	t.Run("stop, shutdown errors", func(t *testing.T) {
		vm := e.mustCreateWith(t, "ss-err", shutdownErr)
		begin := time.Now()
		e.mustStop(t, "ss-err")
		e.assertKilled(t, vm.ID, time.Since(begin), 0)
		e.assertDown(t, vm.ID, "ss-err", store.VMStopped, "stopped by request")
		e.mustStart(t, "ss-err")
		e.assertRunning(t, vm.ID, "ss-err")
	})
	t.Run("stop, shutdown hangs", func(t *testing.T) {
		vm := e.mustCreateWith(t, "ss-hang", hang)
		begin := time.Now()
		e.mustStop(t, "ss-hang") // --timeout 1
		e.assertKilled(t, vm.ID, time.Since(begin), time.Second)
		e.assertDown(t, vm.ID, "ss-hang", store.VMStopped, "stopped by request")
	})
	t.Run("restart, shutdown errors", func(t *testing.T) {
		vm := e.mustCreateWith(t, "sr-err", shutdownErr)
		old := e.vmm.procsOf(vm.ID)[0]
		if final, err := e.restart("sr-err", 1); err != nil || final.State != "succeeded" {
			t.Fatalf("restart: %v; op %s: %s", err, final.State, final.Error)
		}
		if !old.exitedNow() || old.kills.Load() == 0 {
			t.Errorf("the old VMM: exited %v, killed %d times; want killed", old.exitedNow(), old.kills.Load())
		}
		e.assertRunning(t, vm.ID, "sr-err")
	})
	t.Run("restart, shutdown hangs", func(t *testing.T) {
		vm := e.mustCreateWith(t, "sr-hang", hang)
		if final, err := e.restart("sr-hang", 1); err != nil || final.State != "succeeded" {
			t.Fatalf("restart: %v; op %s: %s", err, final.State, final.Error)
		}
		if old := e.vmm.procsOf(vm.ID)[0]; !old.exitedNow() || old.kills.Load() == 0 {
			t.Errorf("the old VMM: exited %v, killed %d times; want killed", old.exitedNow(), old.kills.Load())
		}
		e.assertRunning(t, vm.ID, "sr-hang")
	})
	t.Run("rm --force, shutdown errors", func(t *testing.T) {
		vm := e.mustCreateWith(t, "sm-err", shutdownErr)
		if err := e.rm("sm-err", true); err != nil {
			t.Fatal(err)
		}
		if p := e.vmm.procsOf(vm.ID)[0]; p.kills.Load() == 0 {
			t.Error("the VMM was not killed")
		}
		e.assertGone(t, vm.ID, "sm-err")
	})
}

// mustCreateWith creates a running VM whose every boot follows plan.
func (e *vmtEnv) mustCreateWith(t *testing.T, name string, plan vmtPlan) rpc.VM {
	t.Helper()
	e.vmm.setPlan(func(spec bootSpec) vmtPlan { return plan })
	defer e.vmm.setPlan(nil)
	return e.mustCreate(t, name)
}

// assertKilled: the VM's VMM was asked to shut down, then killed, and the
// stop took at least min (the grace it waited).
func (e *vmtEnv) assertKilled(t *testing.T, id string, took, min time.Duration) {
	t.Helper()
	procs := e.vmm.procsOf(id)
	p := procs[len(procs)-1]
	if p.shutdowns.Load() == 0 || p.kills.Load() == 0 || !p.exitedNow() {
		t.Errorf("VMM: %d shutdowns, %d kills, exited %v; want asked, then killed", p.shutdowns.Load(), p.kills.Load(), p.exitedNow())
	}
	if took < min || took > min+5*time.Second {
		t.Errorf("stop took %s, want about %s (the grace)", took, min)
	}
}

// A create whose guest hangs is released promptly: its disk is about to
// be deleted, so there is nothing to wait for a clean power-off for.
func TestVMCreateFailureWithHungGuestIsPrompt(t *testing.T) {
	const bootTimeout = 1500 * time.Millisecond
	e := vmtSetup(t, func(c *config.Config) { c.BootTimeout = config.Duration(bootTimeout) })
	e.vmm.planOnce(vmtPlan{noHostKey: true, shutdownHang: true})
	begin := time.Now()
	started, final, err := e.create("hung")
	took := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	e.assertOpFailed(t, final, "hung", "announced no SSH host key")
	e.assertGone(t, started.VM.ID, "hung")
	if took > bootTimeout+3*time.Second {
		t.Errorf("the failed create took %s with a %s boot timeout: it waited for a hung guest to power off before deleting it", took, bootTimeout)
	}
}

func TestVMRestartBootFailure(t *testing.T) {
	e := vmtSetup(t, nil)
	for _, tc := range []struct {
		name, vm string
		plan     vmtPlan
		want     string
	}{
		{"VMM fails to start", "rf-launch", vmtPlan{launchErr: errors.New("qemu: injected")}, "qemu: injected"},
		{"VMM exits before the host key", "rf-exit", vmtPlan{exitEarly: true}, "exited before its init announced"},
		{"wait for SSH fails", "rf-ssh", vmtPlan{sshErr: errors.New("ssh: injected")}, "ssh: injected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := e.mustCreate(t, tc.vm)
			e.vmm.planFor(vm.ID, tc.plan)
			final, err := e.restart(tc.vm, 1)
			e.vmm.setPlan(nil)
			if err != nil {
				t.Fatal(err)
			}
			e.assertOpFailed(t, final, tc.vm, tc.want)
			e.assertDown(t, vm.ID, tc.vm, store.VMError, tc.want)
			// A VM in error is removed without --force, and leaves nothing.
			if err := e.rm(tc.vm, false); err != nil {
				t.Fatal(err)
			}
			e.assertGone(t, vm.ID, tc.vm)
		})
	}
}

// The exit watcher: a VMM that ends by itself leaves the VM stopped with
// the reason, its TAP and DNS name released.
func TestVMExitWatcher(t *testing.T) {
	e := vmtSetup(t, nil)

	t.Run("killed from outside", func(t *testing.T) {
		vm := e.mustCreate(t, "ew-kill")
		pid := e.vmm.procsOf(vm.ID)[0].PID()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if !vmtWaitFor(5*time.Second, func() bool { r, _ := e.row(t, vm.ID); return r.State == store.VMStopped }) {
			r, _ := e.row(t, vm.ID)
			t.Fatalf("5 s after its VMM was killed, the VM is %s (%q)", r.State, r.StateReason)
		}
		e.assertDown(t, vm.ID, "ew-kill", store.VMStopped, "the VMM exited with status")
		e.mustStart(t, "ew-kill")
		e.assertRunning(t, vm.ID, "ew-kill")
	})

	t.Run("guest powers off by itself", func(t *testing.T) {
		vm := e.mustCreateWith(t, "ew-off", vmtPlan{lifetime: 1500 * time.Millisecond})
		p := e.vmm.procsOf(vm.ID)[0]
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the fake guest did not power off")
		}
		if !vmtWaitFor(5*time.Second, func() bool { r, _ := e.row(t, vm.ID); return r.State == store.VMStopped }) {
			r, _ := e.row(t, vm.ID)
			t.Fatalf("5 s after its guest powered off, the VM is %s (%q)", r.State, r.StateReason)
		}
		e.assertDown(t, vm.ID, "ew-off", store.VMStopped, "the guest powered off")
	})

	// A stop or rm owns the exit it waits for, even when the VMM ends on
	// its own meanwhile: the watcher, waking on the same exit, does nothing.
	for _, op := range []string{"stop", "rm"} {
		t.Run("exits while a "+op+" is in progress", func(t *testing.T) {
			name := "ew-" + op
			gate := make(chan struct{})
			vm := e.mustCreateWith(t, name, vmtPlan{shutdownGate: gate})
			p := e.vmm.procsOf(vm.ID)[0]
			opErr := make(chan error, 1)
			go func() {
				if op == "stop" {
					_, err := e.stop(name, 5)
					opErr <- err
				} else {
					opErr <- e.rm(name, true)
				}
			}()
			if !vmtWaitFor(5*time.Second, func() bool { return p.shutdowns.Load() > 0 }) {
				t.Fatalf("the %s never asked the guest to power off", op)
			}
			// The VMM exits by itself while the op holds the VM's lock:
			// the watcher wakes and waits for the lock.
			if err := syscall.Kill(p.PID(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-p.Done()
			time.Sleep(100 * time.Millisecond)
			close(gate)
			if err := <-opErr; err != nil {
				t.Fatalf("%s: %v", op, err)
			}
			// Give the watcher time to run after the op released the lock.
			time.Sleep(300 * time.Millisecond)
			if op == "stop" {
				e.assertDown(t, vm.ID, name, store.VMStopped, "stopped by request")
			} else {
				e.assertGone(t, vm.ID, name)
			}
			if l := e.log.lines(name, "stopped by itself"); len(l) != 0 {
				t.Errorf("the watcher also handled the exit the %s owned: %q", op, l)
			}
			if l := e.log.lines("level=WARN"); len(l) != 0 {
				t.Errorf("warnings: %q", l)
			}
			if l := e.log.lines("level=ERROR"); len(l) != 0 {
				t.Errorf("errors: %q", l)
			}
			if op == "stop" {
				e.mustStart(t, name)
				e.assertRunning(t, vm.ID, name)
			}
		})
	}
}

// A promote that fails leaves no image behind and the VM as it was; one
// refused changes nothing.
func TestVMPromoteFailure(t *testing.T) {
	e := vmtSetup(t, nil)
	vm := e.mustCreate(t, "pf")
	promote := func() (rpc.Op, error) {
		var started rpc.OpStarted
		if err := e.c.Call(e.ctx(), rpc.MethodImagePromote, rpc.ImagePromoteParams{VM: "pf", Name: "pf-image"}, &started); err != nil {
			return rpc.Op{}, err
		}
		return e.c.WatchOp(e.ctx(), started.OpID, nil)
	}
	assertNoImage := func(t *testing.T) {
		t.Helper()
		if im, err := e.d.store.GetImageByName(context.Background(), "pf-image"); !errdefs.IsNotFound(err) {
			t.Errorf("image pf-image: %+v, %v; want none", im, err)
		}
		if ents, err := os.ReadDir(e.d.layout.StagingDir()); err != nil || len(ents) != 0 {
			t.Errorf("staging holds %v (%v), want it empty", ents, err)
		}
		if ents, err := os.ReadDir(e.d.layout.ImagesDir()); err != nil || len(ents) != 1 {
			t.Errorf("images/ holds %v (%v), want only the test's image", ents, err)
		}
	}

	if _, err := promote(); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("promote of a running VM = %v, want failed precondition", err)
	}
	assertNoImage(t)
	e.assertRunning(t, vm.ID, "pf")

	e.mustStop(t, "pf")
	disk := e.d.layout.VMDisk(vm.ID)
	if err := os.Rename(disk, disk+".away"); err != nil {
		t.Fatal(err)
	}
	final, err := promote()
	if err != nil {
		t.Fatal(err)
	}
	if final.State != "failed" || !strings.Contains(final.Error, `copy the disk of vm "pf"`) {
		t.Errorf("promote with the disk missing: %s %q; want failed saying the copy failed", final.State, final.Error)
	}
	assertNoImage(t)
	if err := os.Rename(disk+".away", disk); err != nil {
		t.Fatal(err)
	}
	e.assertDown(t, vm.ID, "pf", store.VMStopped, "stopped by request")

	// With its disk back, the VM promotes, and a VM made from the image
	// boots from a copy of that disk.
	if final, err := promote(); err != nil || final.State != "succeeded" {
		t.Fatalf("promote: %+v, %v", final, err)
	}
	child := e.mustCreateFrom(t, "pf-child", "pf-image")
	e.assertRunning(t, child.ID, "pf-child")
	if n := e.d.vmLocks.len(); n != 0 {
		t.Errorf("%d VM lock entries left", n)
	}
}

// vm.set changes nothing when it is refused or fails; what it sets is what
// the next boot gets.
func TestVMSetFailureChangesNothing(t *testing.T) {
	e := vmtSetup(t, nil)
	vm := e.mustCreate(t, "sx")
	set := func(p rpc.VMSetParams) error {
		p.Ref = "sx"
		return e.c.Call(e.ctx(), rpc.MethodVMSet, p, nil)
	}
	before, _ := e.row(t, vm.ID)
	if err := set(rpc.VMSetParams{DiskGiB: 1}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("growing a running VM's disk = %v, want failed precondition", err)
	}
	e.mustStop(t, "sx")
	// The test image is no file system: checking it before growing fails.
	if err := set(rpc.VMSetParams{DiskGiB: 1, VCPUs: 2}); err == nil || !strings.Contains(err.Error(), "grow the disk of vm") {
		t.Fatalf("grow a disk whose file system is broken = %v, want the grow's error", err)
	}
	after, _ := e.row(t, vm.ID)
	if after.DiskBytes != before.DiskBytes || after.VCPUs != before.VCPUs {
		t.Errorf("the failed set changed the VM: disk %d → %d, vcpus %d → %d", before.DiskBytes, after.DiskBytes, before.VCPUs, after.VCPUs)
	}
	e.assertDown(t, vm.ID, "sx", store.VMStopped, "stopped by request") // the disk's size included
	if err := set(rpc.VMSetParams{VCPUs: 2, MemoryMiB: 256}); err != nil {
		t.Fatal(err)
	}
	e.mustStart(t, "sx")
	procs := e.vmm.procsOf(vm.ID)
	if spec := procs[len(procs)-1].spec; spec.VCPUs != 2 || spec.MemoryMiB != 256 {
		t.Errorf("the boot after set got %d vCPUs and %d MiB, want 2 and 256", spec.VCPUs, spec.MemoryMiB)
	}
}
