package vmnet

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
)

// requireNetNS skips unless the test may make network namespaces: it
// needs root (namespaces, netlink, nftables, /dev/net/tun) and is not
// run under -short.
func requireNetNS(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped under -short: makes network namespaces, bridges, TAPs and nftables rules")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces, bridges, TAPs and nftables rules (inside its own namespaces only)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun for TAP devices: %v", err)
	}
}

// testNetNS makes a fresh named namespace (bgn-RANDOM) that is deleted
// when the test ends, failed or not, and returns it open.
func testNetNS(t *testing.T) *Namespace {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	name := "bgn-" + hex.EncodeToString(b[:])
	created, err := EnsureNetNS(name)
	if created {
		t.Cleanup(func() {
			if err := DeleteNetNS(name); err != nil {
				t.Errorf("delete netns %s: %v", name, err)
			}
		})
	}
	if err != nil || !created {
		t.Fatalf("EnsureNetNS(%s) = %v, %v", name, created, err)
	}
	ns, err := OpenNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// nsHandle is a netlink handle in ns, closed at the end of the test.
func nsHandle(t *testing.T, ns *Namespace) *netlink.Handle {
	t.Helper()
	h, err := ns.netlinkHandle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// vethInto connects two namespaces with a veth pair: outer (named
// outerName) in `from`, and "eth0" in `to` with addr, up, and a default
// route via gw when gw is valid. It returns nothing; the pair goes with
// the namespaces.
func vethInto(t *testing.T, from *Namespace, outerName string, to *Namespace, addr netip.Prefix, gw netip.Addr) {
	t.Helper()
	hf, ht := nsHandle(t, from), nsHandle(t, to)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outerName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(to.fd)}
	if err := hf.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s: %v", outerName, err)
	}
	outer, err := hf.LinkByName(outerName)
	if err != nil {
		t.Fatal(err)
	}
	if err := hf.LinkSetUp(outer); err != nil {
		t.Fatal(err)
	}
	inner, err := ht.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	ipnet := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
	if err := ht.AddrAdd(inner, &netlink.Addr{IPNet: ipnet}); err != nil {
		t.Fatal(err)
	}
	if err := ht.LinkSetUp(inner); err != nil {
		t.Fatal(err)
	}
	if gw.IsValid() {
		if err := ht.RouteAdd(&netlink.Route{LinkIndex: inner.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
}
