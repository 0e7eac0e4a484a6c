package vmnet

import (
	"net/netip"
	"testing"
	"time"

	"banger/internal/errdefs"
)

func TestConfigDefaults(t *testing.T) {
	got, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Bridge: "banger0", Subnet: netip.MustParsePrefix("10.88.0.0/24"), Domain: "vm.banger",
		TAPPoolSize: 4, DNSTimeout: 2 * time.Second, Table: "banger"}
	if got.Bridge != want.Bridge || got.Subnet != want.Subnet || got.Domain != want.Domain ||
		got.TAPPoolSize != want.TAPPoolSize || got.DNSTimeout != want.DNSTimeout || got.Table != want.Table ||
		got.NetNS != "" || got.MTU != 0 || got.AllowGuestToGuest {
		t.Fatalf("defaults = %+v; want %+v", got, want)
	}
	got, err = Config{TAPPoolSize: -1, Domain: "Dev.Example.", Subnet: netip.MustParsePrefix("10.9.8.7/16")}.withDefaults()
	if err != nil || got.TAPPoolSize != 0 || got.Domain != "dev.example" || got.Subnet.String() != "10.9.0.0/16" {
		t.Fatalf("withDefaults = %+v, %v; want pool 0, domain dev.example, subnet 10.9.0.0/16", got, err)
	}
}

func TestConfigInvalid(t *testing.T) {
	for name, c := range map[string]Config{
		"long bridge":       {Bridge: "a-very-long-bridge"},
		"bridge with slash": {Bridge: "br/0"},
		"bridge like a tap": {Bridge: "bgt0"},
		"ipv6 subnet":       {Subnet: netip.MustParsePrefix("fd00::/64")},
		"tiny subnet":       {Subnet: netip.MustParsePrefix("10.0.0.0/31")},
		"bad domain":        {Domain: "under_score.vm"},
		"empty label":       {Domain: "vm..banger"},
		"netns with slash":  {NetNS: "a/b"},
		"netns dotdot":      {NetNS: ".."},
		"small mtu":         {MTU: 100},
		"bad table":         {Table: "banger-1"},
		"upstream no port":  {Upstreams: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 0)}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := c.withDefaults(); !errdefs.IsInvalidArgument(err) {
				t.Fatalf("withDefaults(%+v) = %v; want invalid argument", c, err)
			}
		})
	}
}
