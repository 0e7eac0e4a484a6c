package vmnet

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// nftFirewall is Firewall over nf_tables netlink (google/nftables), in one
// namespace: each call opens a netlink socket inside it (WithNetNSFd).
type nftFirewall struct {
	ns *Namespace
}

var _ Firewall = (*nftFirewall)(nil)

// NewNftFirewall returns a Firewall acting in ns. The caller keeps ns
// open while using it.
func NewNftFirewall(ns *Namespace) Firewall { return &nftFirewall{ns: ns} }

// do runs fn with a connection whose netlink sockets open inside the
// namespace (each operation opens and closes its own).
func (f *nftFirewall) do(fn func(c *nftables.Conn) error) error {
	return f.ns.useFD(func(fd int) error {
		var c *nftables.Conn
		var err error
		if fd < 0 {
			c, err = nftables.New()
		} else {
			c, err = nftables.New(nftables.WithNetNSFd(fd))
		}
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		return fn(c)
	})
}

func (f *nftFirewall) Apply(rs Ruleset) error {
	return f.do(func(c *nftables.Conn) error {
		t := &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyINet}
		// add (a no-op if present), delete, add: the batch replaces the
		// table whether or not it existed, in one transaction.
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		accept := nftables.ChainPolicyAccept
		for _, ch := range rs.Chains {
			hook, err := chainHook(ch.Hook)
			if err != nil {
				return err
			}
			prio := nftables.ChainPriority(ch.Priority)
			chain := c.AddChain(&nftables.Chain{
				Name:     ch.Name,
				Table:    t,
				Type:     nftables.ChainType(ch.Type),
				Hooknum:  hook,
				Priority: &prio,
				Policy:   &accept,
			})
			for _, r := range ch.Rules {
				exprs, err := ruleExprs(r)
				if err != nil {
					return fmt.Errorf("nftables rule %q: %w", r, err)
				}
				c.AddRule(&nftables.Rule{
					Table:    t,
					Chain:    chain,
					Exprs:    exprs,
					UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment),
				})
			}
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("install nftables table inet %s: %w", rs.Table, err)
		}
		return nil
	})
}

func (f *nftFirewall) Has(table string) (bool, error) {
	var has bool
	err := f.do(func(c *nftables.Conn) error {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("list nftables tables: %w", err)
		}
		for _, t := range tables {
			has = has || t.Name == table
		}
		return nil
	})
	return has, err
}

func (f *nftFirewall) Remove(table string) error {
	has, err := f.Has(table)
	if err != nil {
		return err
	}
	if !has {
		return fmt.Errorf("remove table inet %s: %w", table, ErrTableNotFound)
	}
	return f.do(func(c *nftables.Conn) error {
		c.DelTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
		if err := c.Flush(); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("remove table inet %s: %w", table, ErrTableNotFound)
			}
			return fmt.Errorf("remove table inet %s: %w", table, err)
		}
		return nil
	})
}

func chainHook(name string) (*nftables.ChainHook, error) {
	switch name {
	case "input":
		return nftables.ChainHookInput, nil
	case "forward":
		return nftables.ChainHookForward, nil
	case "postrouting":
		return nftables.ChainHookPostrouting, nil
	}
	return nil, fmt.Errorf("nftables: unknown hook %q", name)
}

// ruleExprs compiles a Rule into nf_tables expressions, in the order
// Rule.String prints its matches (so `nft list` reads the same), each
// match loading into register 1 and comparing.
func ruleExprs(r Rule) ([]expr.Any, error) {
	var e []expr.Any
	ifname := func(key expr.MetaKey, op expr.CmpOp, name string) {
		e = append(e,
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: op, Register: 1, Data: ifnameBytes(name)})
	}
	ipv4 := func() {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}})
	}
	if r.IIF != "" {
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, r.IIF)
	}
	if r.OIF != "" {
		ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, r.OIF)
	}
	if r.SrcNet.IsValid() {
		if !r.SrcNet.Addr().Is4() {
			return nil, fmt.Errorf("source %v: only IPv4 is supported", r.SrcNet)
		}
		pfx := r.SrcNet.Masked()
		ipv4()
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4})
		if pfx.Bits() < 32 {
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: maskBytes(pfx.Bits()), Xor: []byte{0, 0, 0, 0}})
		}
		e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: pfx.Addr().AsSlice()})
	}
	if r.NotOIF != "" {
		ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, r.NotOIF)
	}
	if r.DstAddr.IsValid() {
		if !r.DstAddr.Is4() {
			return nil, fmt.Errorf("destination %v: only IPv4 is supported", r.DstAddr)
		}
		ipv4()
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.DstAddr.AsSlice()})
	}
	if r.Proto != "" {
		var proto byte
		switch r.Proto {
		case "tcp":
			proto = unix.IPPROTO_TCP
		case "udp":
			proto = unix.IPPROTO_UDP
		default:
			return nil, fmt.Errorf("protocol %q: want tcp or udp", r.Proto)
		}
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.DPort)})
	}
	if r.CtEstablished {
		e = append(e,
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)})
	}
	if r.Counter {
		e = append(e, &expr.Counter{})
	}
	switch r.Verdict {
	case Accept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case Drop:
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case Masquerade:
		e = append(e, &expr.Masq{})
	default:
		return nil, fmt.Errorf("verdict %v unknown", r.Verdict)
	}
	return e, nil
}

// ifnameBytes is an interface name as the kernel compares it: IFNAMSIZ
// bytes, NUL padded.
func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func maskBytes(bits int) []byte {
	m := make([]byte, 4)
	for i := range bits {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}
