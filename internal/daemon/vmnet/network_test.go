package vmnet

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
)

// fakeNetwork is a Network in the daemon's own namespace whose every host
// access is faked: links, firewall, forwarding, and the DNS sockets.
func fakeNetwork(t *testing.T, cfg Config) (*Network, *fakeLinks, *fakeFirewall, *atomic.Int32) {
	t.Helper()
	if cfg.NetNS != "" {
		t.Fatal("fakeNetwork works in the daemon's namespace only")
	}
	if cfg.Upstreams == nil {
		cfg.Upstreams = []netip.AddrPort{} // do not read the host's resolv.conf
	}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fl, fw := newFakeLinks(), newFakeFirewall()
	var forwards atomic.Int32
	n.newLinks = func(*Namespace) (Links, error) { return fl, nil }
	n.newFirewall = func(*Namespace) Firewall { return fw }
	n.enableForward = func(*Namespace) error { forwards.Add(1); return nil }
	n.startDNS = func(*DNSServer, *Namespace) error { return nil }
	t.Cleanup(func() { n.Close() })
	return n, fl, fw, &forwards
}

func TestNetworkSetupWithFakes(t *testing.T) {
	n, fl, fw, forwards := fakeNetwork(t, Config{TAPPoolSize: 2, MTU: 1400})
	if err := n.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := fl.Render()
	wantPrefix := "banger0 bridge up mtu=1400 addr=10.88.0.1/24\n"
	if !strings.HasPrefix(got, wantPrefix) || strings.Count(got, " tuntap down master=banger0 isolated mtu=1400\n") != 2 {
		t.Fatalf("links:\n%s\nwant the bridge and 2 idle isolated taps", got)
	}
	cfg, _ := Config{MTU: 1400}.withDefaults()
	if diff := cmp.Diff(BuildRuleset(cfg).String(), fw.Render()); diff != "" {
		t.Fatalf("rules (-want +got):\n%s", diff)
	}
	if forwards.Load() != 1 {
		t.Fatalf("forwarding enabled %d times; want 1", forwards.Load())
	}
	if err := n.Setup(context.Background()); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("second Setup = %v; want failed precondition", err)
	}

	tap, err := n.TAPs().Acquire("3fa85f6457c14a2b")
	if err != nil {
		t.Fatal(err)
	}
	if vm, err := n.VMTAPs(); err != nil || len(vm) != 1 || vm[0] != tap {
		t.Fatalf("VMTAPs = %v, %v; want [%s]", vm, err, tap)
	}
	g := n.GuestNet("3fa85f6457c14a2b", netipAddr("10.88.0.2"))
	if g.Addr.String() != "10.88.0.2/24" || g.Gateway.String() != "10.88.0.1" || g.DNS != g.Gateway || g.Domain != "vm.banger" || g.MTU != 1400 || g.MAC.String() != MACFor("3fa85f6457c14a2b").String() {
		t.Fatalf("GuestNet = %+v", g)
	}

	if err := n.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fl.Render(); got != "" {
		t.Fatalf("after Teardown, links:\n%s", got)
	}
	if got := fw.Render(); got != "" {
		t.Fatalf("after Teardown, rules:\n%s", got)
	}
}

func TestNetworkCloseKeepsHostState(t *testing.T) {
	n, fl, fw, _ := fakeNetwork(t, Config{})
	if err := n.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	links, rules := fl.Render(), fw.Render()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if fl.Render() != links || fw.Render() != rules {
		t.Fatalf("Close changed the host:\n%s\n%s", fl.Render(), fw.Render())
	}
	if err := n.Setup(context.Background()); err == nil {
		t.Fatal("Setup after Close succeeded")
	}
	if _, err := n.VMTAPs(); !errors.Is(err, ErrClosed) {
		t.Fatalf("VMTAPs after Close = %v; want ErrClosed", err)
	}
}

func TestNetworkSetupFailureStopsServices(t *testing.T) {
	n, fl, fw, _ := fakeNetwork(t, Config{})
	fw.failApply = errInjected
	if err := n.Setup(context.Background()); !errors.Is(err, errInjected) {
		t.Fatalf("Setup = %v; want the injected failure", err)
	}
	if strings.Contains(fl.Render(), "tuntap") {
		t.Fatalf("taps made after a failed step:\n%s", fl.Render())
	}
	if n.TAPs() != nil {
		t.Fatal("pool made after a failed step")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{Subnet: netipPrefix("fd00::/64")}, nil); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("New = %v; want invalid argument", err)
	}
}
