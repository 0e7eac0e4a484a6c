package vmnet

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
)

// newTestPool returns a pool over a fake with a bridge, whose idle TAPs
// are named bgtp0000, bgtp0001, ...
func newTestPool(t *testing.T, size int) (*TAPPool, *fakeLinks) {
	t.Helper()
	fl := newFakeLinks()
	if err := fl.EnsureBridge("banger0", netip.MustParsePrefix("10.88.0.1/24"), 0); err != nil {
		t.Fatal(err)
	}
	p := NewTAPPool(fl, TAPPoolOptions{Bridge: "banger0", Size: size, Isolated: true}, nil)
	var n atomic.Int32
	p.newName = func() string { return fmt.Sprintf("%s%04d", PoolTAPPrefix, n.Add(1)-1) }
	p.retry = 5 * time.Millisecond
	t.Cleanup(p.Close)
	return p, fl
}

func wantLinks(t *testing.T, fl *fakeLinks, want string) {
	t.Helper()
	if diff := cmp.Diff(want, fl.Render()); diff != "" {
		t.Fatalf("links (-want +got):\n%s", diff)
	}
}

const bridgeLine = "banger0 bridge up addr=10.88.0.1/24\n"

func TestTAPPoolStartFills(t *testing.T) {
	p, fl := newTestPool(t, 3)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	wantLinks(t, fl, bridgeLine+
		"bgtp0000 tuntap down master=banger0 isolated\n"+
		"bgtp0001 tuntap down master=banger0 isolated\n"+
		"bgtp0002 tuntap down master=banger0 isolated\n")
	if p.Idle() != 3 {
		t.Fatalf("Idle = %d; want 3", p.Idle())
	}
}

func TestTAPPoolStartAdoptsAndTrims(t *testing.T) {
	p, fl := newTestPool(t, 2)
	for _, n := range []string{"bgtpaaaa0001", "bgtpaaaa0002", "bgtpaaaa0003"} {
		fl.add(n, fakeLink{kind: "tuntap"}) // left by an earlier daemon, detached
	}
	fl.add("bgt3fa85f6457c1", fakeLink{kind: "tuntap", up: true, master: "banger0"}) // a running VM's
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	wantLinks(t, fl, bridgeLine+
		"bgt3fa85f6457c1 tuntap up master=banger0\n"+
		"bgtpaaaa0001 tuntap down master=banger0 isolated\n"+
		"bgtpaaaa0002 tuntap down master=banger0 isolated\n")
	if fl.calls["CreateTAP"] != 0 {
		t.Fatalf("created %d taps; want none (adopted)", fl.calls["CreateTAP"])
	}
}

func TestTAPPoolAcquireRenamesAndRefills(t *testing.T) {
	p, fl := newTestPool(t, 2)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	name, err := p.Acquire("3fa85f6457c14a2b")
	if err != nil || name != "bgt3fa85f6457c1" {
		t.Fatalf("Acquire = %q, %v; want bgt3fa85f6457c1", name, err)
	}
	eventually(t, 2*time.Second, "pool refilled to 2", func() bool { return p.Idle() == 2 })
	wantLinks(t, fl, bridgeLine+
		"bgt3fa85f6457c1 tuntap up master=banger0 isolated\n"+
		"bgtp0001 tuntap down master=banger0 isolated\n"+
		"bgtp0002 tuntap down master=banger0 isolated\n")
	if err := p.Release(name); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(name); err != nil {
		t.Fatalf("second Release = %v; want nil (already gone)", err)
	}
	wantLinks(t, fl, bridgeLine+
		"bgtp0001 tuntap down master=banger0 isolated\n"+
		"bgtp0002 tuntap down master=banger0 isolated\n")
}

func TestTAPPoolEmptyCreatesDirectly(t *testing.T) {
	p, fl := newTestPool(t, 0)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Acquire("00000000000000aa"); err != nil {
		t.Fatal(err)
	}
	wantLinks(t, fl, bridgeLine+"bgt000000000000 tuntap up master=banger0 isolated\n")
}

func TestTAPPoolAcquireReusesTheVMsTAP(t *testing.T) {
	p, fl := newTestPool(t, 1)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	fl.add("bgt3fa85f6457c1", fakeLink{kind: "tuntap"}) // left by the VM's last run
	name, err := p.Acquire("3fa85f6457c14a2b")
	if err != nil || name != "bgt3fa85f6457c1" {
		t.Fatalf("Acquire = %q, %v", name, err)
	}
	if p.Idle() != 1 {
		t.Fatalf("Idle = %d; want 1: the pooled TAP goes back", p.Idle())
	}
	wantLinks(t, fl, bridgeLine+
		"bgt3fa85f6457c1 tuntap up master=banger0 isolated\n"+
		"bgtp0000 tuntap down master=banger0 isolated\n")
}

