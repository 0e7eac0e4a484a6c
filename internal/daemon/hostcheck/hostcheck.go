// Package hostcheck diagnoses whether a Linux host can run banger's
// microVMs, and decides which VMM and which copy-on-write disk strategy the
// daemon uses there. It is what `banger doctor` reports.
//
// Run only looks: it reads /proc, /sys and /dev, runs tools' version
// commands, and makes throwaway probes (a KVM VM that executes one HLT, two
// temporary files cloned with FICLONE, a tiny ext4 image) that are removed
// before it returns. It never loads modules, sets sysctls or installs
// anything; each check's Fix says what the user should do instead.
package hostcheck

import (
	"context"
	"path/filepath"

	"banger/internal/layout"
)

// Status is the verdict of one check.
type Status string

const (
	// StatusOK: the feature works.
	StatusOK Status = "ok"
	// StatusWarn: banger works, but with a slower or poorer fallback.
	StatusWarn Status = "warn"
	// StatusFail: banger cannot work (or cannot honour the configuration)
	// until this is fixed.
	StatusFail Status = "fail"
)

// Names of the checks, in the order a Report lists them.
const (
	CheckKVM          = "kvm"
	CheckFirecracker  = "firecracker"
	CheckQEMU         = "qemu"
	CheckDeviceMapper = "device-mapper"
	CheckLoop         = "loop"
	CheckReflink      = "reflink"
	CheckTUN          = "tun"
	CheckBridge       = "bridge"
	CheckNFTables     = "nftables"
	CheckIPForward    = "ip-forward"
	CheckMkfs         = "mkfs.ext4"
	CheckDiskSpace    = "disk-space"
	CheckJailer       = "jailer"
)

// Preference and choice values, shared with the configuration.
const (
	Auto = "auto"

	VMMFirecracker = "firecracker"
	VMMQEMU        = "qemu"
	VMMNone        = "none" // no usable VMM: a check fails

	DiskDMSnap  = "dmsnap"
	DiskReflink = "reflink"
	DiskCopy    = "copy"

	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Check is the outcome of one diagnostic.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do about a warn or fail; empty when ok.
	Fix string `json:"fix,omitempty"`
}

// Choice is a decision banger makes from the checks, and why.
type Choice struct {
	Name string `json:"name"`
	Why  string `json:"why"`
}

// Report is everything Run found and decided.
type Report struct {
	Checks []Check `json:"checks"`
	// VMM is VMMFirecracker, VMMQEMU or VMMNone.
	VMM Choice `json:"vmm"`
	// Accel is how the VMM runs guests: AccelKVM or AccelTCG (empty when
	// VMM is VMMNone).
	Accel string `json:"accel"`
	// Disk is DiskDMSnap, DiskReflink or DiskCopy.
	Disk Choice `json:"disk"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			return true
		}
	}
	return false
}

// Check returns the check called name (one of the Check* constants).
func (r Report) Check(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// Options says what to check and how to reach the host.
type Options struct {
	// Root is the state root. It may not exist yet: the filesystem checks
	// then look at its nearest existing parent. Empty means
	// layout.DefaultRoot.
	Root string
	// VMM is the configured preference: Auto (or empty), VMMFirecracker or
	// VMMQEMU.
	VMM string
	// Disk is the configured preference: Auto (or empty), DiskDMSnap,
	// DiskReflink or DiskCopy.
	Disk string
	// Jailer is the configured jailer_binary ("" when Firecracker runs
	// without the jailer), JailerUID the uid it runs Firecracker as.
	Jailer    string
	JailerUID int
	// Runner runs host commands; nil runs them with os/exec.
	Runner Runner
	// Host reaches the machine; nil fields use the real host.
	Host Host
}

// Run checks the host and decides the VMM and disk strategy. It never
// returns an error: whatever goes wrong is a check's Detail.
func Run(ctx context.Context, o Options) Report {
	p := newProber(o)
	kvm := p.checkKVM()
	fc := p.checkFirecracker(ctx)
	qemu := p.checkQEMU(ctx)
	dm := p.checkDeviceMapper(ctx)
	loop := p.checkLoop()
	reflink := p.checkReflink()
	tun := p.checkTUN()
	bridge := p.checkBridge()
	nft := p.checkNFTables(ctx)
	fwd := p.checkIPForward()
	mkfs := p.checkMkfs(ctx)
	space := p.checkDiskSpace()
	jailer := p.checkJailer(o.Jailer, o.JailerUID)

	var r Report
	r.VMM, r.Accel = decideVMM(o.VMM, kvm, fc, qemu)
	r.Disk = decideDisk(o.Disk, dm, loop, reflink)
	for _, f := range []*finding{kvm, fc, qemu, dm, loop, reflink, tun, bridge, nft, fwd, mkfs, space, jailer} {
		r.Checks = append(r.Checks, f.Check)
	}
	return r
}

// finding is a check plus what the decisions need to know about it.
type finding struct {
	Check
	// usable: banger can use the feature.
	usable bool
	// reason says, in a few words, why it is not usable (for Choice.Why).
	reason string
}

func ok(name, detail string) *finding {
	return &finding{Check: Check{Name: name, Status: StatusOK, Detail: detail}, usable: true}
}

// unusable is a warn (or fail) finding whose reason is also its detail.
func unusable(name string, st Status, detail, fix string) *finding {
	return &finding{Check: Check{Name: name, Status: st, Detail: detail, Fix: fix}, reason: detail}
}

// prober holds what every check needs.
type prober struct {
	host Host
	run  Runner
	// root is the requested state root; dir is root or its nearest
	// existing parent, where filesystem probes run.
	root, dir string
}

func newProber(o Options) *prober {
	p := &prober{host: o.Host.withDefaults(), run: o.Runner}
	if p.run == nil {
		p.run = execRunner{}
	}
	p.root = o.Root
	if p.root == "" {
		p.root = layout.DefaultRoot
	}
	if abs, err := filepath.Abs(p.root); err == nil {
		p.root = abs
	}
	p.dir = p.nearestExisting(p.root)
	return p
}

// nearestExisting returns path if it is an existing directory, else its
// closest ancestor that is.
func (p *prober) nearestExisting(path string) string {
	for {
		if fi, err := p.host.Stat(path); err == nil && fi.IsDir() {
			return path
		}
		parent := filepath.Dir(path)
		if parent == path {
			return path
		}
		path = parent
	}
}

// where describes p.dir for details: "/var/lib (nearest existing parent of
// /var/lib/banger)" or just the root.
func (p *prober) where() string {
	if p.dir == p.root {
		return p.dir
	}
	return p.dir + " (nearest existing parent of " + p.root + ")"
}
