package vmnet

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

// Every packet below stays inside namespaces the test made: the VM
// network's (the bridge, the DNS server, a fake upstream resolver on its
// loopback), guests' joined to the bridge by veth pairs standing in for
// TAPs, and an "outside" one joined to the VM network's by a veth pair.
// Blocked connections wait at most blockedWait each.

const blockedWait = time.Second

// vmWorld is a Network in its own namespace plus guests on its bridge.
type vmWorld struct {
	br    *Namespace
	n     *Network
	links Links // in br
	ports int
}

func newVMWorld(t *testing.T, cfg Config, beforeSetup func(br *Namespace)) *vmWorld {
	t.Helper()
	br := testNetNS(t)
	if beforeSetup != nil {
		beforeSetup(br)
	}
	cfg.NetNS = br.Name()
	if cfg.Upstreams == nil {
		cfg.Upstreams = []netip.AddrPort{}
	}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Teardown(context.Background()); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
	if err := n.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	links, err := NewNetlinkLinks(br)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { links.Close() })
	return &vmWorld{br: br, n: n, links: links}
}

// addGuest makes a guest namespace with addr on eth0, whose other end is
// a port of the bridge set up as the pool sets up a TAP.
func (w *vmWorld) addGuest(t *testing.T, addr string) *Namespace {
	t.Helper()
	g := testNetNS(t)
	w.ports++
	port := fmt.Sprintf("bgv%d", w.ports)
	vethInto(t, w.br, port, g, netip.MustParsePrefix(addr), w.n.Gateway())
	if err := w.links.AttachToBridge(port, w.n.Config().Bridge, !w.n.Config().AllowGuestToGuest); err != nil {
		t.Fatal(err)
	}
	return g
}

// dialFrom connects from inside ns and returns the first line the server
// sends.
func dialFrom(ns *Namespace, addr string, timeout time.Duration) (string, error) {
	var line string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

// tcpServer accepts inside a namespace and tells each client its address.
type tcpServer struct {
	accepted atomic.Int32
}

func serveTCP(t *testing.T, ns *Namespace, addr string) *tcpServer {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name(), err)
	}
	s := &tcpServer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return s
}

// fakeUpstream is a resolver inside a namespace answering other.example.
// with 192.0.2.7 and anything else with NXDOMAIN.
type fakeUpstream struct {
	queries atomic.Int32
}

func startUpstream(t *testing.T, ns *Namespace, addr string) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		u.queries.Add(1)
		m := new(dns.Msg)
		if req.Question[0].Name == "other.example." && req.Question[0].Qtype == dns.TypeA {
			m.SetReply(req)
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "other.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)}}
		} else {
			m.SetRcode(req, dns.RcodeNameError)
		}
		w.WriteMsg(m)
	})
	var pc net.PacketConn
	var ln net.Listener
	err := ns.Do(func() (err error) {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("upstream on %s: %v", addr, err)
	}
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	var wg sync.WaitGroup
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() { defer wg.Done(); srv.ActivateAndServe() }()
		<-started
	}
	t.Cleanup(func() {
		for _, srv := range servers {
			srv.Shutdown()
		}
		wg.Wait()
	})
	return u
}

// queryFrom asks server from inside ns; a lost UDP packet is retried
// (three tries at most).
func queryFrom(t *testing.T, ns *Namespace, server, name string, tcp bool) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if tcp {
		c.Net = "tcp"
	}
	var resp *dns.Msg
	var err error
	for range 3 {
		err = ns.Do(func() (err error) {
			resp, _, err = c.Exchange(query(name, dns.TypeA), server)
			return err
		})
		if err == nil {
			return resp
		}
	}
	t.Fatalf("query %s from %s (%s): %v", name, ns.Name(), c.Net, err)
	return nil
}

// dropped reads the packet counter of the rule with that comment.
func dropped(t *testing.T, ns *Namespace, chain, comment string) uint64 {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := c.GetRules(&nftables.Table{Name: "banger", Family: nftables.TableFamilyINet},
		&nftables.Chain{Name: chain, Table: &nftables.Table{Name: "banger", Family: nftables.TableFamilyINet}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if got, _ := userdata.GetString(r.UserData, userdata.TypeComment); got != comment {
			continue
		}
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				return ctr.Packets
			}
		}
	}
	t.Fatalf("no counter on rule %q in chain %s", comment, chain)
	return 0
}

