package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"banger/internal/store"
)

// probeCap records what each hook saw and fails the hooks it is told to,
// for the VMs it is told to.
type probeCap struct {
	mu     sync.Mutex
	events []string
	fail   map[string]string // hook → VM name whose hook fails
}

func (c *probeCap) capName() string { return "probe" }

func (c *probeCap) failOn(hook, vm string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if vm == "" {
		delete(c.fail, hook)
		return
	}
	c.fail[hook] = vm
}

func (c *probeCap) record(hook string, b *capBoot, seen string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, fmt.Sprintf("%s %s %s", hook, b.vm.Name, seen))
	if c.fail[hook] == b.vm.Name {
		return errors.New("injected " + hook + " failure")
	}
	return nil
}

func (c *probeCap) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.events
	c.events = nil
	return out
}

// Each hook reports what the capabilities registered before it (the
// daemon's key, the DNS name) had done by then.
func (c *probeCap) preStart(_ context.Context, b *capBoot) error {
	return c.record("preStart", b, fmt.Sprintf("authkey=%v", b.guest.AuthKey != ""))
}

func (c *probeCap) postBoot(_ context.Context, b *capBoot) error {
	_, inDNS := b.net.DNS().Lookup(b.vm.Name)
	return c.record("postBoot", b, fmt.Sprintf("dns=%v", inDNS))
}

func (c *probeCap) preStop(_ context.Context, b *capBoot) error {
	inDNS := false
	if b.net != nil {
		_, inDNS = b.net.DNS().Lookup(b.vm.Name)
	}
	return c.record("preStop", b, fmt.Sprintf("dns=%v", inDNS))
}

func vmtProbe(e *vmtEnv) *probeCap {
	p := &probeCap{fail: map[string]string{}}
	// Set before any op runs: the hooks are read-only after Open.
	e.d.vms.caps = append(e.d.vms.caps, p)
	return p
}

func wantEvents(t *testing.T, when string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: hooks ran\n  %s\nwant\n  %s", when, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// The hooks run in order on create, start, stop, restart and rm: preStart
// after the daemon's key is made, postBoot after the DNS name is in,
// preStop (in reverse) before it goes.
func TestVMCapsRunAroundEachBoot(t *testing.T) {
	e := vmtSetup(t, nil)
	p := vmtProbe(e)

	vm := e.mustCreate(t, "caps")
	wantEvents(t, "create", p.take(), "preStart caps authkey=true", "postBoot caps dns=true")
	// (The fake guest accepts only the key on its command line, so exec
	// working proves the key the hook made reached it.)
	if out, code, err := e.exec("caps", "true"); err != nil || code != 0 {
		t.Errorf("exec = %q, %d, %v", out, code, err)
	}
	e.mustStop(t, "caps")
	wantEvents(t, "stop", p.take(), "preStop caps dns=true", "preStop caps dns=false")
	e.mustStart(t, "caps")
	wantEvents(t, "start", p.take(), "preStart caps authkey=true", "postBoot caps dns=true")
	if final, err := e.restart("caps", 1); err != nil || final.State != "succeeded" {
		t.Fatalf("restart: %v, %s %s", err, final.State, final.Error)
	}
	wantEvents(t, "restart", p.take(),
		"preStop caps dns=true", "preStop caps dns=false", "preStart caps authkey=true", "postBoot caps dns=true")
	if err := e.rm("caps", true); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "rm --force", p.take(), "preStop caps dns=true")
	e.assertGone(t, vm.ID, "caps")
}

// A failing preStart or postBoot fails the create, which releases
// everything it took; on a start, the VM keeps only its disk.
func TestVMCapsFailureRollsBack(t *testing.T) {
	e := vmtSetup(t, nil)
	p := vmtProbe(e)

	t.Run("create/preStart", func(t *testing.T) {
		p.failOn("preStart", "cf-pre")
		defer p.failOn("preStart", "")
		started, final, err := e.create("cf-pre")
		if err != nil {
			t.Fatal(err)
		}
		e.assertOpFailed(t, final, "cf-pre", "probe: pre-start: injected preStart failure")
		if n := len(e.vmm.launchesOf(started.VM.ID)); n != 0 {
			t.Errorf("the VMM was launched %d times after a failed preStart", n)
		}
		e.assertGone(t, started.VM.ID, "cf-pre")
	})
	t.Run("create/postBoot", func(t *testing.T) {
		p.failOn("postBoot", "cf-post")
		defer p.failOn("postBoot", "")
		started, final, err := e.create("cf-post")
		if err != nil {
			t.Fatal(err)
		}
		e.assertOpFailed(t, final, "cf-post", "probe: post-boot: injected postBoot failure")
		e.assertGone(t, started.VM.ID, "cf-post")
	})
	t.Run("start/postBoot", func(t *testing.T) {
		vm := e.mustCreate(t, "sf-post")
		e.mustStop(t, "sf-post")
		p.failOn("postBoot", "sf-post")
		final, err := e.start("sf-post")
		p.failOn("postBoot", "")
		if err != nil {
			t.Fatal(err)
		}
		e.assertOpFailed(t, final, "sf-post", "injected postBoot failure")
		e.assertDown(t, vm.ID, "sf-post", store.VMError, "injected postBoot failure")
		e.mustStart(t, "sf-post")
		e.assertRunning(t, vm.ID, "sf-post")
	})
	p.take()
}

// A failing preStop fails a stop, which then changes nothing: the VM
// still runs, whole (DNS name back), and answers exec. On rm --force the
// failure is reported and the release goes on.
func TestVMCapsPreStopFailure(t *testing.T) {
	e := vmtSetup(t, nil)
	p := vmtProbe(e)
	vm := e.mustCreate(t, "ps")

	p.failOn("preStop", "ps")
	if got, err := e.stop("ps", 1); err == nil || !strings.Contains(err.Error(), "injected preStop failure") {
		t.Fatalf("stop with a failing preStop = %+v, %v; want its error", got, err)
	}
	e.assertRunning(t, vm.ID, "ps")
	if out, code, err := e.exec("ps", "echo", "still here"); err != nil || code != 0 || out != "still here\n" {
		t.Errorf("exec after the refused stop = %q, %d, %v", out, code, err)
	}
	if final, err := e.restart("ps", 1); err != nil || final.State != "failed" || !strings.Contains(final.Error, "injected preStop failure") {
		t.Errorf("restart with a failing preStop: %v, %s %q", err, final.State, final.Error)
	}
	e.assertRunning(t, vm.ID, "ps")

	if err := e.rm("ps", true); err == nil || !strings.Contains(err.Error(), "injected preStop failure") {
		t.Errorf("rm --force with a failing preStop = %v; want the failure reported", err)
	}
	p.failOn("preStop", "")
	// Reported, and the release went on: nothing of the VM is left, or
	// what is left goes with a second rm.
	if _, ok := e.row(t, vm.ID); ok {
		if err := e.rm("ps", true); err != nil {
			t.Fatalf("second rm: %v", err)
		}
	}
	e.assertGone(t, vm.ID, "ps")
}
