// Package vmnet is banger's host networking for VMs: a bridge with the
// guests' gateway address, a pool of TAP devices, IPv4 forwarding, an
// nftables table (NAT egress, guest isolation, DNS-only access to the
// host), and a DNS server answering NAME.<domain> for each VM and
// forwarding the rest. Network composes them; each piece is usable alone.
//
// It is a leaf: it imports no other daemon package. The daemon owns the
// policy around it — which VM gets which address (NextFree, under its
// createVMMu, persisted in the store), when a VM's TAP is acquired and
// released, which names are registered.
//
// # Host access
//
// Netlink goes through vishvananda/netlink behind Links, nftables through
// google/nftables behind Firewall; both small interfaces with typed
// not-found errors (ErrLinkNotFound, ErrTableNotFound) and fakes in the
// tests. No `ip`, `iptables` or `nft` command is run.
//
// # Namespaces
//
// Config.NetNS puts all of it — bridge, TAPs, rules, forwarding, DNS
// server, and the VMM processes the daemon starts through
// Namespace.Do — into a named network namespace, made like `ip netns
// add` if missing (EnsureNetNS). Netlink and nftables reach it through
// sockets opened inside it, with no thread switching. What binds to a
// namespace through the calling thread (listening and dialing sockets,
// /dev/net/tun, /proc/sys/net, fork) runs on a goroutine locked to a
// thread that joined the namespace and is discarded afterwards (see
// Namespace), so no goroutine ever runs in a namespace by accident.
//
// # TAP names
//
// Every banger TAP starts with "bgt". Idle pool TAPs are "bgtp" + 8
// random hex digits; Acquire renames one to "bgt" + the first 12 hex
// digits of the VM id, so ownership shows in the name (no ledger needed
// to spot a leaked one: VMIDPrefix) while creation stays off the VM's
// critical path. Release deletes the TAP; the pool refills in the
// background.
//
// # Guests' isolation
//
// Guest-to-guest traffic is stopped twice unless AllowGuestToGuest:
// TAPs are isolated bridge ports (frames between two isolated ports are
// never forwarded by the bridge), and the forward chain drops routed
// packets that enter and leave by the bridge (and bridged ones, where
// br_netfilter passes them to inet hooks). The input chain lets guests
// reach the host only for DNS on the bridge address and for replies.
//
// # DNS
//
// The server listens on the bridge address, port 53, udp and tcp, inside
// the namespace. It is authoritative for the domain (NXDOMAIN for unknown
// VMs, never forwarded) and for reverse names of the subnet; it forwards
// everything else, over the client's transport, to the upstreams —
// Config.Upstreams, or the host's /etc/resolv.conf nameservers — from
// inside the namespace, and never to itself. Forwarding runs on a fixed
// pool of workers with a per-upstream timeout and a bounded queue.
//
// # Lifecycle
//
// Setup is idempotent and adopts what an earlier run left. Close stops
// the DNS server and the pool's refilling but keeps the bridge, TAPs and
// rules, so running VMs keep their network and stay filtered while the
// daemon restarts. Teardown removes them; the namespace stays until
// DeleteNetNS, and IPv4 forwarding stays on.
package vmnet
