package fcproc

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"banger/internal/errdefs"
)

// Defaults for the zero values of Config's and Jailer's fields.
const (
	DefaultBinary        = "firecracker"
	DefaultJailerBinary  = "jailer"
	DefaultChrootBaseDir = "/srv/jailer"
)

const maxSocketPath = 107 // sun_path is 108 bytes with the NUL

// Config describes how to run one Firecracker process. Every path must be
// absolute: Firecracker runs in the daemon's working directory, which
// means nothing.
type Config struct {
	// ID is the VM's id, passed as Firecracker's --id (so a reconciler can
	// tell which VM a process runs, IDFromArgv). Firecracker accepts 1-64
	// letters, digits and '-'.
	ID string
	// Binary is the Firecracker executable (DefaultBinary, looked up in
	// PATH, when empty). Tests point it at a Firecracker-compatible shim.
	Binary string
	// APISocket is the unix socket Firecracker serves its API on, as
	// Firecracker sees it: under the jailer a path inside the jail (see
	// HostAPISocket). A stale socket file there is replaced.
	APISocket string
	// ConsoleLog receives Firecracker's stdout and stderr, which carry the
	// guest's serial console; truncated at start. Empty: Start keeps the
	// last few KiB in memory for its error messages.
	ConsoleLog string
	// NetNS runs Firecracker in a network namespace: a name under
	// /run/netns (as `ip netns add` makes) or an absolute path to a
	// namespace file. TAPs are looked up there.
	NetNS string
	// Jailer, when set, starts Firecracker through the jailer.
	Jailer *Jailer
}

// Jailer configures Firecracker's jailer. The jailer copies Firecracker into
// ChrootBaseDir/<name of Binary>/<ID>/root, chroots there, drops to UID and
// GID and execs Firecracker with --id ID and the API socket; every path
// given to the API (kernel, drives, log) is then a path inside the jail.
type Jailer struct {
	// Binary is the jailer executable (DefaultJailerBinary when empty).
	Binary string
	// UID and GID are what Firecracker runs as.
	UID, GID int
	// ChrootBaseDir is where jails are made (DefaultChrootBaseDir when
	// empty).
	ChrootBaseDir string
}

// idPattern is Firecracker's instance id rule (validate_instance_id:
// 1-64 alphanumerics and '-'); the jailer applies the same to its --id.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// resourceIDPattern is the API's rule for drive and interface ids
// (checked_id: alphanumerics and '_').
var resourceIDPattern = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

func invalid(id, format string, args ...any) error {
	return fmt.Errorf("firecracker config for VM %q: %s: %w", id, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

func (cfg Config) withDefaults() Config {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.Jailer != nil {
		j := *cfg.Jailer
		if j.Binary == "" {
			j.Binary = DefaultJailerBinary
		}
		if j.ChrootBaseDir == "" {
			j.ChrootBaseDir = DefaultChrootBaseDir
		}
		cfg.Jailer = &j
	}
	return cfg
}

// validate checks cfg (with defaults applied) without touching the host.
func (cfg Config) validate() error {
	id := cfg.ID
	if !idPattern.MatchString(id) {
		return invalid(id, "the VM id must be 1-64 letters, digits or '-' (Firecracker's --id rule)")
	}
	var errs []error
	abs := func(what, path string, required bool) {
		switch {
		case path == "" && required:
			errs = append(errs, invalid(id, "%s is not set", what))
		case path != "" && !filepath.IsAbs(path):
			errs = append(errs, invalid(id, "%s %q is not an absolute path", what, path))
		}
	}
	abs("API socket", cfg.APISocket, true)
	abs("console log", cfg.ConsoleLog, false)
	if cfg.Jailer != nil {
		abs("firecracker binary (the jailer's --exec-file)", cfg.Binary, true)
		abs("jailer chroot base dir", cfg.Jailer.ChrootBaseDir, true)
		// The jailer's own rule (validate_exec_file).
		if !strings.Contains(filepath.Base(cfg.Binary), "firecracker") {
			errs = append(errs, invalid(id, "firecracker binary %q: the jailer's --exec-file must have \"firecracker\" in its file name", cfg.Binary))
		}
		if cfg.Jailer.UID < 0 || cfg.Jailer.GID < 0 {
			errs = append(errs, invalid(id, "negative jailer uid %d or gid %d", cfg.Jailer.UID, cfg.Jailer.GID))
		}
	}
	if filepath.IsAbs(cfg.APISocket) && len(cfg.HostAPISocket()) > maxSocketPath {
		errs = append(errs, invalid(id, "API socket path %q is %d bytes, longer than a unix socket path may be (%d)", cfg.HostAPISocket(), len(cfg.HostAPISocket()), maxSocketPath))
	}
	if ns := cfg.NetNS; ns != "" && !filepath.IsAbs(ns) && (strings.Contains(ns, "/") || ns == "." || ns == "..") {
		errs = append(errs, invalid(id, "network namespace %q: want a name under /run/netns or an absolute path", ns))
	}
	return errors.Join(errs...)
}

// HostAPISocket is the API socket's path on the host: APISocket, or under
// the jailer the same path inside the jail's root.
func (cfg Config) HostAPISocket() string {
	cfg = cfg.withDefaults()
	if cfg.Jailer == nil {
		return cfg.APISocket
	}
	return filepath.Join(cfg.JailRoot(), cfg.APISocket)
}

// JailRoot is the directory the jailer chroots into
// (ChrootBaseDir/<name of Binary>/<ID>/root), or "" without a jailer.
func (cfg Config) JailRoot() string {
	cfg = cfg.withDefaults()
	if cfg.Jailer == nil {
		return ""
	}
	return filepath.Join(cfg.Jailer.ChrootBaseDir, filepath.Base(cfg.Binary), cfg.ID, "root")
}

// netNSPath is where the namespace named by ns lives.
func netNSPath(ns string) string {
	if filepath.IsAbs(ns) {
		return ns
	}
	return filepath.Join("/run/netns", ns)
}
