package guestinit

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Config is what the kernel command line tells the init. The zero value of
// a field means "not given": the feature it drives is skipped.
type Config struct {
	// Address is the first non-loopback NIC's address and prefix length.
	Address netip.Prefix
	// Gateway is the default route's next hop; only set with Address.
	Gateway netip.Addr
	// DNS lists the nameservers written to /etc/resolv.conf.
	DNS []netip.Addr
	// Hostname is the guest's host name; Domain its search domain.
	Hostname string
	Domain   string
	// MTU of the NIC; 0 keeps the driver's.
	MTU int
	// AuthorizedKeys are the only keys the SSH server accepts.
	AuthorizedKeys []ssh.PublicKey
	// Entrypoint asks the init to start the image's entrypoint+cmd.
	Entrypoint bool
	// Debug makes the init log its progress on the console.
	Debug bool
}

const cmdlinePrefix = "banger."

// ParseCmdline reads the banger.* parameters of a kernel command line (the
// contents of /proc/cmdline). Other parameters are ignored. The Config is
// always usable: a malformed value leaves its field unset, and the error,
// if any, lists every value skipped and every unknown banger.* key, for the
// caller to log.
func ParseCmdline(cmdline string) (Config, error) {
	var cfg Config
	var errs []error
	for _, param := range splitCmdline(cmdline) {
		key, value, hasValue := strings.Cut(param, "=")
		name, ok := strings.CutPrefix(key, cmdlinePrefix)
		if !ok {
			continue
		}
		if err := cfg.set(name, value, hasValue); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (ignored)", key, err))
		}
	}
	if cfg.Gateway.IsValid() {
		switch {
		case !cfg.Address.IsValid():
			errs = append(errs, errors.New("banger.gw: no banger.ip to route from (ignored)"))
			cfg.Gateway = netip.Addr{}
		case cfg.Gateway.Is4() != cfg.Address.Addr().Is4():
			errs = append(errs, fmt.Errorf("banger.gw: %s is not of banger.ip's family (ignored)", cfg.Gateway))
			cfg.Gateway = netip.Addr{}
		}
	}
	return cfg, errors.Join(errs...)
}

// set applies one banger.NAME=VALUE parameter.
func (c *Config) set(name, value string, hasValue bool) error {
	switch name {
	case "entrypoint", "debug":
	case "ip", "gw", "dns", "hostname", "domain", "mtu", "authkey":
		if !hasValue {
			return errors.New("needs a value")
		}
	default:
		return errors.New("unknown parameter")
	}
	switch name {
	case "ip":
		p, err := netip.ParsePrefix(value)
		if err != nil {
			return err
		}
		c.Address = p
	case "gw":
		a, err := netip.ParseAddr(value)
		if err != nil {
			return err
		}
		c.Gateway = a
	case "dns":
		var errs []error
		for _, s := range strings.Split(value, ",") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			c.DNS = append(c.DNS, a)
		}
		return errors.Join(errs...)
	case "hostname":
		if !validHostname(value, 64) {
			return fmt.Errorf("%q is not a valid host name", value)
		}
		c.Hostname = value
	case "domain":
		if !validHostname(value, 253) {
			return fmt.Errorf("%q is not a valid domain", value)
		}
		c.Domain = value
	case "mtu":
		n, err := strconv.Atoi(value)
		if err != nil || n < 68 || n > 65535 {
			return fmt.Errorf("%q is not an MTU between 68 and 65535", value)
		}
		c.MTU = n
	case "authkey":
		key, err := decodeAuthKey(value)
		if err != nil {
			return err
		}
		c.AuthorizedKeys = append(c.AuthorizedKeys, key)
	case "entrypoint", "debug":
		b := true
		if hasValue {
			var err error
			if b, err = strconv.ParseBool(value); err != nil {
				return fmt.Errorf("%q is not a boolean", value)
			}
		}
		if name == "debug" {
			c.Debug = b
		} else {
			c.Entrypoint = b
		}
	}
	return nil
}

// decodeAuthKey decodes one base64-encoded authorized_keys line, whichever
// base64 alphabet and padding the encoder used.
func decodeAuthKey(value string) (ssh.PublicKey, error) {
	value = strings.TrimRight(value, "=")
	var line []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if line, err = enc.DecodeString(value); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return nil, fmt.Errorf("not an authorized_keys line: %w", err)
	}
	return key, nil
}

// validHostname reports whether s is dot-separated RFC 1123 labels of at
// most max bytes in all.
func validHostname(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// splitCmdline splits a kernel command line as the kernel does: on
// whitespace, except inside double quotes, which are removed.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, inParam := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inParam = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if inParam {
				out = append(out, cur.String())
				cur.Reset()
				inParam = false
			}
		default:
			cur.WriteRune(r)
			inParam = true
		}
	}
	if inParam {
		out = append(out, cur.String())
	}
	return out
}
