package vmnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"banger/internal/errdefs"
)

// Network is banger's host networking for VMs, composed: the namespace,
// the bridge, the nftables table, IPv4 forwarding, the DNS server and the
// TAP pool.
//
// Setup makes the host state and starts the services; Close stops the
// services (DNS, the pool's refilling) and keeps the host state — the
// bridge, the TAPs and the rules — so VMs that outlive the daemon keep
// their network and stay filtered, and the next Setup adopts it all.
// Teardown removes the host state too (the namespace itself stays; see
// DeleteNetNS).
type Network struct {
	cfg Config
	log *slog.Logger
	dns *DNSServer

	// Seams, the real implementations unless a test replaces them.
	newLinks      func(*Namespace) (Links, error)
	newFirewall   func(*Namespace) Firewall
	enableForward func(*Namespace) error
	startDNS      func(*DNSServer, *Namespace) error

	// mu guards the fields below; never held across a host call other
	// than opening handles (which takes Namespace.mu: Network.mu comes
	// first).
	mu     sync.Mutex
	ns     *Namespace // guarded by mu; open between openHandles and closeHandles
	links  Links      // guarded by mu; as ns
	fw     Firewall   // guarded by mu; as ns
	pool   *TAPPool   // guarded by mu; made by Setup
	setUp  bool       // guarded by mu: Setup was called
	closed bool       // guarded by mu: Close or Teardown was called
}

// New validates cfg, fills its defaults and returns a Network that has
// touched nothing yet. When cfg.Upstreams is nil it reads the host's
// /etc/resolv.conf now. The DNS registry works from here on, before
// Setup.
func New(cfg Config, log *slog.Logger) (*Network, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Upstreams == nil {
		if cfg.Upstreams, err = ResolvConfUpstreams("/etc/resolv.conf"); err != nil {
			return nil, err
		}
		for _, u := range cfg.Upstreams {
			if cfg.NetNS != "" && u.Addr().IsLoopback() {
				log.Warn("the host's resolver is on loopback, which the VM network's namespace cannot reach: configure upstream resolvers",
					"upstream", u.String(), "netns", cfg.NetNS)
			}
		}
	}
	n := &Network{
		cfg:           cfg,
		log:           log,
		newLinks:      NewNetlinkLinks,
		newFirewall:   NewNftFirewall,
		enableForward: EnableIPForward,
		startDNS:      (*DNSServer).Start,
	}
	n.dns = NewDNSServer(DNSConfig{
		Domain:    cfg.Domain,
		Listen:    Gateway(cfg.Subnet),
		Subnet:    cfg.Subnet,
		Upstreams: cfg.Upstreams,
		Timeout:   cfg.DNSTimeout,
	}, log)
	return n, nil
}

// Config is the configuration in force, defaults filled in.
func (n *Network) Config() Config { return n.cfg }

// Gateway is the bridge's address: the guests' gateway and DNS server.
func (n *Network) Gateway() netip.Addr { return Gateway(n.cfg.Subnet) }

// DNS is the DNS server, whose registry says which VM has which name.
func (n *Network) DNS() *DNSServer { return n.dns }

// TAPs is the TAP pool, nil before Setup.
func (n *Network) TAPs() *TAPPool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pool
}

// Namespace is the VM network's namespace, nil before Setup. VMM
// processes are started inside it with its Do.
func (n *Network) Namespace() *Namespace {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ns
}

// GuestNet is what a guest needs to configure its NIC (passed on its
// kernel command line).
type GuestNet struct {
	Addr    netip.Prefix // the guest's address with the subnet's length
	Gateway netip.Addr
	DNS     netip.Addr
	Domain  string // search domain
	MTU     int    // 0: the default
	MAC     net.HardwareAddr
}

// GuestNet is the network configuration of the VM vmID holding ip.
func (n *Network) GuestNet(vmID string, ip netip.Addr) GuestNet {
	return GuestNet{
		Addr:    netip.PrefixFrom(ip, n.cfg.Subnet.Bits()),
		Gateway: n.Gateway(),
		DNS:     n.Gateway(),
		Domain:  n.cfg.Domain,
		MTU:     n.cfg.MTU,
		MAC:     MACFor(vmID),
	}
}

// NextFreeIP is NextFree in the configured subnet.
func (n *Network) NextFreeIP(taken []netip.Addr) (netip.Addr, error) {
	return NextFree(n.cfg.Subnet, taken)
}

