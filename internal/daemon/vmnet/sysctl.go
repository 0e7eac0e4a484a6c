package vmnet

import (
	"fmt"
	"os"
	"strings"
)

// ipForwardPath is IPv4 forwarding's switch. /proc/sys/net answers for
// the network namespace of the thread that opens it, so both functions
// below open it from inside the namespace (Namespace.Do).
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// EnableIPForward turns on IPv4 forwarding in the namespace (guests'
// egress is routed by it). It is per namespace: enabling it in a named
// one leaves the host's setting alone; in the daemon's own namespace it
// is the host's, and banger leaves it on at teardown (something else may
// rely on it by then).
func EnableIPForward(ns *Namespace) error {
	err := ns.Do(func() error { return os.WriteFile(ipForwardPath, []byte("1\n"), 0o644) })
	if err != nil {
		return fmt.Errorf("enable ip forwarding in netns %q: %w", ns.Name(), err)
	}
	return nil
}

// IPForward reports whether IPv4 forwarding is on in the namespace.
func IPForward(ns *Namespace) (bool, error) {
	var on bool
	err := ns.Do(func() error {
		b, err := os.ReadFile(ipForwardPath)
		on = strings.TrimSpace(string(b)) == "1"
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read ip forwarding in netns %q: %w", ns.Name(), err)
	}
	return on, nil
}
