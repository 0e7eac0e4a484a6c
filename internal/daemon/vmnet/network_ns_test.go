package vmnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	"banger/internal/errdefs"
)

// hostIPForward reads the host namespace's forwarding switch (the test's
// own threads never leave it).
func hostIPForward(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// hostLinkNames lists the host namespace's interfaces (read only).
func hostLinkNames(t *testing.T) map[string]bool {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, i := range ifs {
		m[i.Name] = true
	}
	return m
}

func TestSetupInNamespace(t *testing.T) {
	requireNetNS(t)
	leaks := goleak.IgnoreCurrent()
	hostFwd, hostLinks := hostIPForward(t), hostLinkNames(t)
	ns := testNetNS(t)
	ctx := context.Background()

	cfg := Config{NetNS: ns.Name(), Upstreams: []netip.AddrPort{}} // none: this test sends no DNS
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Teardown(ctx) })
	if err := n.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	checkSetup(t, ns, 4)

	if got, err := IPForward(ns); err != nil || !got {
		t.Fatalf("ip_forward in %s = %v, %v; want on", ns.Name(), got, err)
	}
	if got := hostIPForward(t); got != hostFwd {
		t.Fatalf("host ip_forward changed from %s to %s", hostFwd, got)
	}
	for name := range hostLinkNames(t) {
		if !hostLinks[name] {
			t.Fatalf("interface %q appeared in the host namespace", name)
		}
	}
	logNftRuleset(t, ns, BuildRuleset(n.Config()))

	// Close keeps the host state; a new Network adopts it as it is.
	tapsBefore := tapNames(t, ns)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	checkSetup(t, ns, 4)
	if got := tapNames(t, ns); strings.Join(got, ",") != strings.Join(tapsBefore, ",") {
		t.Fatalf("taps after a second Setup: %v; want the adopted %v", got, tapsBefore)
	}

	// A VM's TAP: renamed from the pool, up, an isolated port.
	tap, err := n2.TAPs().Acquire("3fa85f6457c14a2b")
	if err != nil {
		t.Fatal(err)
	}
	h := nsHandle(t, ns)
	link, err := h.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 || link.Type() != "tuntap" {
		t.Fatalf("vm tap %s: flags %v type %s; want an up tuntap", tap, link.Attrs().Flags, link.Type())
	}
	if vm, err := n2.VMTAPs(); err != nil || len(vm) != 1 || vm[0] != tap {
		t.Fatalf("VMTAPs = %v, %v", vm, err)
	}
	eventually(t, 5*time.Second, "pool refilled", func() bool { return n2.TAPs().Idle() == 4 })

	if err := n2.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			t.Errorf("after Teardown: link %s (%s) left", l.Attrs().Name, l.Type())
		}
	}
	if has, err := NewNftFirewall(ns).Has("banger"); err != nil || has {
		t.Fatalf("after Teardown: table present=%v, %v", has, err)
	}
	if err := n2.Teardown(ctx); err != nil {
		t.Fatalf("second Teardown = %v; want nil", err)
	}
	// The DNS servers, forwarding workers and refill loops are gone.
	goleak.VerifyNone(t, leaks)
}

func TestSetupCreatesNamespace(t *testing.T) {
	requireNetNS(t)
	var b [4]byte
	rand.Read(b[:])
	name := "bgn-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		if err := DeleteNetNS(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	n, err := New(Config{NetNS: name, Upstreams: []netip.AddrPort{}, TAPPoolSize: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !isNetNSMount(netnsPath(name)) {
		t.Fatalf("%s is not a namespace mount", netnsPath(name))
	}
	h := nsHandle(t, n.Namespace())
	lo, err := h.LinkByName("lo")
	if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("lo in the new namespace: %v, %v; want up", lo, err)
	}
	if taps := tapNames(t, n.Namespace()); len(taps) != 0 {
		t.Fatalf("pool of size -1 made taps %v", taps)
	}
	if err := n.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A closed handle fails; it never falls back to the daemon's namespace.
	closed, err := OpenNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	ran := false
	if err := closed.Do(func() error { ran = true; return nil }); !errors.Is(err, ErrClosed) || ran {
		t.Fatalf("Do on a closed namespace = %v (ran=%v); want ErrClosed, not run", err, ran)
	}
	if _, err := NewNftFirewall(closed).Has("banger"); !errors.Is(err, ErrClosed) {
		t.Fatalf("firewall on a closed namespace = %v; want ErrClosed", err)
	}
	if _, err := NewNetlinkLinks(closed); !errors.Is(err, ErrClosed) {
		t.Fatalf("links on a closed namespace = %v; want ErrClosed", err)
	}
	if created, err := EnsureNetNS(name); created || err != nil {
		t.Fatalf("EnsureNetNS on an existing namespace = %v, %v; want false, nil", created, err)
	}
	if _, err := OpenNetNS("bgn-missing-" + name); !errors.Is(err, ErrNetNSNotFound) || !errdefs.IsNotFound(err) {
		t.Fatalf("OpenNetNS(missing) = %v; want ErrNetNSNotFound", err)
	}
	if err := DeleteNetNS("bgn-missing-" + name); !errors.Is(err, ErrNetNSNotFound) {
		t.Fatalf("DeleteNetNS(missing) = %v; want ErrNetNSNotFound", err)
	}
}

