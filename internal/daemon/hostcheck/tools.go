package hostcheck

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// commandTimeout bounds each command a check runs, so a wedged tool
// cannot hang `banger doctor`.
const commandTimeout = 20 * time.Second

func (p *prober) command(ctx context.Context, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	return p.run.Run(ctx, argv...)
}

// exists reports whether path can be stat'ed.
func (p *prober) exists(path string) bool {
	_, err := p.host.Stat(path)
	return err == nil
}

// notThere describes a Stat error: "does not exist" or the error.
func notThere(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "does not exist"
	}
	return "cannot be checked (" + err.Error() + ")"
}

// brief squeezes a command's error, which may carry many lines of
// stderr, into one line short enough for a Detail.
func brief(err error) string {
	const max = 300
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

// firstLine returns the first non-empty line of out, trimmed.
func firstLine(out []byte) string {
	for line := range strings.Lines(string(out)) {
		if s := strings.TrimSpace(line); s != "" {
			return s
		}
	}
	return ""
}

const firecrackerFix = "download a release from https://github.com/firecracker-microvm/firecracker/releases and install its firecracker binary as /usr/local/bin/firecracker"

// checkFirecracker finds the firecracker binary and its version. Whether
// it can run (it needs KVM) is decided with the kvm check.
func (p *prober) checkFirecracker(ctx context.Context) *finding {
	path, err := p.host.LookPath("firecracker")
	if err != nil {
		f := unusable(CheckFirecracker, StatusWarn, "firecracker not found in PATH; banger uses QEMU", firecrackerFix)
		f.reason = "firecracker not found in PATH"
		return f
	}
	out, err := p.command(ctx, path, "--version")
	if err != nil {
		f := unusable(CheckFirecracker, StatusWarn, path+" --version failed ("+brief(err)+"); banger uses QEMU", "reinstall it: "+firecrackerFix)
		f.reason = "firecracker at " + path + " does not run"
		return f
	}
	return ok(CheckFirecracker, firstLine(out)+" at "+path)
}

const qemuFix = "apt-get install qemu-system-x86"

// checkQEMU finds qemu-system-x86_64, its version, and its microvm
// machine. A missing QEMU is only a warning here; decideVMM makes it a
// failure when nothing else can run guests or when it is configured.
func (p *prober) checkQEMU(ctx context.Context) *finding {
	path, err := p.host.LookPath("qemu-system-x86_64")
	if err != nil {
		f := unusable(CheckQEMU, StatusWarn, "qemu-system-x86_64 not found in PATH", qemuFix)
		f.reason = "qemu-system-x86_64 not found in PATH"
		return f
	}
	out, err := p.command(ctx, path, "--version")
	if err != nil {
		f := unusable(CheckQEMU, StatusWarn, path+" --version failed ("+brief(err)+")", "reinstall it: "+qemuFix)
		f.reason = "qemu-system-x86_64 at " + path + " does not run"
		return f
	}
	version := firstLine(out)
	machines, err := p.command(ctx, path, "-machine", "help")
	if err != nil {
		f := unusable(CheckQEMU, StatusWarn, version+": `-machine help` failed ("+brief(err)+")", "reinstall it: "+qemuFix)
		f.reason = "qemu-system-x86_64 cannot list its machines"
		return f
	}
	if !hasMachine(machines, "microvm") {
		f := unusable(CheckQEMU, StatusWarn, version+" has no microvm machine (QEMU 4.2 or later has it)", "install a newer QEMU: "+qemuFix)
		f.reason = version + " has no microvm machine"
		return f
	}
	return ok(CheckQEMU, version+" at "+path+", with the microvm machine")
}

// hasMachine reports whether `qemu -machine help` output lists name.
func hasMachine(out []byte, name string) bool {
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

const mkfsFix = "apt-get install e2fsprogs (1.43 or later supports -d)"

// checkMkfs makes a tiny ext4 image from a directory with `mkfs.ext4 -d`,
// exactly as image builds do, in a temporary directory it removes.
func (p *prober) checkMkfs(ctx context.Context) *finding {
	path, err := p.host.LookPath("mkfs.ext4")
	if err != nil {
		return unusable(CheckMkfs, StatusFail, "mkfs.ext4 not found in PATH: images cannot be built", mkfsFix)
	}
	tmp, err := os.MkdirTemp("", "banger-doctor-mkfs-")
	if err != nil {
		return unusable(CheckMkfs, StatusWarn, "cannot make a temporary directory to test mkfs.ext4 -d: "+err.Error(), "check that $TMPDIR (or /tmp) is writable")
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "tree")
	img := filepath.Join(tmp, "probe.ext4")
	if err := os.Mkdir(src, 0o755); err == nil {
		err = os.WriteFile(filepath.Join(src, "probe"), []byte("banger\n"), 0o644)
	}
	if err != nil {
		return unusable(CheckMkfs, StatusWarn, "cannot prepare a tree to test mkfs.ext4 -d: "+err.Error(), "check that $TMPDIR (or /tmp) is writable")
	}
	if _, err := p.command(ctx, path, "-q", "-F", "-d", src, img, "4M"); err != nil {
		return unusable(CheckMkfs, StatusFail, "mkfs.ext4 -d cannot make an image from a directory: "+brief(err), mkfsFix)
	}
	return ok(CheckMkfs, path+" made a test ext4 image from a directory (-d)")
}

// checkJailer reports whether Firecracker runs under the jailer, and, when
// it is configured, whether the binary is there. A missing one fails: a
// Firecracker VM could not start. Running Firecracker as root under it
// is a warning: the jailer is then only a chroot.
func (p *prober) checkJailer(bin string, uid int) *finding {
	if bin == "" {
		return ok(CheckJailer, "not configured (jailer_binary is empty): Firecracker runs without the jailer")
	}
	path, err := p.host.LookPath(bin)
	if err != nil {
		return unusable(CheckJailer, StatusFail, "jailer_binary "+bin+" not found", "install the jailer from the Firecracker release archive (the same version as firecracker), or set jailer_binary to \"\"")
	}
	if uid == 0 {
		return unusable(CheckJailer, StatusWarn, "the jailer at "+path+" runs Firecracker as root (jailer_uid = 0)", "set jailer_uid and jailer_gid to an unprivileged user of their own")
	}
	return ok(CheckJailer, "Firecracker runs under the jailer at "+path)
}
