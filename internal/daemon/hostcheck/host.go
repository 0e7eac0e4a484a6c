package hostcheck

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// Runner runs a host command given as argv (never a shell string) and
// returns its stdout; the error carries the command and its stderr.
// banger's system.Runner satisfies it.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

// Host is every way the checks touch the machine other than running
// commands. Tests replace it; a nil field means the real implementation.
type Host struct {
	// ReadFile and Stat behave like os.ReadFile and os.Stat.
	ReadFile func(name string) ([]byte, error)
	Stat     func(name string) (fs.FileInfo, error)
	// LookPath behaves like exec.LookPath.
	LookPath func(file string) (string, error)
	// OpenDevice opens a device node read-write and closes it again.
	OpenDevice func(name string) error
	// ProbeKVM opens the KVM device, checks the API version, creates a
	// VM and runs one vCPU to a HLT instruction.
	ProbeKVM func(dev string) error
	// ProbeReflink clones a temporary file with FICLONE inside dir and
	// removes what it made.
	ProbeReflink func(dir string) error
	// Statfs describes the filesystem holding path.
	Statfs func(path string) (FSInfo, error)
	// ProbeNFTables asks the kernel's nf_tables, over netlink, for its
	// ruleset generation.
	ProbeNFTables func() error
}

// FSInfo is the part of statfs(2) the checks use.
type FSInfo struct {
	Magic int64  // f_type
	Avail uint64 // bytes available to unprivileged users
	Size  uint64 // total bytes
}

func (h Host) withDefaults() Host {
	if h.ReadFile == nil {
		h.ReadFile = os.ReadFile
	}
	if h.Stat == nil {
		h.Stat = os.Stat
	}
	if h.LookPath == nil {
		h.LookPath = exec.LookPath
	}
	if h.OpenDevice == nil {
		h.OpenDevice = openDevice
	}
	if h.ProbeKVM == nil {
		h.ProbeKVM = probeKVM
	}
	if h.ProbeReflink == nil {
		h.ProbeReflink = probeReflink
	}
	if h.Statfs == nil {
		h.Statfs = statfs
	}
	if h.ProbeNFTables == nil {
		h.ProbeNFTables = probeNFTables
	}
	return h
}

func openDevice(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func statfs(path string) (FSInfo, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return FSInfo{}, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	return FSInfo{
		Magic: int64(st.Type),
		Avail: st.Bavail * uint64(st.Bsize),
		Size:  st.Blocks * uint64(st.Bsize),
	}, nil
}

// execRunner is the Runner used when Options.Runner is nil.
type execRunner struct{}

var _ Runner = execRunner{}

func (execRunner) Run(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
	}
	return stdout.Bytes(), nil
}