func tapNames(t *testing.T, ns *Namespace) []string {
	t.Helper()
	l, err := NewNetlinkLinks(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	names, err := l.ListTAPs(TAPPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// checkSetup asserts the bridge, the idle TAPs and the rules in ns.
func checkSetup(t *testing.T, ns *Namespace, poolSize int) {
	t.Helper()
	h := nsHandle(t, ns)
	br, err := h.LinkByName("banger0")
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("banger0: type %s flags %v; want an up bridge", br.Type(), br.Attrs().Flags)
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.88.0.1/24" {
		t.Fatalf("bridge addresses %v; want exactly 10.88.0.1/24", addrs)
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var taps int
	for _, l := range links {
		if l.Type() != "tuntap" {
			continue
		}
		taps++
		name := l.Attrs().Name
		if !strings.HasPrefix(name, PoolTAPPrefix) || len(name) > 15 {
			t.Errorf("tap %q: want an idle pool name", name)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("tap %s: master index %d; want the bridge's %d", name, l.Attrs().MasterIndex, br.Attrs().Index)
		}
		pi, err := h.LinkGetProtinfo(l)
		if err != nil || !pi.Isolated {
			t.Errorf("tap %s: protinfo %v, %v; want an isolated port", name, pi, err)
		}
	}
	if taps != poolSize {
		t.Errorf("%d taps; want %d", taps, poolSize)
	}

	c, err := nftables.New(nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: "banger", Family: nftables.TableFamilyINet}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		hook  *nftables.ChainHook
		typ   nftables.ChainType
		prio  nftables.ChainPriority
		rules int
	}{
		"postrouting": {nftables.ChainHookPostrouting, nftables.ChainTypeNAT, 100, 1},
		"forward":     {nftables.ChainHookForward, nftables.ChainTypeFilter, 0, 4},
		"input":       {nftables.ChainHookInput, nftables.ChainTypeFilter, 0, 4},
	}
	seen := 0
	for _, ch := range chains {
		if ch.Table.Name != "banger" {
			continue
		}
		w, ok := want[ch.Name]
		if !ok {
			t.Errorf("unexpected chain %s", ch.Name)
			continue
		}
		seen++
		if *ch.Hooknum != *w.hook || ch.Type != w.typ || *ch.Priority != w.prio || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
			t.Errorf("chain %s: hook %v type %s prio %v; want %v %s %v, policy accept", ch.Name, *ch.Hooknum, ch.Type, *ch.Priority, *w.hook, w.typ, w.prio)
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != w.rules {
			t.Errorf("chain %s: %d rules; want %d", ch.Name, len(rules), w.rules)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if !strings.HasPrefix(comment, "banger: ") {
				t.Errorf("chain %s: rule without a banger comment: %q", ch.Name, comment)
			}
		}
		if ch.Name == "postrouting" && len(rules) == 1 {
			if _, ok := rules[0].Exprs[len(rules[0].Exprs)-1].(*expr.Masq); !ok {
				t.Errorf("postrouting rule ends in %T; want masquerade", rules[0].Exprs[len(rules[0].Exprs)-1])
			}
		}
	}
	if seen != len(want) {
		t.Errorf("found %d of banger's %d chains", seen, len(want))
	}
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// logNftRuleset prints `nft list ruleset` run inside ns, when nft is
// installed, and checks that it reads as the Ruleset says (so the
// compiled expressions mean what BuildRuleset meant).
func logNftRuleset(t *testing.T, ns *Namespace, rs Ruleset) {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Log("nft not installed: not comparing with `nft list ruleset`")
		return
	}
	var out []byte
	err = ns.Do(func() error {
		var err error
		out, err = exec.Command(nft, "list", "ruleset").CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	t.Logf("nft list ruleset in %s:\n%s", ns.Name(), out)
	got := counterRE.ReplaceAllString(string(out), "counter")
	if got != rs.String() {
		t.Errorf("nft lists:\n%s\nwant:\n%s", got, rs.String())
	}
}