// Setup makes (or adopts) the host state and starts the services: the
// namespace if missing (with lo up), the bridge with the gateway address,
// up; IPv4 forwarding in the namespace; the nftables table; the DNS
// server on the gateway address; the TAP pool, filled. Each step is
// idempotent. On error the services started are stopped again; host
// objects already made stay (Teardown removes them).
func (n *Network) Setup(ctx context.Context) (err error) {
	n.mu.Lock()
	if n.closed || n.setUp {
		n.mu.Unlock()
		return fmt.Errorf("network setup: %w: already set up or closed", errdefs.ErrFailedPrecondition)
	}
	n.setUp = true
	n.mu.Unlock()
	defer func() {
		if err != nil {
			n.Close()
			err = fmt.Errorf("network setup: %w", err)
		}
	}()
	if n.cfg.NetNS != "" {
		created, err := EnsureNetNS(n.cfg.NetNS)
		if err != nil {
			return err
		}
		if created {
			n.log.Info("created network namespace", "netns", n.cfg.NetNS)
		}
	}
	if err := n.openHandles(); err != nil {
		return err
	}
	n.mu.Lock()
	ns, links, fw := n.ns, n.links, n.fw
	n.mu.Unlock()

	gw := netip.PrefixFrom(n.Gateway(), n.cfg.Subnet.Bits())
	if err := links.EnsureBridge(n.cfg.Bridge, gw, n.cfg.MTU); err != nil {
		return err
	}
	if err := n.enableForward(ns); err != nil {
		return err
	}
	if err := fw.Apply(BuildRuleset(n.cfg)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := n.startDNS(n.dns, ns); err != nil {
		return err
	}
	pool := NewTAPPool(links, TAPPoolOptions{
		Bridge:   n.cfg.Bridge,
		Size:     n.cfg.TAPPoolSize,
		MTU:      n.cfg.MTU,
		Isolated: !n.cfg.AllowGuestToGuest,
		Owner:    n.cfg.TAPOwner,
	}, n.log)
	n.mu.Lock()
	n.pool = pool
	n.mu.Unlock()
	if err := pool.Start(); err != nil {
		return err
	}
	n.log.Info("vm network up", "netns", n.cfg.NetNS, "bridge", n.cfg.Bridge, "gateway", gw, "table", n.cfg.Table)
	return nil
}

// openHandles opens the namespace and the netlink and nftables handles
// in it, unless open.
func (n *Network) openHandles() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ns != nil {
		return nil
	}
	ns, err := OpenNetNS(n.cfg.NetNS)
	if err != nil {
		return err
	}
	links, err := n.newLinks(ns)
	if err != nil {
		ns.Close()
		return err
	}
	if o, ok := links.(OwnedTAPs); ok {
		o.SetTAPOwner(n.cfg.TAPOwner)
	} else if n.cfg.TAPOwner != (TAPOwner{}) {
		links.Close()
		ns.Close()
		return fmt.Errorf("TAPs for uid %d gid %d: these links cannot make TAPs for another owner than root: %w", n.cfg.TAPOwner.UID, n.cfg.TAPOwner.GID, errdefs.ErrFailedPrecondition)
	}
	n.ns, n.links, n.fw = ns, links, n.newFirewall(ns)
	return nil
}

func (n *Network) closeHandles() error {
	n.mu.Lock()
	ns, links := n.ns, n.links
	n.ns, n.links, n.fw = nil, nil, nil
	n.mu.Unlock()
	if ns == nil {
		return nil
	}
	return errors.Join(links.Close(), ns.Close())
}

// stopServices stops the pool's refilling and the DNS server.
func (n *Network) stopServices() error {
	n.mu.Lock()
	n.closed = true
	pool := n.pool
	n.mu.Unlock()
	if pool != nil {
		pool.Close()
	}
	return n.dns.Close()
}

// Close stops the DNS server and the pool's refilling and releases the
// handles. The bridge, the TAPs and the rules stay. The Network cannot
// be set up again.
func (n *Network) Close() error {
	return errors.Join(n.stopServices(), n.closeHandles())
}

// Teardown stops the services and removes the host state Setup made:
// every banger TAP (idle and VMs'), the nftables table and the bridge.
// Missing pieces are skipped; so is a missing namespace. It does not
// delete the namespace (DeleteNetNS does) nor turn forwarding off. Any
// VM still running loses its network: callers stop VMs first.
func (n *Network) Teardown(ctx context.Context) error {
	errs := []error{n.stopServices()}
	if n.cfg.NetNS != "" && !isNetNSMount(netnsPath(n.cfg.NetNS)) {
		return errors.Join(append(errs, n.closeHandles())...)
	}
	if err := n.openHandles(); err != nil {
		return fmt.Errorf("network teardown: %w", err)
	}
	n.mu.Lock()
	links, fw := n.links, n.fw
	n.mu.Unlock()
	taps, err := links.ListTAPs(TAPPrefix)
	errs = append(errs, err)
	for _, t := range taps {
		if err := links.Delete(t); err != nil && !errors.Is(err, ErrLinkNotFound) {
			errs = append(errs, err)
		}
	}
	if err := fw.Remove(n.cfg.Table); err != nil && !errors.Is(err, ErrTableNotFound) {
		errs = append(errs, err)
	}
	if err := links.Delete(n.cfg.Bridge); err != nil && !errors.Is(err, ErrLinkNotFound) {
		errs = append(errs, err)
	}
	errs = append(errs, ctx.Err(), n.closeHandles())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network teardown: %w", err)
	}
	n.log.Info("vm network removed", "netns", n.cfg.NetNS, "bridge", n.cfg.Bridge, "table", n.cfg.Table)
	return nil
}

// VMTAPs names the TAPs that belong to VMs (VMIDPrefix says whose), for
// the reconciler to compare with its records. It needs Setup.
func (n *Network) VMTAPs() ([]string, error) {
	n.mu.Lock()
	links := n.links
	n.mu.Unlock()
	if links == nil {
		return nil, fmt.Errorf("list vm taps: %w", ErrClosed)
	}
	all, err := links.ListTAPs(TAPPrefix)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range all {
		if _, ok := VMIDPrefix(t); ok {
			out = append(out, t)
		}
	}
	return out, nil
}
