package guestinit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// mountSpec is one file system the init makes sure is mounted.
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	optional               bool // failure is only logged at debug level
}

const (
	nsd = unix.MS_NOSUID | unix.MS_NODEV
)

// baseMounts, in order (each target's parent is mounted before it).
// /tmp is left on the root disk: a tmpfs there would eat the guest's small
// memory; the image finalizer makes it 1777.
var baseMounts = []mountSpec{
	{"proc", "/proc", "proc", nsd | unix.MS_NOEXEC, "", false},
	{"sysfs", "/sys", "sysfs", nsd | unix.MS_NOEXEC, "", false},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", false},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", false},
	{"tmpfs", "/dev/shm", "tmpfs", nsd, "mode=1777", false},
	{"tmpfs", "/run", "tmpfs", nsd, "mode=0755", false},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", nsd | unix.MS_NOEXEC, "", true},
}

// devLinks are created in /dev when missing.
var devLinks = [][2]string{
	{"/dev/fd", "/proc/self/fd"},
	{"/dev/stdin", "/proc/self/fd/0"},
	{"/dev/stdout", "/proc/self/fd/1"},
	{"/dev/stderr", "/proc/self/fd/2"},
	{"/dev/ptmx", "pts/ptmx"},
}

// setupMounts mounts what Linux needs unless it is already mounted (the
// initramfs may have moved some), makes / writable, and adds the /dev
// links. It goes as far as it can and returns every failure; optional
// ones are returned separately.
func setupMounts() (errs, optional []error) {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		if err := mount(baseMounts[0]); err != nil {
			errs = append(errs, err)
		}
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		errs = append(errs, err)
	}
	mounted := parseMountInfo(info)
	if opts, ok := mounted["/"]; ok && hasOption(opts, "ro") {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT, ""); err != nil {
			errs = append(errs, fmt.Errorf("remounting / read-write: %w", err))
		}
	}
	for _, m := range baseMounts {
		if _, ok := mounted[m.target]; ok {
			continue
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			errs = append(errs, err)
			continue
		}
		if err := mount(m); err != nil {
			if m.optional {
				optional = append(optional, err)
			} else {
				errs = append(errs, err)
			}
		}
	}
	for _, l := range devLinks {
		if _, err := os.Lstat(l[0]); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(l[1], l[0]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs, optional
}

func mount(m mountSpec) error {
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

// parseMountInfo maps each mount point in /proc/self/mountinfo data to its
// per-mount options (the last one mounted on a point wins).
func parseMountInfo(data []byte) map[string]string {
	out := make(map[string]string)
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 6 {
			continue
		}
		out[unescapeMount(f[4])] = f[5]
	}
	return out
}

func hasOption(opts, opt string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes ("\040" for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}
