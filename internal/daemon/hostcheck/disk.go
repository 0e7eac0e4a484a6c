package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	dmControl   = "/dev/mapper/control"
	loopControl = "/dev/loop-control"

	// Free space under the state root below which the disk-space check
	// fails or warns.
	minFreeFail = 2 << 30
	minFreeWarn = 10 << 30
)

const rootFix = "run `sudo banger doctor`: the daemon runs as root"

// checkDeviceMapper says whether VM disks can be device-mapper snapshots:
// the kernel has device-mapper with its snapshot target, and dmsetup is
// installed.
func (p *prober) checkDeviceMapper(ctx context.Context) *finding {
	const fallback = "; VM disks are reflink clones or sparse copies instead"
	kernelFix := "optional, for instant VM disks: use a kernel with device-mapper (CONFIG_BLK_DEV_DM, CONFIG_DM_SNAPSHOT)"
	if p.module("dm_mod") == moduleInstalled {
		kernelFix = "modprobe dm_mod dm_snapshot"
	}
	if !p.exists(dmControl) {
		if p.miscLists("device-mapper") {
			f := unusable(CheckDeviceMapper, StatusWarn, "the kernel has device-mapper but "+dmControl+" is missing"+fallback, "dmsetup mknodes")
			f.reason = dmControl + " missing"
			return f
		}
		f := unusable(CheckDeviceMapper, StatusWarn, "the kernel has no device-mapper (no "+dmControl+")"+fallback, kernelFix)
		f.reason = "no device-mapper in the kernel"
		return f
	}
	// Open the node before running dmsetup: libdevmapper creates nodes
	// it finds missing, and doctor must not change the host.
	if err := p.host.OpenDevice(dmControl); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			f := unusable(CheckDeviceMapper, StatusWarn, "cannot open "+dmControl+": permission denied, so whether device-mapper works is unknown", rootFix)
			f.reason = "cannot open " + dmControl
			return f
		}
		f := unusable(CheckDeviceMapper, StatusWarn, "the kernel has no device-mapper ("+dmControl+" exists but does not open: "+err.Error()+")"+fallback, kernelFix)
		f.reason = "no device-mapper in the kernel"
		return f
	}
	dmsetup, err := p.host.LookPath("dmsetup")
	if err != nil {
		f := unusable(CheckDeviceMapper, StatusWarn, "dmsetup not found in PATH"+fallback, "apt-get install dmsetup")
		f.reason = "dmsetup not found in PATH"
		return f
	}
	out, runErr := p.command(ctx, dmsetup, "targets")
	if runErr == nil {
		if v, found := targetVersion(out, "snapshot"); found {
			return ok(CheckDeviceMapper, "device-mapper with the snapshot target "+v)
		}
	}
	if st := p.module("dm_snapshot"); st.available() {
		return ok(CheckDeviceMapper, "device-mapper; the snapshot target's module dm_snapshot is "+st.String())
	}
	if runErr != nil {
		f := unusable(CheckDeviceMapper, StatusWarn, "dmsetup targets failed ("+brief(runErr)+")"+fallback, "check that device-mapper works: dmsetup targets")
		f.reason = "dmsetup targets failed"
		return f
	}
	f := unusable(CheckDeviceMapper, StatusWarn, "device-mapper has no snapshot target"+fallback, "modprobe dm_snapshot")
	f.reason = "no device-mapper snapshot target"
	return f
}

// targetVersion finds target in `dmsetup targets` output
// ("snapshot         v1.16.0").
func targetVersion(out []byte, target string) (string, bool) {
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == target {
			return strings.Join(f[1:], " "), true
		}
	}
	return "", false
}

// miscLists reports whether /proc/misc lists a misc device called name.
func (p *prober) miscLists(name string) bool {
	b, err := p.host.ReadFile("/proc/misc")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 2 && f[1] == name {
			return true
		}
	}
	return false
}

