package vmnet

import (
	"errors"
	"net/netip"
	"testing"

	"banger/internal/errdefs"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestNextFree(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		subnet  netip.Prefix
		taken   []netip.Addr
		want    string
		wantErr error
	}{
		{"empty subnet gives the first after the gateway", p("10.88.0.0/24"), nil, "10.88.0.2", nil},
		{"skips taken", p("10.88.0.0/24"), addrs("10.88.0.2", "10.88.0.3"), "10.88.0.4", nil},
		{"fills a gap first", p("10.88.0.0/24"), addrs("10.88.0.2", "10.88.0.4"), "10.88.0.3", nil},
		{"taken gateway changes nothing", p("10.88.0.0/24"), addrs("10.88.0.1"), "10.88.0.2", nil},
		{"addresses outside the subnet are ignored", p("10.88.0.0/24"), addrs("10.89.0.2", "192.0.2.1"), "10.88.0.2", nil},
		{"4in6 taken address counts", p("10.88.0.0/24"), addrs("::ffff:10.88.0.2"), "10.88.0.3", nil},
		{"unmasked prefix is masked", p("10.88.0.77/24"), nil, "10.88.0.2", nil},
		{"crosses an octet", p("10.88.0.0/23"), rangeAddrs("10.88.0.2", 254), "10.88.1.0", nil},
		{"last before broadcast", p("10.88.0.0/24"), rangeAddrs("10.88.0.2", 252), "10.88.0.254", nil},
		{"full /24", p("10.88.0.0/24"), rangeAddrs("10.88.0.2", 253), "", ErrExhausted},
		{"/30 has one guest", p("192.168.7.4/30"), nil, "192.168.7.6", nil},
		{"/30 full", p("192.168.7.4/30"), addrs("192.168.7.6"), "", ErrExhausted},
		{"/31 refused", p("10.0.0.0/31"), nil, "", errdefs.ErrInvalidArgument},
		{"IPv6 refused", p("fd00::/64"), nil, "", errdefs.ErrInvalidArgument},
		{"invalid refused", netip.Prefix{}, nil, "", errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NextFree(tt.subnet, tt.taken)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("NextFree = %v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("NextFree = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestNextFreeExhaustedIsUnavailable(t *testing.T) {
	_, err := NextFree(netip.MustParsePrefix("10.0.0.0/30"), addrs("10.0.0.2"))
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("err = %v; want one errdefs.IsUnavailable recognises", err)
	}
}

// rangeAddrs is n consecutive addresses from first.
func rangeAddrs(first string, n int) []netip.Addr {
	a := netip.MustParseAddr(first)
	var out []netip.Addr
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

func TestGatewayAndBroadcast(t *testing.T) {
	for _, tt := range []struct{ subnet, gw, bcast string }{
		{"10.88.0.0/24", "10.88.0.1", "10.88.0.255"},
		{"10.88.0.130/25", "10.88.0.129", "10.88.0.255"},
		{"172.16.0.0/12", "172.16.0.1", "172.31.255.255"},
		{"192.168.7.4/30", "192.168.7.5", "192.168.7.7"},
	} {
		p := netip.MustParsePrefix(tt.subnet)
		if got := Gateway(p).String(); got != tt.gw {
			t.Errorf("Gateway(%s) = %s; want %s", tt.subnet, got, tt.gw)
		}
		if got := broadcast(p).String(); got != tt.bcast {
			t.Errorf("broadcast(%s) = %s; want %s", tt.subnet, got, tt.bcast)
		}
	}
}

func TestMACFor(t *testing.T) {
	a, b := MACFor("3fa85f6457c14a2b"), MACFor("3fa85f6457c14a2c")
	if a.String() != MACFor("3fa85f6457c14a2b").String() {
		t.Fatal("MACFor is not deterministic")
	}
	if a.String() == b.String() {
		t.Fatalf("two VMs share MAC %s", a)
	}
	for _, m := range []string{a.String(), b.String(), MACFor("").String(), MACFor("not-hex").String()} {
		if len(m) != 17 || m[:3] != "02:" {
			t.Errorf("MAC %s: want 02:xx:xx:xx:xx:xx (locally administered, unicast)", m)
		}
	}
}

func TestTAPNames(t *testing.T) {
	tests := []struct {
		vmID, want string
		ok         bool
	}{
		{"3fa85f6457c14a2b", "bgt3fa85f6457c1", true},
		{"3fa85f64", "bgt3fa85f64", true},
		{"3fa85f6", "", false},          // too short
		{"3FA85F6457C14A2B", "", false}, // not lowercase
		{"vm-with-a-name", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := TAPName(tt.vmID)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("TAPName(%q) = %q, %v; want %q (ok=%v)", tt.vmID, got, err, tt.want, tt.ok)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("TAPName(%q) error %v is not an invalid argument", tt.vmID, err)
		}
		if len(got) > maxLinkName {
			t.Errorf("TAPName(%q) = %q: longer than IFNAMSIZ-1", tt.vmID, got)
		}
		if tt.ok {
			prefix, ok := VMIDPrefix(got)
			if !ok || len(tt.vmID) < len(prefix) || tt.vmID[:len(prefix)] != prefix {
				t.Errorf("VMIDPrefix(%q) = %q, %v; want a prefix of %q", got, prefix, ok, tt.vmID)
			}
		}
	}
	for _, name := range []string{randomPoolName(), "bgtp1f0c9a3e", "banger0", "bgt", "bgtxyz12345", "eth0"} {
		if p, ok := VMIDPrefix(name); ok {
			t.Errorf("VMIDPrefix(%q) = %q, true; want false (not a VM's tap)", name, p)
		}
	}
	if n := randomPoolName(); len(n) != 12 || n[:4] != PoolTAPPrefix {
		t.Errorf("pool name %q: want bgtp + 8 hex", n)
	}
}
