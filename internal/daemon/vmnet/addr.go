package vmnet

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"

	"banger/internal/errdefs"
)

// Gateway is the bridge's address in subnet: its first host address.
func Gateway(subnet netip.Prefix) netip.Addr { return subnet.Masked().Addr().Next() }

// NextFree returns the lowest address of the IPv4 subnet that is not
// taken and is none of the network address, the gateway (first host
// address) and the broadcast address. A full subnet is ErrExhausted.
// It is pure: the daemon calls it under createVMMu with the addresses its
// store holds, and persists the result.
func NextFree(subnet netip.Prefix, taken []netip.Addr) (netip.Addr, error) {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return netip.Addr{}, fmt.Errorf("allocate guest address: %w: subnet %v: want an IPv4 prefix of /30 or larger", errdefs.ErrInvalidArgument, subnet)
	}
	subnet = subnet.Masked()
	used := make(map[netip.Addr]bool, len(taken))
	for _, a := range taken {
		used[a.Unmap()] = true
	}
	bcast := broadcast(subnet)
	for a := Gateway(subnet).Next(); a.IsValid() && a != bcast; a = a.Next() {
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("allocate guest address in %v: %w: delete a VM or configure a larger subnet", subnet, ErrExhausted)
}

// broadcast is the last address of an IPv4 subnet.
func broadcast(subnet netip.Prefix) netip.Addr {
	b := subnet.Masked().Addr().As4()
	host := uint32(1)<<(32-subnet.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// MACFor is the guest NIC's MAC address for a VM: locally administered,
// unicast (first octet 02), the other five octets from SHA-256 of the VM
// id, so a VM keeps its MAC across restarts and any id string works.
func MACFor(vmID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("banger-mac\x00" + vmID))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}
