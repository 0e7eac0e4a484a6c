package vmnet

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"banger/internal/errdefs"
)

// DNSConfig configures a DNSServer.
type DNSConfig struct {
	// Domain is the zone of VM names ("vm.banger"): NAME.Domain is the VM
	// NAME, answered from the registry; the server is authoritative for
	// it and never forwards a name inside it.
	Domain string
	// Listen is the address it serves on, port 53, udp and tcp: the
	// bridge's address.
	Listen netip.Addr
	// Subnet is the guests' subnet: reverse (PTR) queries for its
	// addresses are answered from the registry, never forwarded.
	Subnet netip.Prefix
	// Upstreams receive every other query, tried in order. Listen:53 is
	// dropped from the list (the server never forwards to itself). None
	// left means such queries get SERVFAIL.
	Upstreams []netip.AddrPort
	// Timeout bounds one exchange with one upstream (default 2s).
	Timeout time.Duration
	// Workers is how many forwarded queries may be in flight at once
	// (default 8); more wait in a bounded queue, then get SERVFAIL.
	Workers int
	// TTL of the A and PTR records it answers (default 5s: VMs come and go).
	TTL uint32
}

// DNSServer answers guests' DNS queries on the bridge address: VMs by
// name from an in-memory registry, everything else by forwarding to
// upstream resolvers from inside the VM network's namespace.
type DNSServer struct {
	cfg DNSConfig
	log *slog.Logger

	ctx     context.Context // ends at Close: in-flight forwards give up
	cancel  context.CancelFunc
	serving sync.WaitGroup // the servers' serve goroutines

	// mu is a leaf lock guarding the registry; held for a map access only.
	mu    sync.Mutex
	names map[string]netip.Addr // guarded by mu: lowercase label → IPv4

	// life is a leaf lock guarding the serving state; never held across
	// Shutdown or a wait.
	life    sync.Mutex
	fwd     forwarder     // guarded by life; set by Start
	servers []*dns.Server // guarded by life; set by Start
	closed  bool          // guarded by life
}

// NewDNSServer returns a server with an empty registry; Start serves.
func NewDNSServer(cfg DNSConfig, log *slog.Logger) *DNSServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Domain = strings.ToLower(strings.TrimSuffix(cfg.Domain, "."))
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.TTL == 0 {
		cfg.TTL = 5
	}
	self := netip.AddrPortFrom(cfg.Listen, 53)
	var ups []netip.AddrPort
	for _, u := range cfg.Upstreams {
		if u = netip.AddrPortFrom(u.Addr().Unmap(), u.Port()); u != self && !u.Addr().IsUnspecified() {
			ups = append(ups, u)
		}
	}
	cfg.Upstreams = ups
	ctx, cancel := context.WithCancel(context.Background())
	return &DNSServer{cfg: cfg, log: log, names: map[string]netip.Addr{}, ctx: ctx, cancel: cancel}
}

// Upstreams are the resolvers it forwards to (itself excluded).
func (s *DNSServer) Upstreams() []netip.AddrPort {
	return append([]netip.AddrPort(nil), s.cfg.Upstreams...)
}

// Register makes NAME.<domain> (and the bare NAME) answer ip, replacing
// any earlier address. name is a DNS label (letters, digits, '-'; case
// does not matter); ip is IPv4.
func (s *DNSServer) Register(name string, ip netip.Addr) error {
	label := strings.ToLower(name)
	if !validLabel(label) {
		return fmt.Errorf("dns register %q: %w: a VM's DNS name is letters, digits and '-', at most 63", name, errdefs.ErrInvalidArgument)
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return fmt.Errorf("dns register %q: %w: address %v is not IPv4", name, errdefs.ErrInvalidArgument, ip)
	}
	s.mu.Lock()
	s.names[label] = ip
	s.mu.Unlock()
	return nil
}

// Unregister forgets name; an unknown name is not an error.
func (s *DNSServer) Unregister(name string) {
	s.mu.Lock()
	delete(s.names, strings.ToLower(name))
	s.mu.Unlock()
}

// Lookup returns the address registered for name.
func (s *DNSServer) Lookup(name string) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ip, ok := s.names[strings.ToLower(name)]
	return ip, ok
}

// nameOf returns the label registered for ip.
func (s *DNSServer) nameOf(ip netip.Addr) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, a := range s.names {
		if a == ip {
			return name, true
		}
	}
	return "", false
}

