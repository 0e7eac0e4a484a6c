package vmnet

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables/expr"
)

const wantDefaultRuleset = `table inet banger {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.88.0.0/24 oifname != "banger0" masquerade comment "banger: guest egress nat"
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "banger0" oifname "banger0" counter drop comment "banger: guests do not reach each other"
		iifname "banger0" accept comment "banger: guest egress"
		oifname "banger0" ct state established,related accept comment "banger: replies to guests"
		oifname "banger0" counter drop comment "banger: nothing else reaches guests"
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iifname "banger0" ct state established,related accept comment "banger: replies to the host"
		iifname "banger0" ip daddr 10.88.0.1 udp dport 53 accept comment "banger: guest dns"
		iifname "banger0" ip daddr 10.88.0.1 tcp dport 53 accept comment "banger: guest dns"
		iifname "banger0" counter drop comment "banger: guests reach no other host port"
	}
}
`

func TestBuildRuleset(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantDefaultRuleset, BuildRuleset(cfg).String()); diff != "" {
		t.Fatalf("default ruleset (-want +got):\n%s", diff)
	}

	cfg.AllowGuestToGuest = true
	want := strings.Replace(wantDefaultRuleset,
		`iifname "banger0" oifname "banger0" counter drop comment "banger: guests do not reach each other"`,
		`iifname "banger0" oifname "banger0" accept comment "banger: guests reach each other (allow_guest_to_guest)"`, 1)
	if diff := cmp.Diff(want, BuildRuleset(cfg).String()); diff != "" {
		t.Fatalf("allow_guest_to_guest ruleset (-want +got):\n%s", diff)
	}
}

func TestBuildRulesetFollowsConfig(t *testing.T) {
	cfg, err := Config{Bridge: "br-dev", Subnet: netipPrefix("172.30.4.0/22"), Table: "banger_dev"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	got := BuildRuleset(cfg).String()
	for _, want := range []string{
		"table inet banger_dev {",
		`ip saddr 172.30.4.0/22 oifname != "br-dev" masquerade`,
		`iifname "br-dev" ip daddr 172.30.4.1 udp dport 53 accept`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "banger0") {
		t.Errorf("ruleset names the default bridge:\n%s", got)
	}
}

// Every rule compiles; the compiled form matches what the rule says.
func TestRuleExprs(t *testing.T) {
	cfg, _ := Config{}.withDefaults()
	for _, ch := range BuildRuleset(cfg).Chains {
		for _, r := range ch.Rules {
			e, err := ruleExprs(r)
			if err != nil {
				t.Fatalf("rule %q: %v", r, err)
			}
			last := e[len(e)-1]
			switch v := last.(type) {
			case *expr.Verdict:
				if (r.Verdict == Accept) != (v.Kind == expr.VerdictAccept) || (r.Verdict == Drop) != (v.Kind == expr.VerdictDrop) {
					t.Errorf("rule %q ends in verdict %v", r, v.Kind)
				}
			case *expr.Masq:
				if r.Verdict != Masquerade {
					t.Errorf("rule %q ends in masquerade", r)
				}
			default:
				t.Errorf("rule %q ends in %T", r, last)
			}
			var counters int
			for _, x := range e {
				if _, ok := x.(*expr.Counter); ok {
					counters++
				}
				if c, ok := x.(*expr.Cmp); ok && len(c.Data) == 16 && !bytes.HasPrefix(c.Data, []byte("banger0\x00")) {
					t.Errorf("rule %q compares an interface name %q", r, c.Data)
				}
			}
			if (counters == 1) != r.Counter {
				t.Errorf("rule %q has %d counters", r, counters)
			}
		}
	}
	if _, err := ruleExprs(Rule{Proto: "sctp", DPort: 1}); err == nil {
		t.Error("sctp compiled; want an error")
	}
	if _, err := ruleExprs(Rule{DstAddr: netipAddr("fd00::1")}); err == nil {
		t.Error("IPv6 destination compiled; want an error")
	}
	if got := maskBytes(22); !bytes.Equal(got, []byte{0xff, 0xff, 0xfc, 0}) {
		t.Errorf("maskBytes(22) = %x", got)
	}
}
