package vmnet

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"banger/internal/errdefs"
)

func TestNetlinkLinksInNamespace(t *testing.T) {
	requireNetNS(t)
	ns := testNetNS(t)
	l, err := NewNetlinkLinks(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gw := netip.MustParsePrefix("10.88.0.1/24")
	for range 2 { // idempotent
		if err := l.EnsureBridge("banger0", gw, 1400); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.CreateTAP("bgtp00000001", 1400); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateTAP("bgtp00000001", 0); !errors.Is(err, ErrLinkExists) || !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second CreateTAP = %v; want ErrLinkExists", err)
	}
	if err := l.AttachToBridge("bgtp00000001", "banger0", true); err != nil {
		t.Fatal(err)
	}
	if err := l.Rename("bgtp00000001", "bgt0123456789ab"); err != nil {
		t.Fatal(err)
	}
	if err := l.SetUp("bgt0123456789ab"); err != nil {
		t.Fatal(err)
	}
	h := nsHandle(t, ns)
	tap, err := h.LinkByName("bgt0123456789ab")
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := tap.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("tap is a %T", tap)
	}
	if tt.Mode != netlink.TUNTAP_MODE_TAP || tap.Attrs().MTU != 1400 {
		t.Fatalf("tap: mode %v mtu %d; want a TAP with mtu 1400", tt.Mode, tap.Attrs().MTU)
	}
	if tt.Owner != 0 || tt.NonPersist {
		t.Fatalf("tap owner %d nonpersist %v; want a persistent TAP owned by root", tt.Owner, tt.NonPersist)
	}
	if err := l.CreateTAP("bgtp00000002", 0); err != nil {
		t.Fatal(err)
	}
	if err := l.Rename("bgtp00000002", "bgt0123456789ab"); !errors.Is(err, ErrLinkExists) {
		t.Fatalf("Rename onto a taken name = %v; want ErrLinkExists", err)
	}
	names, err := l.ListTAPs(TAPPrefix)
	if err != nil || strings.Join(names, ",") != "bgt0123456789ab,bgtp00000002" && strings.Join(names, ",") != "bgtp00000002,bgt0123456789ab" {
		t.Fatalf("ListTAPs = %v, %v", names, err)
	}
	if names, _ := l.ListTAPs(PoolTAPPrefix); len(names) != 1 {
		t.Fatalf("ListTAPs(pool) = %v; want one", names)
	}
	for name, err := range map[string]error{
		"Delete":         l.Delete("nope0"),
		"SetUp":          l.SetUp("nope0"),
		"Rename":         l.Rename("nope0", "nope1"),
		"AttachToBridge": l.AttachToBridge("nope0", "banger0", false),
	} {
		if !errors.Is(err, ErrLinkNotFound) || !errdefs.IsNotFound(err) {
			t.Errorf("%s on a missing link = %v; want ErrLinkNotFound", name, err)
		}
	}
	// A TAP is not a bridge.
	if err := l.EnsureBridge("bgtp00000002", gw, 0); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("EnsureBridge over a TAP = %v; want a 'not a bridge' error", err)
	}
	for _, n := range []string{"bgt0123456789ab", "bgtp00000002", "banger0"} {
		if err := l.Delete(n); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNftFirewallInNamespace(t *testing.T) {
	requireNetNS(t)
	ns := testNetNS(t)
	fw := NewNftFirewall(ns)
	if err := fw.Remove("banger"); !errors.Is(err, ErrTableNotFound) || !errdefs.IsNotFound(err) {
		t.Fatalf("Remove before Apply = %v; want ErrTableNotFound", err)
	}
	cfg, _ := Config{}.withDefaults()
	for range 2 { // replacing, not appending
		if err := fw.Apply(BuildRuleset(cfg)); err != nil {
			t.Fatal(err)
		}
	}
	logNftRuleset(t, ns, BuildRuleset(cfg))
	cfg.AllowGuestToGuest = true
	if err := fw.Apply(BuildRuleset(cfg)); err != nil {
		t.Fatal(err)
	}
	logNftRuleset(t, ns, BuildRuleset(cfg))
	if has, err := fw.Has("banger"); !has || err != nil {
		t.Fatalf("Has = %v, %v", has, err)
	}
	if err := fw.Remove("banger"); err != nil {
		t.Fatal(err)
	}
	if has, err := fw.Has("banger"); has || err != nil {
		t.Fatalf("Has after Remove = %v, %v", has, err)
	}
}

// TestTAPOwner: TAPs made for a jailed VMM's uid and gid say so, and a
// pool for that owner adopts those and deletes root's.
func TestTAPOwner(t *testing.T) {
	requireNetNS(t)
	ns := testNetNS(t)
	l, err := NewNetlinkLinks(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.EnsureBridge("banger0", netip.MustParsePrefix("10.88.0.1/24"), 0); err != nil {
		t.Fatal(err)
	}
	o := l.(OwnedTAPs)
	if err := l.CreateTAP("bgtp0000000a", 0); err != nil { // root's
		t.Fatal(err)
	}
	jailed := TAPOwner{UID: 4321, GID: 4322}
	o.SetTAPOwner(jailed)
	if err := l.CreateTAP("bgtp0000000b", 0); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]TAPOwner{"bgtp0000000a": {}, "bgtp0000000b": jailed} {
		if got, err := o.TAPOwner(name); err != nil || got != want {
			t.Errorf("TAPOwner(%s) = %+v, %v; want %+v", name, got, err, want)
		}
	}
	pool := NewTAPPool(l, TAPPoolOptions{Bridge: "banger0", Size: 1, Owner: jailed}, nil)
	if err := pool.Start(); err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	names, err := l.ListTAPs(PoolTAPPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "bgtp0000000b" {
		t.Errorf("idle TAPs after Start: %q; want only the jailed owner's bgtp0000000b", names)
	}
}
