package vmnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"

	"banger/internal/errdefs"
)

// fakeForwarder answers every forwarded query with A 192.0.2.7 (or err)
// and records what it was asked.
type fakeForwarder struct {
	mu    sync.Mutex
	asked []string // guarded by mu: "NAME TYPE udp|tcp"
	err   error
	extra int // more A records in each answer
}

func (f *fakeForwarder) exchange(_ context.Context, req *dns.Msg, tcp bool) (*dns.Msg, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	q := req.Question[0]
	f.asked = append(f.asked, q.Name+" "+dns.TypeToString[q.Qtype]+" "+proto)
	if f.err != nil {
		return nil, f.err
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	for i := range 1 + f.extra {
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A: net.IPv4(192, 0, 2, byte(7+i))})
	}
	return m, nil
}

func (f *fakeForwarder) close() {}

func (f *fakeForwarder) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func newTestDNS(t *testing.T, upstreams ...netip.AddrPort) (*DNSServer, *fakeForwarder) {
	t.Helper()
	s := NewDNSServer(DNSConfig{
		Domain:    "vm.banger",
		Listen:    netipAddr("10.88.0.1"),
		Subnet:    netipPrefix("10.88.0.0/24"),
		Upstreams: upstreams,
	}, nil)
	f := &fakeForwarder{}
	s.fwd = f
	t.Cleanup(func() { s.Close() })
	if err := s.Register("web", netipAddr("10.88.0.5")); err != nil {
		t.Fatal(err)
	}
	if err := s.Register("DB-1", netipAddr("10.88.0.6")); err != nil {
		t.Fatal(err)
	}
	return s, f
}

var upstream = netip.MustParseAddrPort("192.0.2.53:53")

// summary renders a reply as "RCODE [aa] ANSWER...".
func summary(m *dns.Msg) string {
	s := dns.RcodeToString[m.Rcode]
	if m.Authoritative {
		s += " aa"
	}
	if m.Truncated {
		s += " tc"
	}
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			s += " " + rr.Hdr.Name + "=" + rr.A.String()
		case *dns.PTR:
			s += " " + rr.Hdr.Name + "=" + rr.Ptr
		default:
			s += " " + rr.String()
		}
	}
	return s
}

func query(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	return m
}

func TestDNSAnswers(t *testing.T) {
	s, f := newTestDNS(t, upstream)
	tests := []struct {
		q         string
		qtype     uint16
		want      string
		forwarded bool
	}{
		{"web.vm.banger.", dns.TypeA, "NOERROR aa web.vm.banger.=10.88.0.5", false},
		{"WEB.Vm.Banger.", dns.TypeA, "NOERROR aa WEB.Vm.Banger.=10.88.0.5", false},
		{"db-1.vm.banger.", dns.TypeA, "NOERROR aa db-1.vm.banger.=10.88.0.6", false},
		{"web.", dns.TypeA, "NOERROR aa web.=10.88.0.5", false},
		{"web.vm.banger.", dns.TypeAAAA, "NOERROR aa", false},
		{"web.vm.banger.", dns.TypeMX, "NOERROR aa", false},
		{"nope.vm.banger.", dns.TypeA, "NXDOMAIN aa", false},
		{"nope.vm.banger.", dns.TypeAAAA, "NXDOMAIN aa", false},
		{"a.web.vm.banger.", dns.TypeA, "NXDOMAIN aa", false},
		{"vm.banger.", dns.TypeSOA, "NOERROR aa", false},
		{"5.0.88.10.in-addr.arpa.", dns.TypePTR, "NOERROR aa 5.0.88.10.in-addr.arpa.=web.vm.banger.", false},
		{"9.0.88.10.in-addr.arpa.", dns.TypePTR, "NXDOMAIN aa", false},
		{"other.example.", dns.TypeA, "NOERROR other.example.=192.0.2.7", true},
		{"printer.", dns.TypeA, "NOERROR printer.=192.0.2.7", true},
		{"web.vm.banger.example.", dns.TypeA, "NOERROR web.vm.banger.example.=192.0.2.7", true},
		{"1.2.0.192.in-addr.arpa.", dns.TypePTR, "NOERROR 1.2.0.192.in-addr.arpa.=192.0.2.7", true},
	}
	for _, tt := range tests {
		t.Run(tt.q+dns.TypeToString[tt.qtype], func(t *testing.T) {
			before := len(f.calls())
			req := query(tt.q, tt.qtype)
			got := s.answer(context.Background(), req, false)
			if diff := cmp.Diff(tt.want, summary(got)); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if got.Id != req.Id || !got.Response {
				t.Errorf("reply id %d response %v; want id %d, a response", got.Id, got.Response, req.Id)
			}
			if forwarded := len(f.calls()) > before; forwarded != tt.forwarded {
				t.Errorf("forwarded = %v; want %v", forwarded, tt.forwarded)
			}
		})
	}
}

func TestDNSRegistry(t *testing.T) {
	s, f := newTestDNS(t, upstream)
	s.Unregister("WEB")
	if got := summary(s.answer(context.Background(), query("web.vm.banger.", dns.TypeA), false)); got != "NXDOMAIN aa" {
		t.Fatalf("after Unregister: %s; want NXDOMAIN aa", got)
	}
	// An unregistered bare name is no longer ours: it is forwarded.
	s.answer(context.Background(), query("web.", dns.TypeA), true)
	if diff := cmp.Diff([]string{"web. A tcp"}, f.calls()); diff != "" {
		t.Fatalf("forwarded (-want +got):\n%s", diff)
	}
	if err := s.Register("web", netipAddr("10.88.0.9")); err != nil {
		t.Fatal(err)
	}
	if ip, ok := s.Lookup("Web"); !ok || ip != netipAddr("10.88.0.9") {
		t.Fatalf("Lookup = %v, %v", ip, ok)
	}
	for _, bad := range []struct {
		name string
		ip   netip.Addr
	}{
		{"under_score", netipAddr("10.88.0.7")},
		{"a.b", netipAddr("10.88.0.7")},
		{"", netipAddr("10.88.0.7")},
		{"-x", netipAddr("10.88.0.7")},
		{"v6", netipAddr("fd00::7")},
		{"zero", netip.Addr{}},
	} {
		if err := s.Register(bad.name, bad.ip); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Register(%q, %v) = %v; want invalid argument", bad.name, bad.ip, err)
		}
	}
}

