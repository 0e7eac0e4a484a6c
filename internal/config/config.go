// Package config loads banger's one config file (TOML). Every key, its
// default and its meaning are listed in Keys; packaging/config.toml is the
// documented copy of those defaults and a test keeps the two equal.
// Unknown keys and bad values are errors naming the key and the file.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"banger/internal/errdefs"
	"banger/internal/layout"
)

// Config is the daemon's and CLI's configuration after defaults, the file,
// the environment and flags were applied (in that order of precedence,
// lowest first).
type Config struct {
	Root            string   `toml:"root"`
	Socket          string   `toml:"socket"`
	Group           string   `toml:"group"`
	LogLevel        string   `toml:"log_level"`
	LogFormat       string   `toml:"log_format"`
	VMM             string   `toml:"vmm"`
	Disk            string   `toml:"disk"`
	MaxRequestBytes int      `toml:"max_request_bytes"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	OpRetention     Duration `toml:"op_retention"`
	// ReconcileInterval is how often the reconciler checks VMMs and sweeps
	// host objects no record owns.
	ReconcileInterval Duration `toml:"reconcile_interval"`
	// InsecureRegistries may be reached over plain HTTP ("host" or
	// "host:port"). Loopback registries always may, as with docker.
	InsecureRegistries []string `toml:"insecure_registries"`
	ImageHeadroomMiB   int      `toml:"image_headroom_mib"`
	PullConcurrency    int      `toml:"pull_concurrency"`

	NetNS             string   `toml:"netns"`
	Bridge            string   `toml:"bridge"`
	Subnet            string   `toml:"subnet"`
	Domain            string   `toml:"domain"`
	DNSUpstreams      []string `toml:"dns_upstreams"`
	AllowGuestToGuest bool     `toml:"allow_guest_to_guest"`
	TAPPoolSize       int      `toml:"tap_pool_size"`
	QEMUBinary        string   `toml:"qemu_binary"`
	FirecrackerBinary string   `toml:"firecracker_binary"`
	// JailerBinary, when set, runs Firecracker under Firecracker's jailer
	// (chroot, uid/gid drop, network namespace); "" runs it directly.
	JailerBinary string `toml:"jailer_binary"`
	JailerUID    int    `toml:"jailer_uid"`
	JailerGID    int    `toml:"jailer_gid"`
	// JailerChrootBase is the jailer's --chroot-base-dir; "" means
	// ROOT/jail (JailBase).
	JailerChrootBase string   `toml:"jailer_chroot_base"`
	VMVCPUs          int      `toml:"vm_vcpus"`
	VMMemoryMiB      int      `toml:"vm_memory_mib"`
	BootTimeout      Duration `toml:"boot_timeout"`

	// File is the config file that was read, or "" when none was.
	File string `toml:"-"`
}

// Key documents one config key.
type Key struct {
	Name    string
	Default string // as written in TOML
	Doc     string
}

// Keys lists every key with its default, in file order.
var Keys = []Key{
	{"root", `"` + layout.DefaultRoot + `"`, "State root: store, images, kernels, VM directories. Overridden by --root or BANGER_ROOT."},
	{"socket", `"` + layout.DefaultSocket + `"`, "The daemon's JSON-RPC unix socket. Overridden by --socket or BANGER_SOCKET."},
	{"group", `"` + layout.DefaultGroup + `"`, "Members of this group (and root) may use the socket; the daemon creates the group if missing."},
	{"log_level", `"info"`, "debug, info, warn or error."},
	{"log_format", `"text"`, "text or json (log/slog handlers, to stderr)."},
	{"vmm", `"auto"`, "auto, firecracker or qemu. auto: Firecracker when /dev/kvm works and the binary exists, else QEMU microvm (KVM or TCG)."},
	{"disk", `"auto"`, "VM disk strategy: auto, dmsnap, reflink or copy. auto: dmsnap where device-mapper snapshots work, else reflink where the root's filesystem can, else a sparse copy."},
	{"max_request_bytes", "1048576", "Largest JSON-RPC request line the daemon reads; larger ones are refused and the connection closed."},
	{"shutdown_timeout", `"30s"`, "On SIGINT/SIGTERM, how long in-flight requests may run before they are cancelled."},
	{"op_retention", `"10m"`, "How long finished async operations stay visible to op.get/op.list."},
	{"reconcile_interval", `"5s"`, "How often the reconciler checks VMMs and removes host objects no record owns."},
	{"insecure_registries", "[]", "Registries (host or host:port) that may be reached over plain HTTP. Loopback registries (localhost, 127.0.0.0/8, ::1) always may."},
	{"image_headroom_mib", "1024", "Free space added to an image's ext4 beyond its content, in MiB: room for a VM to install things."},
	{"pull_concurrency", "3", "Layers downloaded at once per pull."},
	{"netns", `""`, "Network namespace (/run/netns/NAME) for all VM networking: bridge, TAPs, DNS, VMM processes; created if missing. \"\" is the daemon's own namespace."},
	{"bridge", `"banger0"`, "The VMs' bridge."},
	{"subnet", `"10.88.0.0/24"`, "The VMs' IPv4 subnet; the bridge takes its first address."},
	{"domain", `"vm.banger"`, "DNS zone of the VMs' names (NAME.vm.banger), served on the bridge address."},
	{"dns_upstreams", "[]", "Resolvers (\"ip\" or \"ip:port\") the VMs' DNS server forwards other names to; [] means the host's /etc/resolv.conf."},
	{"allow_guest_to_guest", "false", "Let VMs reach one another; by default they reach only the outside and the DNS server."},
	{"tap_pool_size", "4", "Idle TAP devices kept ready for new VMs."},
	{"qemu_binary", `"qemu-system-x86_64"`, "The QEMU binary."},
	{"firecracker_binary", `"firecracker"`, "The Firecracker binary."},
	{"jailer_binary", `""`, "Firecracker's jailer; when set, Firecracker runs under it (chroot, jailer_uid/jailer_gid, the netns). \"\" runs Firecracker directly."},
	{"jailer_uid", "0", "The uid the jailer runs Firecracker as; use an unprivileged user of its own."},
	{"jailer_gid", "0", "The gid the jailer runs Firecracker as."},
	{"jailer_chroot_base", `""`, "The jailer's --chroot-base-dir; \"\" is ROOT/jail. Must be on the root's filesystem: VM disks are hard-linked into the jails."},
	{"vm_vcpus", "2", "vCPUs of a VM when create does not say."},
	{"vm_memory_mib", "512", "Memory of a VM in MiB when create does not say."},
	{"boot_timeout", `"180s"`, "How long create waits for a new VM's SSH to answer (software emulation boots take seconds)."},
}

// Enumerated values.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	LogFormats = []string{"text", "json"}
	VMMs       = []string{"auto", "firecracker", "qemu"}
	Disks      = []string{"auto", "dmsnap", "reflink", "copy"}
)

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		Root:               layout.DefaultRoot,
		Socket:             layout.DefaultSocket,
		Group:              layout.DefaultGroup,
		LogLevel:           "info",
		LogFormat:          "text",
		VMM:                "auto",
		Disk:               "auto",
		MaxRequestBytes:    1 << 20,
		ShutdownTimeout:    Duration(30 * time.Second),
		OpRetention:        Duration(10 * time.Minute),
		ReconcileInterval:  Duration(5 * time.Second),
		InsecureRegistries: []string{},
		ImageHeadroomMiB:   1024,
		PullConcurrency:    3,
		Bridge:             "banger0",
		Subnet:             "10.88.0.0/24",
		Domain:             "vm.banger",
		DNSUpstreams:       []string{},
		TAPPoolSize:        4,
		QEMUBinary:         "qemu-system-x86_64",
		FirecrackerBinary:  "firecracker",
		VMVCPUs:            2,
		VMMemoryMiB:        512,
		BootTimeout:        Duration(180 * time.Second),
	}
}

// Load reads file over the defaults. When explicit is false and the file
// does not exist, the defaults are returned (the default path is optional;
// a path the user named is not).
func Load(file string, explicit bool) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !explicit {
			return cfg, nil
		}
		return cfg, fmt.Errorf("read config file: %w", err)
	}
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return cfg, fmt.Errorf("config file %s: %v: %w", file, err, errdefs.ErrInvalidArgument)
	}
	if undec := md.Undecoded(); len(undec) > 0 {
		return cfg, fmt.Errorf("config file %s: unknown key %q (known keys: %s): %w", file, undec[0].String(), knownKeys(), errdefs.ErrInvalidArgument)
	}
	cfg.File = file
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config file %s: %w", file, err)
	}
	return cfg, nil
}

func knownKeys() string {
	names := make([]string, len(Keys))
	for i, k := range Keys {
		names[i] = k.Name
	}
	return strings.Join(names, ", ")
}

// Validate checks every value, naming the key of the first bad one.
func (c Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", key, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
	}
	oneOf := func(key, v string, allowed []string) error {
		if !slices.Contains(allowed, v) {
			return bad(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
		}
		return nil
	}
	if !filepath.IsAbs(c.Root) {
		return bad("root", "%q is not an absolute path", c.Root)
	}
	if !filepath.IsAbs(c.Socket) {
		return bad("socket", "%q is not an absolute path", c.Socket)
	}
	// sockaddr_un.sun_path holds 108 bytes including the NUL.
	if len(c.Socket) > 107 {
		return bad("socket", "%q is longer than the 107 bytes a unix socket path may have", c.Socket)
	}
	if !validGroupName(c.Group) {
		return bad("group", "%q is not a valid group name (letters, digits, '_', '-', at most 32, not starting with '-' or a digit)", c.Group)
	}
	for _, e := range []error{
		oneOf("log_level", c.LogLevel, LogLevels),
		oneOf("log_format", c.LogFormat, LogFormats),
		oneOf("vmm", c.VMM, VMMs),
		oneOf("disk", c.Disk, Disks),
	} {
		if e != nil {
			return e
		}
	}
	if c.MaxRequestBytes < 4096 || c.MaxRequestBytes > 64<<20 {
		return bad("max_request_bytes", "%d is outside 4096..67108864", c.MaxRequestBytes)
	}
	if d := time.Duration(c.ShutdownTimeout); d < 0 || d > time.Hour {
		return bad("shutdown_timeout", "%s is outside 0s..1h", d)
	}
	if d := time.Duration(c.OpRetention); d < time.Second || d > 7*24*time.Hour {
		return bad("op_retention", "%s is outside 1s..168h", d)
	}
	if d := time.Duration(c.ReconcileInterval); d < 100*time.Millisecond || d > time.Hour {
		return bad("reconcile_interval", "%s is outside 100ms..1h", d)
	}
	for _, r := range c.InsecureRegistries {
		if !validRegistryHost(r) {
			return bad("insecure_registries", "%q is not a registry host or host:port", r)
		}
	}
	if c.ImageHeadroomMiB < 0 || c.ImageHeadroomMiB > 1<<20 {
		return bad("image_headroom_mib", "%d is outside 0..1048576", c.ImageHeadroomMiB)
	}
	if c.PullConcurrency < 1 || c.PullConcurrency > 16 {
		return bad("pull_concurrency", "%d is outside 1..16", c.PullConcurrency)
	}
	if c.NetNS != "" && !validIfName(c.NetNS, 64) {
		return bad("netns", "%q is not a valid namespace name (letters, digits, '.', '_', '-')", c.NetNS)
	}
	if !validIfName(c.Bridge, 15) {
		return bad("bridge", "%q is not a valid interface name (at most 15 letters, digits, '.', '_', '-')", c.Bridge)
	}
	if p, err := netip.ParsePrefix(c.Subnet); err != nil || !p.Addr().Is4() || p.Bits() > 29 || p.Bits() < 8 {
		return bad("subnet", "%q is not an IPv4 subnet between /8 and /29", c.Subnet)
	}
	if !validDomain(c.Domain) {
		return bad("domain", "%q is not a DNS domain", c.Domain)
	}
	for _, u := range c.DNSUpstreams {
		if _, err := netip.ParseAddrPort(u); err != nil {
			if _, err := netip.ParseAddr(u); err != nil {
				return bad("dns_upstreams", "%q is not an IP or IP:port", u)
			}
		}
	}
	if c.TAPPoolSize < 0 || c.TAPPoolSize > 64 {
		return bad("tap_pool_size", "%d is outside 0..64", c.TAPPoolSize)
	}
	if c.QEMUBinary == "" {
		return bad("qemu_binary", "is empty")
	}
	if c.FirecrackerBinary == "" {
		return bad("firecracker_binary", "is empty")
	}
	if c.JailerBinary != "" && !strings.Contains(filepath.Base(c.FirecrackerBinary), "firecracker") {
		return bad("firecracker_binary", "%q: the jailer (jailer_binary is set) runs only a file whose name contains \"firecracker\"", c.FirecrackerBinary)
	}
	if c.JailerUID < 0 || c.JailerUID > 1<<32-2 {
		return bad("jailer_uid", "%d is outside 0..4294967294", c.JailerUID)
	}
	if c.JailerGID < 0 || c.JailerGID > 1<<32-2 {
		return bad("jailer_gid", "%d is outside 0..4294967294", c.JailerGID)
	}
	if b := c.JailerChrootBase; b != "" && (!filepath.IsAbs(b) || filepath.Clean(b) != b || b == "/") {
		return bad("jailer_chroot_base", "%q is not a clean absolute path below /", b)
	}
	if c.VMVCPUs < 1 || c.VMVCPUs > 64 {
		return bad("vm_vcpus", "%d is outside 1..64", c.VMVCPUs)
	}
	if c.VMMemoryMiB < 64 || c.VMMemoryMiB > 1<<20 {
		return bad("vm_memory_mib", "%d is outside 64..1048576", c.VMMemoryMiB)
	}
	if d := c.BootTimeout.Std(); d < time.Second || d > time.Hour {
		return bad("boot_timeout", "%s is outside 1s..1h", d)
	}
	return nil
}

// validRegistryHost accepts "host" or "host:port" (host a DNS name or an
// IP, IPv6 in brackets), nothing else: no scheme, no path.
func validRegistryHost(h string) bool {
	if h == "" || len(h) > 255 || strings.ContainsAny(h, "/ \t@?#") {
		return false
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = h, ""
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	if net.ParseIP(strings.Trim(host, "[]")) != nil {
		return true
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

func validIfName(s string, max int) bool {
	if s == "" || len(s) > max || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 200 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

func validGroupName(g string) bool {
	if g == "" || len(g) > 32 || g[0] == '-' || (g[0] >= '0' && g[0] <= '9') {
		return false
	}
	for _, r := range g {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// JailBase is the jailer's chroot base: JailerChrootBase, or ROOT/jail.
func (c Config) JailBase() string {
	if c.JailerChrootBase != "" {
		return c.JailerChrootBase
	}
	return filepath.Join(c.Root, "jail")
}

// SlogLevel is LogLevel as a slog.Level.
func (c Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like \"30s\" or \"10m\"", b)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