func TestTrafficInNamespaces(t *testing.T) {
	requireNetNS(t)
	var up *fakeUpstream
	w := newVMWorld(t, Config{
		// The first upstream is dead (nothing listens): the second answers.
		Upstreams:  []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:5399"), netip.MustParseAddrPort("127.0.0.1:5353")},
		DNSTimeout: time.Second,
	}, func(br *Namespace) { up = startUpstream(t, br, "127.0.0.1:5353") })
	if err := w.n.DNS().Register("web", netip.MustParseAddr("10.88.0.5")); err != nil {
		t.Fatal(err)
	}
	g1 := w.addGuest(t, "10.88.0.5/24")
	const dnsAddr = "10.88.0.1:53"

	t.Run("dns answers VMs by name", func(t *testing.T) {
		for _, q := range []struct {
			name string
			tcp  bool
		}{{"web.vm.banger.", false}, {"web.", false}, {"web.vm.banger.", true}} {
			resp := queryFrom(t, g1, dnsAddr, q.name, q.tcp)
			if got := summary(resp); got != "NOERROR aa "+q.name+"=10.88.0.5" {
				t.Errorf("%s (tcp=%v): %s", q.name, q.tcp, got)
			}
		}
		if got := summary(queryFrom(t, g1, dnsAddr, "nope.vm.banger.", false)); got != "NXDOMAIN aa" {
			t.Errorf("nope.vm.banger.: %s; want NXDOMAIN aa", got)
		}
		if n := up.queries.Load(); n != 0 {
			t.Errorf("upstream asked %d times for names of the VM domain", n)
		}
	})

	t.Run("dns forwards other names to the upstream", func(t *testing.T) {
		for _, tcp := range []bool{false, true} {
			if got := summary(queryFrom(t, g1, dnsAddr, "other.example.", tcp)); got != "NOERROR other.example.=192.0.2.7" {
				t.Errorf("other.example. (tcp=%v): %s", tcp, got)
			}
		}
		if got := summary(queryFrom(t, g1, dnsAddr, "missing.example.", false)); got != "NXDOMAIN" {
			t.Errorf("missing.example.: %s; want the upstream's NXDOMAIN", got)
		}
		if n := up.queries.Load(); n != 3 {
			t.Errorf("upstream asked %d times; want 3", n)
		}
	})

	t.Run("guests reach no other host port", func(t *testing.T) {
		srv := serveTCP(t, w.br, "10.88.0.1:8080")
		if _, err := dialFrom(w.br, "10.88.0.1:8080", blockedWait); err != nil {
			t.Fatalf("the host itself cannot reach its listener: %v", err)
		}
		before := dropped(t, w.br, "input", "banger: guests reach no other host port")
		if _, err := dialFrom(g1, "10.88.0.1:8080", blockedWait); err == nil {
			t.Fatal("a guest connected to the host's port 8080")
		}
		if n := srv.accepted.Load(); n != 1 {
			t.Fatalf("listener accepted %d connections; want only the host's", n)
		}
		if after := dropped(t, w.br, "input", "banger: guests reach no other host port"); after <= before {
			t.Fatalf("input drop counter %d -> %d; want it to count the guest's SYNs", before, after)
		}
	})

	// An "outside" namespace stands for the internet, routed from the VM
	// network's namespace by a veth pair.
	out := testNetNS(t)
	vethInto(t, w.br, "bgo0", out, netip.MustParsePrefix("192.0.2.2/24"), netip.Addr{})
	hb := nsHandle(t, w.br)
	bgo, err := hb.LinkByName("bgo0")
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.AddrAdd(bgo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}

	t.Run("guests reach the outside, masqueraded", func(t *testing.T) {
		serveTCP(t, out, "192.0.2.2:9000")
		from, err := dialFrom(g1, "192.0.2.2:9000", 2*time.Second)
		if err != nil {
			t.Fatalf("guest to outside: %v", err)
		}
		if from != "192.0.2.1" {
			t.Fatalf("outside saw the guest as %s; want the masqueraded 192.0.2.1", from)
		}
	})

	guestSrv := serveTCP(t, g1, "10.88.0.5:7000")

	t.Run("the outside cannot open connections to guests", func(t *testing.T) {
		ho := nsHandle(t, out)
		eth0, err := ho.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 88, 0, 0), Mask: net.CIDRMask(24, 32)}, Gw: net.IPv4(192, 0, 2, 1)}
		if err := ho.RouteAdd(route); err != nil {
			t.Fatal(err)
		}
		before := dropped(t, w.br, "forward", "banger: nothing else reaches guests")
		if _, err := dialFrom(out, "10.88.0.5:7000", blockedWait); err == nil {
			t.Fatal("the outside connected to a guest")
		}
		if after := dropped(t, w.br, "forward", "banger: nothing else reaches guests"); after <= before {
			t.Fatalf("forward drop counter %d -> %d; want it to count the SYNs", before, after)
		}
	})

	t.Run("guests do not reach each other", func(t *testing.T) {
		g2 := w.addGuest(t, "10.88.0.6/24")
		if got := summary(queryFrom(t, g2, dnsAddr, "web.vm.banger.", false)); got != "NOERROR aa web.vm.banger.=10.88.0.5" {
			t.Fatalf("second guest's DNS: %s (its network is broken, not isolated)", got)
		}
		if _, err := dialFrom(g2, "10.88.0.5:7000", blockedWait); err == nil {
			t.Fatal("a guest connected to another guest")
		}
		if n := guestSrv.accepted.Load(); n != 0 {
			t.Fatalf("guest listener accepted %d connections; want none", n)
		}

		// Each of the two mechanisms blocks on its own.
		const callIptables = "/proc/sys/net/bridge/bridge-nf-call-iptables"
		setSysctl := func(v string) {
			t.Helper()
			if err := w.br.Do(func() error { return os.WriteFile(callIptables, []byte(v), 0o644) }); err != nil {
				t.Fatalf("set %s=%s in %s: %v", callIptables, v, w.br.Name(), err)
			}
		}
		if host, err := os.ReadFile(callIptables); err == nil {
			defer func() {
				// The switch is per namespace; make sure the host's never moved.
				if now, _ := os.ReadFile(callIptables); string(now) != string(host) {
					t.Errorf("host %s changed from %q to %q", callIptables, host, now)
				}
			}()
			setSysctl("0") // bridged frames skip the inet hooks: isolation alone
			if _, err := dialFrom(g2, "10.88.0.5:7000", blockedWait); err == nil {
				t.Fatal("port isolation alone did not block guest to guest")
			}
			setSysctl("1") // bridged frames meet the forward chain: the rule alone
			for _, port := range []string{"bgv1", "bgv2"} {
				if err := w.links.AttachToBridge(port, "banger0", false); err != nil {
					t.Fatal(err)
				}
			}
			before := dropped(t, w.br, "forward", "banger: guests do not reach each other")
			if _, err := dialFrom(g2, "10.88.0.5:7000", blockedWait); err == nil {
				t.Fatal("the forward rule alone did not block guest to guest")
			}
			if after := dropped(t, w.br, "forward", "banger: guests do not reach each other"); after <= before {
				t.Fatalf("guest-to-guest drop counter %d -> %d", before, after)
			}
		} else {
			t.Logf("no br_netfilter here (%v): only port isolation is exercised", err)
		}
		if n := guestSrv.accepted.Load(); n != 0 {
			t.Fatalf("guest listener accepted %d connections; want none", n)
		}
	})
}

func TestGuestToGuestAllowed(t *testing.T) {
	requireNetNS(t)
	w := newVMWorld(t, Config{AllowGuestToGuest: true, Subnet: netip.MustParsePrefix("172.30.9.0/24"), Bridge: "bgbr9"}, nil)
	checkBridge := nsHandle(t, w.br)
	if _, err := checkBridge.LinkByName("bgbr9"); err != nil {
		t.Fatal(err)
	}
	g1 := w.addGuest(t, "172.30.9.5/24")
	g2 := w.addGuest(t, "172.30.9.6/24")
	serveTCP(t, g1, "172.30.9.5:7000")
	from, err := dialFrom(g2, "172.30.9.5:7000", 2*time.Second)
	if err != nil {
		t.Fatalf("guest to guest with AllowGuestToGuest: %v", err)
	}
	if from != "172.30.9.6" {
		t.Fatalf("guest saw the other as %s; want 172.30.9.6 (not NATed)", from)
	}
}