// Start listens on Listen:53 (udp and tcp) inside ns, starts the
// forwarding workers inside ns, and serves until Close.
func (s *DNSServer) Start(ns *Namespace) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed || s.servers != nil {
		return fmt.Errorf("start dns server: %w: already started or closed", errdefs.ErrFailedPrecondition)
	}
	addr := netip.AddrPortFrom(s.cfg.Listen, 53).String()
	var pc net.PacketConn
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			pc.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("start dns server on %s in netns %q: %w", addr, ns.Name(), err)
	}
	fwd, err := newNSForwarder(ns, s.cfg.Upstreams, s.cfg.Timeout, s.cfg.Workers)
	if err != nil {
		pc.Close()
		ln.Close()
		return fmt.Errorf("start dns server: %w", err)
	}
	s.fwd = fwd
	handler := dns.HandlerFunc(s.serveDNS)
	s.servers = []*dns.Server{
		{PacketConn: pc, Handler: handler, ReadTimeout: time.Second},
		{Listener: ln, Handler: handler, ReadTimeout: 5 * time.Second},
	}
	for _, srv := range s.servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Error("dns server stopped", "addr", addr, "err", err)
			}
		}()
		// Shutdown before the server has started would leave it serving.
		<-started
	}
	if len(s.cfg.Upstreams) == 0 {
		s.log.Warn("dns: no upstream resolvers; names outside the VM domain will fail", "domain", s.cfg.Domain)
	}
	s.log.Info("dns server started", "addr", addr, "netns", ns.Name(), "domain", s.cfg.Domain, "upstreams", fmt.Sprint(s.cfg.Upstreams))
	return nil
}

// Close stops serving, ends in-flight forwards and waits for the serving
// and forwarding goroutines. The registry stays.
func (s *DNSServer) Close() error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	servers, fwd := s.servers, s.fwd
	s.life.Unlock()

	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var firstErr error
	for _, srv := range servers {
		if err := srv.ShutdownContext(ctx); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("stop dns server: %w", err)
		}
	}
	s.serving.Wait()
	if fwd != nil {
		fwd.close()
	}
	return firstErr
}

func (s *DNSServer) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	tcp := w.RemoteAddr() != nil && strings.HasPrefix(w.RemoteAddr().Network(), "tcp")
	resp := s.answer(s.ctx, req, tcp)
	if !tcp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		resp.Truncate(size)
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns: write reply", "client", w.RemoteAddr(), "err", err)
	}
}

// answer is the reply to req: from the registry for names in the domain,
// for bare registered names and for reverse names in the subnet; from an
// upstream for the rest.
func (s *DNSServer) answer(ctx context.Context, req *dns.Msg, tcp bool) *dns.Msg {
	resp := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery {
		return resp.SetRcode(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return resp.SetRcodeFormatError(req)
	}
	if r, ok := s.local(req); ok {
		return r
	}
	return s.forward(ctx, req, tcp)
}

func (s *DNSServer) local(req *dns.Msg) (*dns.Msg, bool) {
	q := req.Question[0]
	name := strings.ToLower(dns.Fqdn(q.Name))
	zone := s.cfg.Domain + "."
	reply := func(rcode int, rrs ...dns.RR) (*dns.Msg, bool) {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		m.Authoritative = true
		m.RecursionAvailable = true
		m.Answer = rrs
		return m, true
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: s.cfg.TTL}
	}
	byName := func(label string, mustExist bool) (*dns.Msg, bool) {
		ip, ok := s.Lookup(label)
		if !ok {
			if !mustExist {
				return nil, false
			}
			return reply(dns.RcodeNameError)
		}
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			return reply(dns.RcodeSuccess, &dns.A{Hdr: hdr(dns.TypeA), A: ip.AsSlice()})
		}
		return reply(dns.RcodeSuccess) // the name exists, with no record of that type
	}
	switch {
	case name == zone:
		return reply(dns.RcodeSuccess)
	case strings.HasSuffix(name, "."+zone):
		label := strings.TrimSuffix(name, "."+zone)
		if strings.Contains(label, ".") {
			return reply(dns.RcodeNameError)
		}
		return byName(label, true)
	case dns.CountLabel(name) == 1:
		return byName(strings.TrimSuffix(name, "."), false)
	}
	if ip, ok := reverseAddr(name); ok && s.cfg.Subnet.IsValid() && s.cfg.Subnet.Contains(ip) {
		label, ok := s.nameOf(ip)
		if !ok {
			return reply(dns.RcodeNameError)
		}
		if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
			return reply(dns.RcodeSuccess, &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: label + "." + zone})
		}
		return reply(dns.RcodeSuccess)
	}
	return nil, false
}

// reverseAddr parses "D.C.B.A.in-addr.arpa." into A.B.C.D.
func reverseAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	p := strings.Split(rest, ".")
	if len(p) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(p[3] + "." + p[2] + "." + p[1] + "." + p[0])
	return a, err == nil
}

func (s *DNSServer) forward(ctx context.Context, req *dns.Msg, tcp bool) *dns.Msg {
	s.life.Lock()
	fwd := s.fwd
	s.life.Unlock()
	fail := func(err error) *dns.Msg {
		s.log.Debug("dns: forward failed", "name", req.Question[0].Name, "err", err)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		m.RecursionAvailable = true
		return m
	}
	if fwd == nil || len(s.cfg.Upstreams) == 0 {
		return fail(fmt.Errorf("no upstream resolver"))
	}
	budget := s.cfg.Timeout*time.Duration(len(s.cfg.Upstreams)) + 500*time.Millisecond
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	resp, err := fwd.exchange(ctx, req.Copy(), tcp)
	if err != nil {
		return fail(err)
	}
	resp.Id = req.Id
	return resp
}
