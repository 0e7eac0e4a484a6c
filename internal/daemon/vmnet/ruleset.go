package vmnet

import (
	"fmt"
	"net/netip"
	"strings"
)

// Ruleset is banger's whole nftables table, as data: BuildRuleset decides
// it from the Config (pure, tested without root), a Firewall installs it.
// String renders it in `nft list table` syntax, which is also what a fake
// Firewall records.
type Ruleset struct {
	Table  string // family inet
	Chains []Chain
}

// Chain is a base chain of the table.
type Chain struct {
	Name     string
	Type     string // "filter" or "nat"
	Hook     string // "input", "forward" or "postrouting"
	Priority int    // 0 (filter) or 100 (srcnat)
	Rules    []Rule
}

// Verdict ends a rule.
type Verdict int

const (
	Accept Verdict = iota
	Drop
	Masquerade
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Masquerade:
		return "masquerade"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Rule matches on every field that is set (all must hold) and then
// applies Verdict. Every rule carries a comment starting "banger: ".
type Rule struct {
	IIF           string       // iifname ==
	OIF           string       // oifname ==
	NotOIF        string       // oifname !=
	SrcNet        netip.Prefix // ip saddr in
	DstAddr       netip.Addr   // ip daddr ==
	Proto         string       // "tcp" or "udp", with DPort
	DPort         uint16
	CtEstablished bool // ct state established,related
	Counter       bool
	Verdict       Verdict
	Comment       string
}

// BuildRuleset is the table for a (defaulted) Config:
//
//   - postrouting: guests' traffic leaving by any interface but the bridge
//     is masqueraded (NAT egress);
//   - forward: guest to guest (in and out the bridge) is dropped unless
//     AllowGuestToGuest; guest to elsewhere is accepted; into the bridge
//     only replies (established, related) are accepted, the rest dropped;
//   - input: from the bridge the host accepts replies to its own
//     connections and DNS (udp and tcp 53) to the bridge address, and
//     drops everything else, so guests reach no other host port.
//
// Chains have policy accept and touch only packets of the bridge: the
// host's other traffic is left to its own rules. Routed guest-to-guest
// packets, and bridged ones when br_netfilter is loaded, meet the forward
// rule; purely bridged ones are stopped by bridge port isolation (see
// TAPPoolOptions.Isolated), which the kernel applies without nftables.
func BuildRuleset(cfg Config) Ruleset {
	br, gw := cfg.Bridge, Gateway(cfg.Subnet)
	g2g := Rule{IIF: br, OIF: br, Counter: true, Verdict: Drop, Comment: "banger: guests do not reach each other"}
	if cfg.AllowGuestToGuest {
		g2g = Rule{IIF: br, OIF: br, Verdict: Accept, Comment: "banger: guests reach each other (allow_guest_to_guest)"}
	}
	return Ruleset{
		Table: cfg.Table,
		Chains: []Chain{
			{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100, Rules: []Rule{
				{SrcNet: cfg.Subnet, NotOIF: br, Verdict: Masquerade, Comment: "banger: guest egress nat"},
			}},
			{Name: "forward", Type: "filter", Hook: "forward", Priority: 0, Rules: []Rule{
				g2g,
				{IIF: br, Verdict: Accept, Comment: "banger: guest egress"},
				{OIF: br, CtEstablished: true, Verdict: Accept, Comment: "banger: replies to guests"},
				{OIF: br, Counter: true, Verdict: Drop, Comment: "banger: nothing else reaches guests"},
			}},
			{Name: "input", Type: "filter", Hook: "input", Priority: 0, Rules: []Rule{
				{IIF: br, CtEstablished: true, Verdict: Accept, Comment: "banger: replies to the host"},
				{IIF: br, DstAddr: gw, Proto: "udp", DPort: 53, Verdict: Accept, Comment: "banger: guest dns"},
				{IIF: br, DstAddr: gw, Proto: "tcp", DPort: 53, Verdict: Accept, Comment: "banger: guest dns"},
				{IIF: br, Counter: true, Verdict: Drop, Comment: "banger: guests reach no other host port"},
			}},
		},
	}
}

// String renders the ruleset as `nft list table inet NAME` does.
func (r Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", r.Table)
	for i, c := range r.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		prio := fmt.Sprint(c.Priority)
		switch {
		case c.Type == "filter" && c.Priority == 0:
			prio = "filter"
		case c.Type == "nat" && c.Priority == 100:
			prio = "srcnat"
		}
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype %s hook %s priority %s; policy accept;\n", c.Name, c.Type, c.Hook, prio)
		for _, rule := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", rule)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// String renders the rule as nft lists it.
func (r Rule) String() string {
	var parts []string
	if r.IIF != "" {
		parts = append(parts, fmt.Sprintf("iifname %q", r.IIF))
	}
	if r.OIF != "" {
		parts = append(parts, fmt.Sprintf("oifname %q", r.OIF))
	}
	if r.SrcNet.IsValid() {
		parts = append(parts, "ip saddr "+r.SrcNet.String())
	}
	if r.NotOIF != "" {
		parts = append(parts, fmt.Sprintf("oifname != %q", r.NotOIF))
	}
	if r.DstAddr.IsValid() {
		parts = append(parts, "ip daddr "+r.DstAddr.String())
	}
	if r.Proto != "" {
		parts = append(parts, fmt.Sprintf("%s dport %d", r.Proto, r.DPort))
	}
	if r.CtEstablished {
		parts = append(parts, "ct state established,related")
	}
	if r.Counter {
		parts = append(parts, "counter")
	}
	parts = append(parts, r.Verdict.String())
	if r.Comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(parts, " ")
}
