package vmnet

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"banger/internal/errdefs"
)

// Defaults of Config's fields.
const (
	DefaultBridge      = "banger0"
	DefaultDomain      = "vm.banger"
	DefaultTable       = "banger"
	DefaultTAPPoolSize = 4
)

// DefaultSubnet is the guests' subnet when none is configured; the bridge
// takes its first address (10.88.0.1).
var DefaultSubnet = netip.MustParsePrefix("10.88.0.0/24")

// Config says where and how banger's VM network lives. The zero value is
// valid: every empty field takes its default.
type Config struct {
	// Bridge is the bridge's name (default "banger0").
	Bridge string
	// Subnet is the guests' IPv4 subnet (default 10.88.0.0/24). The bridge
	// takes the first address; guests get the others but the broadcast.
	Subnet netip.Prefix
	// Domain is the DNS zone whose names are the VMs' (default "vm.banger").
	Domain string
	// NetNS names the network namespace (/run/netns/NAME) that holds the
	// bridge, the TAPs, the rules, the DNS server and the VMM processes;
	// Setup creates it if missing. "" means the daemon's own namespace.
	NetNS string
	// TAPPoolSize is how many idle TAPs are kept ready (default 4; negative
	// keeps none, and each VM's TAP is then made when it is acquired).
	TAPPoolSize int
	// AllowGuestToGuest lets guests reach one another; by default they
	// reach only the outside and the DNS server.
	AllowGuestToGuest bool
	// MTU of the bridge and the TAPs; 0 keeps the kernel's default (1500).
	MTU int
	// Upstreams are the resolvers the DNS server forwards other names to.
	// Nil means the nameservers of the host's /etc/resolv.conf, read by
	// Setup. They must be reachable from inside NetNS.
	Upstreams []netip.AddrPort
	// DNSTimeout bounds one forwarded exchange with one upstream (default 2s).
	DNSTimeout time.Duration
	// TAPOwner is the user and group the TAPs are made for, who may attach
	// to them without CAP_NET_ADMIN (a jailed Firecracker's); the zero
	// value is root's.
	TAPOwner TAPOwner
	// Table is the nftables table (family inet) holding banger's rules
	// (default "banger"); two daemons sharing a namespace need two names.
	Table string
}

// withDefaults returns c with every empty field defaulted, or an error
// wrapping errdefs.ErrInvalidArgument naming the first bad field.
func (c Config) withDefaults() (Config, error) {
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	c.Subnet = c.Subnet.Masked()
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	c.Domain = strings.ToLower(strings.TrimSuffix(c.Domain, "."))
	if c.TAPPoolSize == 0 {
		c.TAPPoolSize = DefaultTAPPoolSize
	}
	if c.TAPPoolSize < 0 {
		c.TAPPoolSize = 0
	}
	if c.DNSTimeout <= 0 {
		c.DNSTimeout = 2 * time.Second
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("network config: %s %v: %w: %s", field, v, errdefs.ErrInvalidArgument, why)
	}
	if err := validLinkName(c.Bridge); err != nil {
		return c, bad("bridge", fmt.Sprintf("%q", c.Bridge), err.Error())
	}
	if strings.HasPrefix(c.Bridge, TAPPrefix) {
		return c, bad("bridge", fmt.Sprintf("%q", c.Bridge), "the prefix "+TAPPrefix+" is reserved for banger's TAPs")
	}
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 30 || c.Subnet.Bits() < 8 {
		return c, bad("subnet", c.Subnet, "want an IPv4 prefix between /8 and /30")
	}
	if !validDomain(c.Domain) {
		return c, bad("domain", fmt.Sprintf("%q", c.Domain), "want DNS labels of letters, digits and '-' joined by dots")
	}
	if c.NetNS != "" {
		if err := validNetNSName(c.NetNS); err != nil {
			return c, bad("netns", fmt.Sprintf("%q", c.NetNS), err.Error())
		}
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return c, bad("mtu", c.MTU, "want 0 (kernel default) or 576..65535")
	}
	if !validTableName(c.Table) {
		return c, bad("table", fmt.Sprintf("%q", c.Table), "want letters, digits and '_', at most 32 characters")
	}
	for _, u := range c.Upstreams {
		if !u.IsValid() || u.Port() == 0 {
			return c, bad("upstream", u, "want ADDRESS:PORT")
		}
	}
	return c, nil
}

// validLinkName accepts what the kernel accepts as an interface name and
// nothing a shell or a path would trip on.
func validLinkName(name string) error {
	if name == "" || len(name) > maxLinkName {
		return fmt.Errorf("want 1 to %d characters", maxLinkName)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("want letters, digits, '-', '_' or '.'")
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("not a name")
	}
	return nil
}

// maxLinkName is IFNAMSIZ less the terminating NUL.
const maxLinkName = 15

func validDomain(d string) bool {
	if d == "" || len(d) > 200 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if !validLabel(l) {
			return false
		}
	}
	return true
}

// validLabel: a lowercase DNS label (RFC 1123 host name rules).
func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, r := range l {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func validTableName(t string) bool {
	if t == "" || len(t) > 32 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