// checkLoop says whether loop devices can be attached; device-mapper
// snapshots sit on top of them.
func (p *prober) checkLoop() *finding {
	const consequence = "; device-mapper snapshots need loop devices"
	if _, err := p.host.Stat(loopControl); err != nil {
		fix := "modprobe loop (kernel option CONFIG_BLK_DEV_LOOP)"
		if p.module("loop") == moduleInstalled {
			fix = "modprobe loop"
		}
		f := unusable(CheckLoop, StatusWarn, loopControl+" "+notThere(err)+consequence, fix)
		f.reason = "no loop devices (" + loopControl + " " + notThere(err) + ")"
		return f
	}
	if err := p.host.OpenDevice(loopControl); err != nil {
		fix := "check that " + loopControl + " is a working loop-control device"
		if errors.Is(err, fs.ErrPermission) {
			fix = rootFix
		}
		f := unusable(CheckLoop, StatusWarn, "cannot open "+loopControl+" ("+err.Error()+")"+consequence, fix)
		f.reason = "cannot open " + loopControl
		return f
	}
	return ok(CheckLoop, loopControl+" opens")
}

// checkReflink clones a file with FICLONE where VM disks will live.
func (p *prober) checkReflink() *finding {
	fsys := "the filesystem"
	if st, err := p.host.Statfs(p.dir); err == nil {
		fsys = fsName(st.Magic)
	}
	err := p.host.ProbeReflink(p.dir)
	switch {
	case err == nil:
		return ok(CheckReflink, "FICLONE works on "+fsys+" at "+p.where())
	case reflinkUnsupported(err):
		f := unusable(CheckReflink, StatusWarn,
			"no reflink on "+fsys+" ("+err.Error()+") at "+p.where()+"; without device-mapper, VM disks are sparse copies",
			"optional, for instant VM disks without device-mapper: put the state root on XFS (mkfs.xfs -m reflink=1) or btrfs")
		f.reason = "no reflink on " + fsys
		return f
	}
	fix := "check that " + p.dir + " is writable"
	if errors.Is(err, fs.ErrPermission) {
		fix = rootFix
	}
	f := unusable(CheckReflink, StatusWarn, "cannot test reflink on "+fsys+" at "+p.where()+": "+err.Error(), fix)
	f.reason = "reflink untested (" + err.Error() + ")"
	return f
}

// reflinkUnsupported reports whether a FICLONE error means the filesystem
// cannot clone, as opposed to the probe failing for another reason.
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// probeReflink clones a small temporary file in dir with FICLONE and
// removes both files whatever happens.
func probeReflink(dir string) error {
	src, err := os.CreateTemp(dir, ".banger-doctor-reflink-*")
	if err != nil {
		return err
	}
	defer os.Remove(src.Name())
	defer src.Close()
	dst, err := os.CreateTemp(dir, ".banger-doctor-reflink-*")
	if err != nil {
		return err
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		return err
	}
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		return fmt.Errorf("FICLONE: %w", err)
	}
	return nil
}

// checkDiskSpace reports the space free for images and VM disks.
func (p *prober) checkDiskSpace() *finding {
	st, err := p.host.Statfs(p.dir)
	if err != nil {
		return unusable(CheckDiskSpace, StatusWarn, "cannot measure free space at "+p.where()+": "+err.Error(), "check that "+p.dir+" is readable")
	}
	detail := fmt.Sprintf("%s free of %s on %s at %s", humanBytes(st.Avail), humanBytes(st.Size), fsName(st.Magic), p.where())
	const fix = "free space on that filesystem, or move the state root to a bigger one"
	switch {
	case st.Avail < minFreeFail:
		return unusable(CheckDiskSpace, StatusFail, detail+"; banger needs at least "+humanBytes(minFreeFail), fix)
	case st.Avail < minFreeWarn:
		return unusable(CheckDiskSpace, StatusWarn, detail+"; images and VM disks need more than "+humanBytes(minFreeWarn)+" to be comfortable", fix)
	}
	return ok(CheckDiskSpace, detail)
}

// fsName names a statfs magic number.
func fsName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC: // also ext2 and ext3
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.BCACHEFS_SUPER_MAGIC:
		return "bcachefs"
	case 0x2fc12fc1:
		return "zfs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	case unix.CIFS_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC:
		return "cifs"
	case unix.SQUASHFS_MAGIC:
		return "squashfs"
	}
	return fmt.Sprintf("a filesystem of type %#x", magic)
}

// humanBytes formats n in binary units: "1.5 GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