func TestDNSForwardFailures(t *testing.T) {
	t.Run("upstream error is SERVFAIL", func(t *testing.T) {
		s, f := newTestDNS(t, upstream)
		f.err = errors.New("timeout")
		if got := summary(s.answer(context.Background(), query("other.example.", dns.TypeA), false)); got != "SERVFAIL" {
			t.Fatalf("answer = %s; want SERVFAIL", got)
		}
	})
	t.Run("no upstream is SERVFAIL without asking", func(t *testing.T) {
		s, f := newTestDNS(t)
		if got := summary(s.answer(context.Background(), query("other.example.", dns.TypeA), false)); got != "SERVFAIL" {
			t.Fatalf("answer = %s; want SERVFAIL", got)
		}
		if len(f.calls()) != 0 {
			t.Fatalf("forwarded %v", f.calls())
		}
	})
	t.Run("itself is never an upstream", func(t *testing.T) {
		s, _ := newTestDNS(t, netip.MustParseAddrPort("10.88.0.1:53"), netip.MustParseAddrPort("10.88.0.1:5353"),
			netip.MustParseAddrPort("0.0.0.0:53"), upstream)
		want := []netip.AddrPort{netip.MustParseAddrPort("10.88.0.1:5353"), upstream}
		if diff := cmp.Diff(want, s.Upstreams(), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
			t.Fatalf("upstreams (-want +got):\n%s", diff)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		s, _ := newTestDNS(t, upstream)
		notify := query("web.vm.banger.", dns.TypeSOA)
		notify.Opcode = dns.OpcodeNotify
		if got := summary(s.answer(context.Background(), notify, false)); got != "NOTIMP" {
			t.Errorf("notify: %s; want NOTIMP", got)
		}
		two := query("web.vm.banger.", dns.TypeA)
		two.Question = append(two.Question, two.Question[0])
		if got := summary(s.answer(context.Background(), two, false)); got != "FORMERR" {
			t.Errorf("two questions: %s; want FORMERR", got)
		}
	})
}

// fakeWriter is a dns.ResponseWriter that keeps the reply.
type fakeWriter struct {
	remote net.Addr
	got    *dns.Msg
}

func (w *fakeWriter) LocalAddr() net.Addr       { return &net.UDPAddr{IP: net.IPv4(10, 88, 0, 1), Port: 53} }
func (w *fakeWriter) RemoteAddr() net.Addr      { return w.remote }
func (w *fakeWriter) WriteMsg(m *dns.Msg) error { w.got = m; return nil }
func (w *fakeWriter) Write([]byte) (int, error) { return 0, errors.New("not used") }
func (w *fakeWriter) Close() error              { return nil }
func (w *fakeWriter) TsigStatus() error         { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)       {}
func (w *fakeWriter) Hijack()                   {}

func TestDNSServeTruncatesUDP(t *testing.T) {
	s, f := newTestDNS(t, upstream)
	f.extra = 60 // ~1 KB of answers
	udp := &fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(10, 88, 0, 5), Port: 40000}}
	s.serveDNS(udp, query("big.example.", dns.TypeA))
	if !udp.got.Truncated || udp.got.Len() > dns.MinMsgSize {
		t.Fatalf("udp reply: %d bytes, truncated=%v; want <= 512 and TC", udp.got.Len(), udp.got.Truncated)
	}
	edns := query("big.example.", dns.TypeA)
	edns.SetEdns0(4096, false)
	udp.got = nil
	s.serveDNS(udp, edns)
	if udp.got.Truncated || len(udp.got.Answer) != 61 {
		t.Fatalf("udp reply with EDNS0 4096: truncated=%v, %d answers; want all 61", udp.got.Truncated, len(udp.got.Answer))
	}
	tcp := &fakeWriter{remote: &net.TCPAddr{IP: net.IPv4(10, 88, 0, 5), Port: 40000}}
	s.serveDNS(tcp, query("big.example.", dns.TypeA))
	if tcp.got.Truncated || len(tcp.got.Answer) != 61 {
		t.Fatalf("tcp reply: truncated=%v, %d answers; want all 61", tcp.got.Truncated, len(tcp.got.Answer))
	}
	if c := f.calls(); c[len(c)-1] != "big.example. A tcp" {
		t.Fatalf("last forward %q; want over tcp", c[len(c)-1])
	}
}

func TestResolvConfUpstreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver  fe80::1%eth0\noptions ndots:2\nnameserver bogus\nnameserver 127.0.0.53 # stub\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ResolvConfUpstreams(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.53:53"),
		netip.MustParseAddrPort("[fe80::1]:53"),
		netip.MustParseAddrPort("127.0.0.53:53"),
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Fatalf("upstreams (-want +got):\n%s", diff)
	}
	if got, err := ResolvConfUpstreams(filepath.Join(t.TempDir(), "missing")); err != nil || got != nil {
		t.Fatalf("missing file: %v, %v; want none, nil", got, err)
	}
}
