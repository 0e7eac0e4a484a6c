package fakevmm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Version is the QEMU version the fake claims (--version, QMP greeting).
const Version = "7.2.22"

// Main runs the fake with args (args[0] is the program) and returns its
// exit status: 0 after a guest poweroff, QMP quit or SIGTERM/SIGINT/SIGHUP,
// 1 when it refuses its command line or cannot set up.
func Main(args []string) int {
	return run(args, os.Environ(), os.Stderr)
}

func run(args, environ []string, stderr io.Writer) int {
	prog := "fakevmm"
	if len(args) > 0 {
		prog = filepath.Base(args[0])
		args = args[1:]
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	switch strings.Join(args, " ") {
	case "--version", "-version":
		fmt.Fprintf(os.Stdout, "QEMU emulator version %s (fakevmm: banger's test-only QEMU stand-in)\n", Version)
		return 0
	case "-M help", "-machine help":
		fmt.Fprintf(os.Stdout, "Supported machines are:\nmicrovm              microvm (i386)\n")
		return 0
	}
	cfg, err := parseArgv(args)
	if err != nil {
		return fail(err)
	}
	knobs, err := readKnobs(environ, cfg.ID)
	if err != nil {
		return fail(err)
	}
	// Never touch the host's network namespace: the fake adds addresses to
	// lo, which only a test's own namespace may get.
	if err := checkOwnNetNS(); err != nil {
		return fail(err)
	}
	v := &vm{cfg: cfg, knobs: knobs, prog: prog, stderr: stderr, start: time.Now(), exitc: make(chan exitReq, 1)}
	defer v.release()
	if err := v.setup(); err != nil {
		return fail(err)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	defer signal.Stop(sigs)
	go v.serveQMP()
	if !knobs.NoBoot {
		go v.boot()
	}
	var req exitReq
	select {
	case req = <-v.exitc:
	case sig := <-sigs:
		fmt.Fprintf(stderr, "%s: terminating on signal %d\n", prog, sig.(unix.Signal))
		req = exitReq{reason: "host-signal"}
	}
	v.stopGuest()
	v.emit("SHUTDOWN", map[string]any{"guest": req.guest, "reason": req.reason})
	return req.code
}

// exitReq ends the run: the exit status and the SHUTDOWN event's data.
type exitReq struct {
	code   int
	guest  bool
	reason string
}

// vm is one run of the fake.
type vm struct {
	cfg    Config
	knobs  Knobs
	prog   string
	stderr io.Writer
	start  time.Time
	exitc  chan exitReq // the first request wins

	files  []*os.File // kernel, initrd, disks (locked), TAPs: held until exit
	conMu  sync.Mutex
	con    *os.File // guarded by conMu; nil without a console
	qmpL   *net.UnixListener
	qmpMu  sync.Mutex
	qmpC   net.Conn // guarded by qmpMu: the client being served
	qmpNeg bool     // guarded by qmpMu: qmpC has negotiated capabilities

	pidWritten bool // setup wrote the pid file

	mu       sync.Mutex
	stopped  bool   // guarded by mu: the guest is off (or going)
	booted   bool   // guarded by mu: the init announced its host key
	addrOnLo bool   // guarded by mu: the guest address may be on lo
	sshClose func() // guarded by mu: stops the SSH server
}

// requestExit asks Main to end the run; later requests are dropped.
func (v *vm) requestExit(r exitReq) {
	select {
	case v.exitc <- r:
	default:
	}
}

// initNetInode is the initial network namespace's inode number on kernels
// that give it a fixed one (PROC_NET_INIT_INO); dynamically numbered
// namespaces start above it.
const initNetInode = 0xEFFFFFF9

// checkOwnNetNS fails unless this process runs in a network namespace that
// is not the host's: not PID 1's (compared by inode), nor the kernel's
// initial one. Where PID 1's namespace cannot be read (a sandbox without
// ptrace access to PID 1), the namespace must be one `ip netns add` made:
// bind-mounted under /run/netns.
func checkOwnNetNS() error {
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return fmt.Errorf("refusing to run: cannot tell my network namespace: %w", err)
	}
	const refuse = "refusing to run in PID 1's network namespace: fakevmm adds the guest's address to lo and must run in a test's own namespace (set the daemon's VM netns, so qemu.Start runs it under nsenter)"
	if self.Ino == initNetInode {
		return errors.New(refuse)
	}
	var init unix.Stat_t
	err := unix.Stat("/proc/1/ns/net", &init)
	if err == nil {
		if self.Ino == init.Ino && self.Dev == init.Dev {
			return errors.New(refuse)
		}
		return nil
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil && st.Ino == self.Ino && st.Dev == self.Dev {
			return nil
		}
	}
	return fmt.Errorf("refusing to run: PID 1's network namespace cannot be read (%v) and mine is none of /run/netns: fakevmm must run in a test's own namespace", err)
}

// setup does what QEMU does before the guest runs: open the kernel,
// initrd, disks (locked) and TAPs, truncate the console file, serve the
// QMP socket and write the pid file.
func (v *vm) setup() error {
	for what, path := range map[string]string{"kernel": v.cfg.Kernel, "initrd": v.cfg.Initrd} {
		if path == "" {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("could not open %s file '%s': %w", what, path, unwrapPath(err))
		}
		v.files = append(v.files, f)
	}
	for _, d := range v.cfg.Disks {
		f, err := openDisk(d)
		if err != nil {
			return err
		}
		v.files = append(v.files, f)
	}
	for i, n := range v.cfg.NICs {
		f, err := openTAP(n.TAP)
		if err != nil {
			return fmt.Errorf("-netdev id=net%d: %w", i, err)
		}
		v.files = append(v.files, f)
	}
	if v.cfg.Console != "" {
		// QEMU's file chardev truncates unless append=on.
		f, err := os.OpenFile(v.cfg.Console, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
		if err != nil {
			return fmt.Errorf("-chardev path=%s: %w", v.cfg.Console, unwrapPath(err))
		}
		v.con = f
	}
	// QEMU replaces a stale socket file.
	if err := os.Remove(v.cfg.QMPSocket); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("-chardev path=%s: %w", v.cfg.QMPSocket, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: v.cfg.QMPSocket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("-chardev path=%s: Failed to bind socket: %w", v.cfg.QMPSocket, err)
	}
	v.qmpL = l
	if v.cfg.PIDFile != "" {
		if err := os.WriteFile(v.cfg.PIDFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o600); err != nil {
			return fmt.Errorf("cannot create PID file: %w", err)
		}
		v.pidWritten = true
	}
	v.consolef("[    0.000000] Linux version 6.1.0-fakevmm (banger test-only VMM, VM %s)\n", v.cfg.ID)
	v.consolef("[    0.000000] Command line: %s\n", v.cfg.Cmdline)
	return nil
}

// release frees what setup took, as the process's exit would.
func (v *vm) release() {
	v.qmpMu.Lock()
	if v.qmpC != nil {
		v.qmpC.Close()
	}
	v.qmpMu.Unlock()
	if v.qmpL != nil {
		v.qmpL.Close() // removes the socket file
	}
	if v.pidWritten {
		os.Remove(v.cfg.PIDFile)
	}
	v.conMu.Lock()
	if v.con != nil {
		v.con.Close()
		v.con = nil
	}
	v.conMu.Unlock()
	for _, f := range v.files {
		f.Close()
	}
}

// consolef writes to the serial console (dropped for -serial null).
func (v *vm) consolef(format string, args ...any) {
	v.conMu.Lock()
	defer v.conMu.Unlock()
	if v.con != nil {
		fmt.Fprintf(v.con, format, args...)
	}
}

// diskLockByte is the byte the fake locks in each disk image (with an OFD
// lock: exclusive for a read-write disk, shared for a read-only one), so
// two fakes given one writable image conflict as two QEMUs would. It is
// not QEMU's own lock layout.
const diskLockByte = 100

func openDisk(d Disk) (*os.File, error) {
	flag, lockType, perm := os.O_RDWR, int16(unix.F_WRLCK), "write"
	if d.ReadOnly {
		flag, lockType, perm = os.O_RDONLY, unix.F_RDLCK, "consistent read"
	}
	f, err := os.OpenFile(d.Path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("-drive id=%s,file=%s: Could not open '%s': %w", d.ID, d.Path, d.Path, unwrapPath(err))
	}
	lk := unix.Flock_t{Type: lockType, Whence: 0, Start: diskLockByte, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		f.Close()
		return nil, fmt.Errorf("-drive id=%s,file=%s: Failed to get \"%s\" lock\nIs another process using the image [%s]?", d.ID, d.Path, perm, d.Path)
	}
	return f, nil
}

// openTAP attaches to the existing TAP name as QEMU does (TUNSETIFF with
// IFF_TAP|IFF_NO_PI on /dev/net/tun) and returns the open queue. Unlike
// QEMU it never creates a missing TAP.
func openTAP(name string) (*os.File, error) {
	if _, err := net.InterfaceByName(name); err != nil {
		return nil, fmt.Errorf("could not open TAP %s: no such device in this network namespace (fakevmm does not create TAPs, QEMU would): %w", name, err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("could not open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TAP %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("could not configure /dev/net/tun (%s): %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

// unwrapPath drops the *PathError's path, which the message already has.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
