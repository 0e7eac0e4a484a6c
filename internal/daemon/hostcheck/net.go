package hostcheck

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

const tunDevice = "/dev/net/tun"

// checkTUN says whether TAP devices can be made for guests' NICs.
func (p *prober) checkTUN() *finding {
	if _, err := p.host.Stat(tunDevice); err != nil {
		fix := "modprobe tun (kernel option CONFIG_TUN)"
		if p.module("tun") == moduleInstalled {
			fix = "modprobe tun"
		}
		return unusable(CheckTUN, StatusFail, tunDevice+" "+notThere(err)+": guests cannot have a NIC", fix)
	}
	if err := p.host.OpenDevice(tunDevice); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return unusable(CheckTUN, StatusWarn, "cannot open "+tunDevice+": permission denied, so whether TAP devices work is unknown", rootFix)
		}
		return unusable(CheckTUN, StatusFail, "cannot open "+tunDevice+" ("+err.Error()+"): guests cannot have a NIC", "modprobe tun")
	}
	return ok(CheckTUN, tunDevice+" opens")
}

// checkBridge says whether the kernel can make the bridge the TAPs join.
func (p *prober) checkBridge() *finding {
	const fix = "modprobe bridge (kernel option CONFIG_BRIDGE)"
	switch st := p.module("bridge"); {
	case st.available():
		return ok(CheckBridge, "bridge support is "+st.String())
	case st == moduleAbsent:
		return unusable(CheckBridge, StatusFail, "the kernel has no bridge module: guests cannot be networked", fix)
	}
	return unusable(CheckBridge, StatusWarn,
		"cannot tell whether the kernel has bridges: no /sys/module/bridge and no module lists under /lib/modules", fix)
}

const nftFix = "apt-get install nftables"

// checkNFTables says whether the kernel's nf_tables works (banger's NAT
// and isolation rules live there) and whether the nft command is there to
// inspect them.
func (p *prober) checkNFTables(ctx context.Context) *finding {
	kerr := p.host.ProbeNFTables()
	if kerr != nil && !errors.Is(kerr, unix.EPERM) {
		return unusable(CheckNFTables, StatusFail, "the kernel's nf_tables does not answer ("+kerr.Error()+"): no NAT for guests",
			"modprobe nf_tables (kernel option CONFIG_NF_TABLES)")
	}
	kernel := "the kernel's nf_tables works"
	if kerr != nil {
		kernel = "cannot query the kernel's nf_tables (" + kerr.Error() + ")"
	}
	path, err := p.host.LookPath("nft")
	if err != nil {
		return unusable(CheckNFTables, StatusWarn, kernel+"; the nft command is not installed (not found in PATH)", nftFix)
	}
	out, err := p.command(ctx, path, "--version")
	if err != nil {
		return unusable(CheckNFTables, StatusWarn, kernel+"; "+path+" --version failed ("+brief(err)+")", "reinstall it: "+nftFix)
	}
	nft := firstLine(out)
	if kerr != nil {
		return unusable(CheckNFTables, StatusWarn, kernel+"; "+nft, rootFix)
	}
	return ok(CheckNFTables, kernel+"; "+nft)
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// checkIPForward says whether the host routes guests' traffic. banger does
// not turn forwarding on itself.
func (p *prober) checkIPForward() *finding {
	const fix = "sysctl -w net.ipv4.ip_forward=1, and make it permanent: echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-banger.conf"
	b, err := p.host.ReadFile(ipForward)
	if err != nil {
		return unusable(CheckIPForward, StatusWarn, "cannot read "+ipForward+": "+err.Error(), fix)
	}
	if v := strings.TrimSpace(string(b)); v != "1" {
		return unusable(CheckIPForward, StatusWarn, "net.ipv4.ip_forward = "+v+": guests reach the host but not beyond it", fix)
	}
	return ok(CheckIPForward, "net.ipv4.ip_forward = 1")
}

// probeNFTables sends NFT_MSG_GETGEN, the cheapest nf_tables request, over
// a netfilter netlink socket and waits for the kernel's acknowledgement.
// It needs CAP_NET_ADMIN (EPERM otherwise).
func probeNFTables() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netfilter netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("netlink receive timeout: %w", err)
	}
	// struct nlmsghdr (16 bytes) + struct nfgenmsg (4 bytes).
	req := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(req[8:], 1) // sequence number
	req[16] = unix.AF_UNSPEC
	req[17] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("NFT_MSG_GETGEN: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("NFT_MSG_GETGEN reply: %w", err)
		}
		for msg := buf[:n]; len(msg) >= unix.NLMSG_HDRLEN; {
			size := int(binary.NativeEndian.Uint32(msg[0:]))
			typ := binary.NativeEndian.Uint16(msg[4:])
			if size < unix.NLMSG_HDRLEN || size > len(msg) {
				return errors.New("NFT_MSG_GETGEN reply: malformed netlink message")
			}
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if size < unix.NLMSG_HDRLEN+4 {
					return errors.New("NFT_MSG_GETGEN reply: short netlink error")
				}
				if errno := int32(binary.NativeEndian.Uint32(msg[unix.NLMSG_HDRLEN:])); errno != 0 {
					return fmt.Errorf("NFT_MSG_GETGEN: %w", unix.Errno(-errno))
				}
				return nil // the acknowledgement
			}
			aligned := (size + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
			if aligned >= len(msg) {
				break
			}
			msg = msg[aligned:]
		}
	}
}
