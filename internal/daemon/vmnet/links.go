package vmnet

import "net/netip"

// Links is the link-level state banger keeps in one network namespace:
// its bridge and its guests' TAP devices. Every method is idempotent
// where it can be and safe for concurrent use. A name no interface has is
// ErrLinkNotFound; a name already taken where a new one is wanted is
// ErrLinkExists.
type Links interface {
	// EnsureBridge makes the bridge if missing, gives it addr (keeping
	// any other address it has), sets its MTU (when mtu > 0) and brings
	// it up. An existing interface of that name that is not a bridge is
	// an error.
	EnsureBridge(name string, addr netip.Prefix, mtu int) error
	// CreateTAP makes a persistent TAP device owned by root (or, see
	// OwnedTAPs, the owner set), down, with
	// the MTU (when mtu > 0). ErrLinkExists if the name is taken.
	CreateTAP(name string, mtu int) error
	// AttachToBridge makes name a port of bridge. An isolated port cannot
	// reach other isolated ports (the kernel's bridge port isolation),
	// only the bridge itself.
	AttachToBridge(name, bridge string, isolated bool) error
	// Rename renames a link, which must be down.
	Rename(name, newName string) error
	// SetUp brings a link up.
	SetUp(name string) error
	// Delete removes a link.
	Delete(name string) error
	// ListTAPs names the TAP devices whose name starts with prefix.
	ListTAPs(prefix string) ([]string, error)
	// Close releases the netlink sockets.
	Close() error
}

// TAPOwner is who may attach to a TAP (the kernel's TUNSETOWNER and
// TUNSETGROUP): a process with that uid or gid, or one with
// CAP_NET_ADMIN. The zero value is root.
type TAPOwner struct {
	UID, GID uint32
}

// OwnedTAPs is the optional capability of Links to make TAPs for another
// owner than root and to read a TAP's owner; the netlink Links have it.
type OwnedTAPs interface {
	// SetTAPOwner makes later CreateTAP calls make TAPs owned by o.
	SetTAPOwner(o TAPOwner)
	// TAPOwner returns the owner of the TAP called name.
	TAPOwner(name string) (TAPOwner, error)
}
