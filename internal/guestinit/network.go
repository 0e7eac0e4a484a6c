package guestinit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nicWait bounds how long the init waits for the NIC to appear; its driver
// is loaded by the initramfs, so it is normally there already.
const nicWait = 2 * time.Second

// configureNetwork brings up lo and, when cfg has an address, the first
// non-loopback interface: MTU, address, up, default route.
func configureNetwork(cfg Config, log *slog.Logger) error {
	var errs []error
	if lo, err := netlink.LinkByName("lo"); err != nil {
		errs = append(errs, fmt.Errorf("lo: %w", err))
	} else if err := netlink.LinkSetUp(lo); err != nil {
		errs = append(errs, fmt.Errorf("lo up: %w", err))
	}
	if !cfg.Address.IsValid() {
		log.Info("no banger.ip: leaving the NIC down")
		return errors.Join(errs...)
	}
	link, err := firstNIC(nicWait)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	name := link.Attrs().Name
	if cfg.MTU > 0 {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			errs = append(errs, fmt.Errorf("%s mtu %d: %w", name, cfg.MTU, err))
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return errors.Join(append(errs, fmt.Errorf("%s up: %w", name, err))...)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   cfg.Address.Addr().AsSlice(),
		Mask: net.CIDRMask(cfg.Address.Bits(), cfg.Address.Addr().BitLen()),
	}}
	if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return errors.Join(append(errs, fmt.Errorf("%s address %s: %w", name, cfg.Address, err))...)
	}
	if cfg.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: cfg.Gateway.AsSlice()}
		if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("default route via %s: %w", cfg.Gateway, err))
		}
	}
	log.Info("network configured", "link", name, "address", cfg.Address.String(), "gateway", cfg.Gateway.String(), "mtu", cfg.MTU)
	return errors.Join(errs...)
}

// firstNIC returns the non-loopback link with the lowest index, waiting up
// to wait for one to appear.
func firstNIC(wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("listing links: %w", err)
		}
		sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
		for _, l := range links {
			if l.Attrs().Flags&net.FlagLoopback == 0 && l.Type() != "loopback" {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, errors.New("no network interface besides lo (is virtio_net loaded?)")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeIdentity writes /etc/hostname, /etc/hosts and /etc/resolv.conf
// under etc, each only when cfg says something it is about.
func writeIdentity(cfg Config, etc string) error {
	var errs []error
	if cfg.Hostname != "" {
		errs = append(errs,
			writeEtc(filepath.Join(etc, "hostname"), cfg.Hostname+"\n"),
			writeEtc(filepath.Join(etc, "hosts"), renderHosts(cfg.Hostname, cfg.Domain)))
	}
	if len(cfg.DNS) > 0 || cfg.Domain != "" {
		errs = append(errs, writeEtc(filepath.Join(etc, "resolv.conf"), renderResolv(cfg)))
	}
	return errors.Join(errs...)
}

// renderHosts is /etc/hosts for a guest named name in domain. The FQDN
// comes first on the 127.0.1.1 line, as Debian does, so that
// `hostname -f` prints it.
func renderHosts(name, domain string) string {
	self := name
	if domain != "" {
		self = name + "." + domain + " " + name
	}
	return "127.0.0.1\tlocalhost\n" +
		"127.0.1.1\t" + self + "\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"ff02::1\tip6-allnodes\n" +
		"ff02::2\tip6-allrouters\n"
}

// renderResolv is /etc/resolv.conf for cfg's nameservers and domain.
func renderResolv(cfg Config) string {
	var b strings.Builder
	b.WriteString("# written by banger's guest init at boot\n")
	for _, ns := range cfg.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if cfg.Domain != "" {
		fmt.Fprintf(&b, "search %s\n", cfg.Domain)
	}
	return b.String()
}

// writeEtc replaces the contents of an /etc file in place; the image
// finalizer guarantees these are regular files.
func writeEtc(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
