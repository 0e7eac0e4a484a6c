package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing/fstest"

	"golang.org/x/sys/unix"
)

// fakeHost is a machine described as data: a file tree, the binaries in
// PATH, the outcome of each probe and the output of each command.
type fakeHost struct {
	files   fstest.MapFS
	bins    map[string]bool
	open    map[string]error // OpenDevice errors by path
	kvm     error
	reflink error
	fs      FSInfo
	statfs  error
	nft     error
	// cmds maps "NAME FIRSTARG" (NAME without its directory) to the result.
	cmds map[string]cmdResult

	// What the checks asked for.
	probedDirs []string
	unexpected []string
}

type cmdResult struct {
	out string
	err error
}

var (
	devNode = &fstest.MapFile{Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600}
	dir     = &fstest.MapFile{Mode: fs.ModeDir | 0o755}
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), Mode: 0o644} }

// goodHost is a host where everything works: an Intel CPU with VT-x,
// device-mapper, XFS with reflink, 50 GiB free, every tool installed.
func goodHost() *fakeHost {
	return &fakeHost{
		files: fstest.MapFS{
			"dev/kvm":                      devNode,
			"dev/mapper/control":           devNode,
			"dev/loop-control":             devNode,
			"dev/net/tun":                  devNode,
			"proc/cpuinfo":                 file("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx lm\n\nprocessor\t: 1\n"),
			"proc/misc":                    file("236 device-mapper\n237 loop-control\n200 tun\n232 kvm\n"),
			"proc/sys/net/ipv4/ip_forward": file("1\n"),
			"proc/sys/kernel/osrelease":    file("6.1.0-test-amd64\n"),
			"sys/module/bridge":            dir,
			"var/lib":                      dir,
		},
		bins: map[string]bool{"firecracker": true, "qemu-system-x86_64": true, "dmsetup": true, "nft": true, "mkfs.ext4": true},
		open: map[string]error{},
		fs:   FSInfo{Magic: unix.XFS_SUPER_MAGIC, Avail: 50 << 30, Size: 100 << 30},
		cmds: map[string]cmdResult{
			"firecracker --version":        {out: "Firecracker v1.7.0\n\nSupported snapshot data format versions: v1.0.0\n"},
			"qemu-system-x86_64 --version": {out: "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n"},
			"qemu-system-x86_64 -machine":  {out: "Supported machines are:\nmicrovm              microvm (i386)\npc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n"},
			"dmsetup targets":              {out: "snapshot-merge   v1.5.0\nsnapshot         v1.16.0\nlinear           v1.4.0\n"},
			"nft --version":                {out: "nftables v1.0.6 (Lester Gooch #5)\n"},
			"mkfs.ext4 -q":                 {out: "Creating regular file probe.ext4\n"},
		},
	}
}

func (f *fakeHost) host() Host {
	return Host{
		ReadFile: func(name string) ([]byte, error) { return f.files.ReadFile(rel(name)) },
		Stat:     func(name string) (fs.FileInfo, error) { return f.files.Stat(rel(name)) },
		LookPath: func(file string) (string, error) {
			if f.bins[file] {
				return "/usr/bin/" + file, nil
			}
			return "", &fs.PathError{Op: "lookpath", Path: file, Err: fs.ErrNotExist}
		},
		OpenDevice: func(name string) error {
			if _, err := f.files.Stat(rel(name)); err != nil {
				return err
			}
			return f.open[name]
		},
		ProbeKVM: func(string) error { return f.kvm },
		ProbeReflink: func(dir string) error {
			f.probedDirs = append(f.probedDirs, "reflink "+dir)
			return f.reflink
		},
		Statfs: func(path string) (FSInfo, error) {
			f.probedDirs = append(f.probedDirs, "statfs "+path)
			return f.fs, f.statfs
		},
		ProbeNFTables: func() error { return f.nft },
	}
}

// rel turns an absolute path into an fstest.MapFS name.
func rel(name string) string {
	if name == "/" {
		return "."
	}
	return strings.TrimPrefix(name, "/")
}

// Run answers from f.cmds. The mkfs probe must be asked to build from a
// real directory holding a file, as image builds do.
func (f *fakeHost) Run(_ context.Context, argv ...string) ([]byte, error) {
	key := filepath.Base(argv[0])
	if len(argv) > 1 {
		key += " " + argv[1]
	}
	r, found := f.cmds[key]
	if !found || !f.bins[filepath.Base(argv[0])] {
		f.unexpected = append(f.unexpected, strings.Join(argv, " "))
		return nil, fmt.Errorf("%s: unexpected command", strings.Join(argv, " "))
	}
	if key == "mkfs.ext4 -q" && r.err == nil {
		if len(argv) != 7 || argv[3] != "-d" {
			return nil, fmt.Errorf("mkfs argv %q lacks -d DIR IMG SIZE", argv)
		}
		if ents, err := os.ReadDir(argv[4]); err != nil || len(ents) == 0 {
			return nil, errors.Join(errors.New("mkfs -d tree is empty or missing"), err)
		}
	}
	return []byte(r.out), r.err
}

var _ Runner = (*fakeHost)(nil)
