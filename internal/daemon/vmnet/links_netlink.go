package vmnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkLinks is Links over rtnetlink, in one namespace: its handle's
// sockets were opened inside the namespace, so calls need no thread
// switching — except creating a TAP, which goes through /dev/net/tun and
// lands in the calling thread's namespace (so it runs under ns.Do).
type netlinkLinks struct {
	ns *Namespace
	h  *netlink.Handle

	mu    sync.Mutex
	owner TAPOwner // guarded by mu: of the TAPs CreateTAP makes
}

var (
	_ Links     = (*netlinkLinks)(nil)
	_ OwnedTAPs = (*netlinkLinks)(nil)
)

func (l *netlinkLinks) SetTAPOwner(o TAPOwner) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.owner = o
}

func (l *netlinkLinks) TAPOwner(name string) (TAPOwner, error) {
	link, err := l.byName(name)
	if err != nil {
		return TAPOwner{}, err
	}
	tap, ok := link.(*netlink.Tuntap)
	if !ok {
		return TAPOwner{}, fmt.Errorf("link %q is a %s, not a TAP", name, link.Type())
	}
	return TAPOwner{UID: tap.Owner, GID: tap.Group}, nil
}

// NewNetlinkLinks returns Links acting in ns. The caller keeps ns open
// while using them.
func NewNetlinkLinks(ns *Namespace) (Links, error) {
	h, err := ns.netlinkHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle in netns %q: %w", ns.Name(), err)
	}
	return &netlinkLinks{ns: ns, h: h}, nil
}

func (l *netlinkLinks) Close() error {
	l.h.Close()
	return nil
}

func (l *netlinkLinks) byName(name string) (netlink.Link, error) {
	link, err := l.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("link %q: %w", name, ErrLinkNotFound)
		}
		return nil, fmt.Errorf("link %q: %w", name, err)
	}
	return link, nil
}

func (l *netlinkLinks) EnsureBridge(name string, addr netip.Prefix, mtu int) error {
	link, err := l.byName(name)
	if errors.Is(err, ErrLinkNotFound) {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
		if err := l.h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %q: %w", name, err)
		}
		link, err = l.byName(name)
	}
	if err != nil {
		return err
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("bridge %q: an interface of that name exists and is a %s, not a bridge: rename it or configure another bridge name", name, link.Type())
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := l.h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("bridge %q: set mtu %d: %w", name, mtu, err)
		}
	}
	nladdr := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
	if err := l.h.AddrReplace(link, nladdr); err != nil {
		return fmt.Errorf("bridge %q: address %s: %w", name, addr, err)
	}
	if err := l.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bridge %q: up: %w", name, err)
	}
	return nil
}

func (l *netlinkLinks) CreateTAP(name string, mtu int) error {
	if _, err := l.byName(name); err == nil {
		return fmt.Errorf("create tap %q: %w", name, ErrLinkExists)
	} else if !errors.Is(err, ErrLinkNotFound) {
		return fmt.Errorf("create tap: %w", err)
	}
	l.mu.Lock()
	owner := l.owner
	l.mu.Unlock()
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		// The VMM sets its own flags when it attaches; TUN_EXCL makes a
		// name taken meanwhile an error instead of an attach.
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_TUN_EXCL,
		Owner: owner.UID, // 0: root
		Group: owner.GID,
	}
	err := l.ns.Do(func() error { return l.h.LinkAdd(tap) })
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) || (err != nil && strings.Contains(err.Error(), "device or resource busy")) {
		return fmt.Errorf("create tap %q: %w", name, ErrLinkExists)
	}
	if err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}
	if mtu > 0 {
		link, err := l.byName(name)
		if err == nil {
			err = l.h.LinkSetMTU(link, mtu)
		}
		if err != nil {
			return fmt.Errorf("tap %q: set mtu %d: %w", name, mtu, err)
		}
	}
	return nil
}

func (l *netlinkLinks) AttachToBridge(name, bridge string, isolated bool) error {
	link, err := l.byName(name)
	if err != nil {
		return err
	}
	br, err := l.byName(bridge)
	if err != nil {
		return err
	}
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := l.h.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("attach %q to bridge %q: %w", name, bridge, err)
		}
	}
	if err := l.h.LinkSetIsolated(link, isolated); err != nil {
		return fmt.Errorf("port %q: isolated=%v: %w", name, isolated, err)
	}
	return nil
}

func (l *netlinkLinks) Rename(name, newName string) error {
	link, err := l.byName(name)
	if err != nil {
		return err
	}
	if err := l.h.LinkSetName(link, newName); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("rename %q to %q: %w", name, newName, ErrLinkExists)
		}
		return fmt.Errorf("rename %q to %q: %w", name, newName, err)
	}
	return nil
}

func (l *netlinkLinks) SetUp(name string) error {
	link, err := l.byName(name)
	if err != nil {
		return err
	}
	if err := l.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("link %q up: %w", name, err)
	}
	return nil
}

func (l *netlinkLinks) Delete(name string) error {
	link, err := l.byName(name)
	if err != nil {
		return err
	}
	if err := l.h.LinkDel(link); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete link %q: %w", name, ErrLinkNotFound)
		}
		return fmt.Errorf("delete link %q: %w", name, err)
	}
	return nil
}

func (l *netlinkLinks) ListTAPs(prefix string) ([]string, error) {
	var links []netlink.Link
	var err error
	// A dump interrupted by a concurrent change is retried a few times.
	for range 5 {
		links, err = l.h.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var names []string
	for _, link := range links {
		if link.Type() == "tuntap" && strings.HasPrefix(link.Attrs().Name, prefix) {
			names = append(names, link.Attrs().Name)
		}
	}
	return names, nil
}