func TestTAPPoolAcquireFailures(t *testing.T) {
	t.Run("rename fails: a new TAP is made, the pooled one deleted", func(t *testing.T) {
		p, fl := newTestPool(t, 1)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		fl.failNext("Rename", errInjected)
		name, err := p.Acquire("3fa85f6457c14a2b")
		if err != nil || name != "bgt3fa85f6457c1" {
			t.Fatalf("Acquire = %q, %v", name, err)
		}
		eventually(t, 2*time.Second, "pool refilled", func() bool { return p.Idle() == 1 })
		wantLinks(t, fl, bridgeLine+
			"bgt3fa85f6457c1 tuntap up master=banger0 isolated\n"+
			"bgtp0001 tuntap down master=banger0 isolated\n")
	})
	t.Run("bring-up fails: the TAP is deleted", func(t *testing.T) {
		p, fl := newTestPool(t, 0)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		fl.failNext("SetUp", errInjected)
		if _, err := p.Acquire("3fa85f6457c14a2b"); !errors.Is(err, errInjected) {
			t.Fatalf("Acquire = %v; want the injected failure", err)
		}
		wantLinks(t, fl, bridgeLine)
	})
	t.Run("bad VM id", func(t *testing.T) {
		p, _ := newTestPool(t, 0)
		if _, err := p.Acquire("not-an-id"); !errdefs.IsInvalidArgument(err) {
			t.Fatalf("Acquire = %v; want invalid argument", err)
		}
	})
	t.Run("release of another link is refused", func(t *testing.T) {
		p, fl := newTestPool(t, 0)
		for _, n := range []string{"banger0", "bgtp0000", "eth0"} {
			if err := p.Release(n); !errdefs.IsInvalidArgument(err) {
				t.Fatalf("Release(%q) = %v; want invalid argument", n, err)
			}
		}
		wantLinks(t, fl, bridgeLine)
	})
	t.Run("start with a failing creation", func(t *testing.T) {
		p, fl := newTestPool(t, 2)
		fl.failNext("CreateTAP", errInjected)
		fl.failNext("CreateTAP", errInjected)
		if err := p.Start(); !errors.Is(err, errInjected) {
			t.Fatalf("Start = %v; want the injected failure", err)
		}
		// The background loop retries (and fails once more) until full.
		eventually(t, 2*time.Second, "pool filled in the background", func() bool { return p.Idle() == 2 })
		if _, err := p.Acquire("3fa85f6457c14a2b"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTAPPoolClose(t *testing.T) {
	p, fl := newTestPool(t, 2)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close()
	if _, err := p.Acquire("3fa85f6457c14a2b"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close = %v; want ErrClosed", err)
	}
	// Idle TAPs stay for the next pool.
	wantLinks(t, fl, bridgeLine+
		"bgtp0000 tuntap down master=banger0 isolated\n"+
		"bgtp0001 tuntap down master=banger0 isolated\n")
	if err := p.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}

	unstarted, _ := newTestPool(t, 2)
	unstarted.Close() // must not block
}

// Many VMs acquire and release at once: every TAP handed out is held by
// one VM only, nothing leaks, and the pool ends full.
func TestTAPPoolConcurrent(t *testing.T) {
	p, fl := newTestPool(t, 4)
	fl.delay = 50 * time.Microsecond
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 16, 25
	var held sync.Map
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				id := fmt.Sprintf("%08x%08x", w, r)
				name, err := p.Acquire(id)
				if err != nil {
					errc <- err
					return
				}
				if other, dup := held.LoadOrStore(name, id); dup {
					errc <- fmt.Errorf("tap %s handed to %s while %s holds it", name, id, other)
					return
				}
				held.Delete(name)
				if err := p.Release(name); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	eventually(t, 5*time.Second, "pool refilled to 4", func() bool { return p.Idle() == 4 })
	p.Close()
	vmTAPs, idle := 0, 0
	names, _ := fl.ListTAPs(TAPPrefix)
	for _, n := range names {
		if _, ok := VMIDPrefix(n); ok {
			vmTAPs++
		} else {
			idle++
		}
	}
	if vmTAPs != 0 || idle != 4 {
		t.Fatalf("after all releases: %d VM taps, %d idle; want 0 and 4:\n%s", vmTAPs, idle, fl.Render())
	}
}
