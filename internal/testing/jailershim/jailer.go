package jailershim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"banger/internal/testing/fcshim"
)

// jail is what a valid command line asks for.
type jail struct {
	id        string
	execFile  string // resolved
	execName  string
	chrootDir string // <base>/<execName>/<id>/root, base resolved
	uid, gid  int
	netns     string
	extra     []string
}

// Main is the jailershim binary: the jailer's command line in argv
// (argv[0] is the program). On success it never returns: the exec file
// replaces it. Otherwise it returns the exit status (1, as the jailer).
func Main(argv []string) int {
	start := time.Now()
	a, err := parseArgs(argv[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "Arguments parsing error: %v \n\nFor more information try --help.\n", err)
		return 1
	}
	switch {
	case a.has("help"):
		fmt.Print(usage())
		return 0
	case a.has("version"):
		fmt.Println("Jailer v1.16.1 (jailershim, a test-only stand-in)")
		return 0
	}
	if name, why := a.unsupported(); name != "" {
		fmt.Fprintf(os.Stderr, "Jailer error: jailershim (a test-only stand-in for the jailer) does not emulate --%s: %s\n", name, why)
		return 1
	}
	j, err := newJail(a)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Jailer error: %v\n", err)
		return 1
	}
	// setns applies to the calling thread, which must be the one that
	// execs: the new program gets that thread's namespaces.
	runtime.LockOSThread()
	err = j.run(start)
	fmt.Fprintf(os.Stderr, "Jailer error: %v\n", err)
	return 1
}

// validInstanceID is the jailer's validate_instance_id: 1-64
// alphanumerics and '-'.
func validInstanceID(id string) error {
	if n := len(id); n < 1 || n > 64 {
		return fmt.Errorf("Invalid instance ID: Invalid len (%d);  the length must be between 1 and 64", n)
	}
	for i, c := range id {
		if c != '-' && !unicode.IsLetter(c) && !unicode.IsNumber(c) {
			return fmt.Errorf("Invalid instance ID: Invalid char (%c) at position %d", c, i)
		}
	}
	return nil
}

// newJail validates the arguments as Env::new does.
func newJail(a args) (*jail, error) {
	j := &jail{id: a.get("id"), netns: a.get("netns"), extra: a.extra}
	if err := validInstanceID(j.id); err != nil {
		return nil, err
	}
	exec, err := canonical(a.get("exec-file"))
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(exec); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a file", exec)
	}
	j.execFile, j.execName = exec, filepath.Base(exec)
	if !strings.Contains(j.execName, "firecracker") {
		return nil, fmt.Errorf("Invalid filename. The filename of `--exec-file` option must contain \"firecracker\": %s", j.execName)
	}
	base, err := canonical(a.get("chroot-base-dir"))
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", base)
	}
	j.chrootDir = filepath.Join(base, j.execName, j.id, "root")
	for _, f := range []struct {
		name string
		dst  *int
	}{{"uid", &j.uid}, {"gid", &j.gid}} {
		v, err := strconv.ParseUint(a.get(f.name), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("Invalid %s: %s", f.name, a.get(f.name))
		}
		*f.dst = int(v)
	}
	if v := a.get("cgroup-version"); v != "1" && v != "2" {
		return nil, fmt.Errorf("%s is an invalid cgroup version specifier", v)
	}
	return j, nil
}

// canonical is Rust's canonicalize: absolute, symbolic links resolved,
// and the path must exist.
func canonical(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("Failed to canonicalize path %s: %v", p, err)
	}
	return abs, nil
}

// run makes the jail and execs the exec file; it returns only on error.
func (j *jail) run(start time.Time) error {
	if err := os.MkdirAll(j.chrootDir, 0o755); err != nil {
		return fmt.Errorf("Failed to create directory %s: %v", j.chrootDir, err)
	}
	inJail := filepath.Join(j.chrootDir, j.execName)
	if err := copyFile(j.execFile, inJail); err != nil {
		return fmt.Errorf("Failed to copy %s to %s: %v", j.execFile, inJail, err)
	}
	if j.netns != "" {
		f, err := os.Open(j.netns)
		if err != nil {
			return fmt.Errorf("Failed to open file %s: %v", j.netns, err)
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			return fmt.Errorf("Failed to join network namespace: netns: %v", err)
		}
	}
	// Where the jailer chroots, the shim works in the jail's root by its
	// host path (see the package doc).
	for _, d := range []string{"", "dev", "dev/net", "run"} {
		p := filepath.Join(j.chrootDir, d)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("Failed to create directory %s: %v", p, err)
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return fmt.Errorf("Failed to change permissions on %s: %v", p, err)
		}
		if err := os.Chown(p, j.uid, j.gid); err != nil {
			return fmt.Errorf("Failed to change owner for %s: %v", p, err)
		}
	}
	devs := []struct {
		path         string
		major, minor uint32
		optional     bool
	}{
		{"dev/net/tun", 10, 200, false},
		{"dev/kvm", 10, 232, !exists("/dev/kvm")},
		{"dev/urandom", 1, 9, true},
	}
	for _, d := range devs {
		if d.path == "dev/kvm" && d.optional {
			continue // no KVM on this host: see the package doc
		}
		p := filepath.Join(j.chrootDir, d.path)
		err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(d.major, d.minor)))
		if err == nil {
			err = os.Chown(p, j.uid, j.gid)
		}
		if err != nil && !d.optional {
			return fmt.Errorf("Failed to create /%s via mknod inside the jail: %v", d.path, err)
		}
		if err != nil {
			fmt.Printf("Warning! Could not create /%s device inside jailer: %v.\n", d.path, err)
		}
	}
	pidFile := inJail + ".pid"
	f, err := os.OpenFile(pidFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("Failed to open file %s: %v", pidFile, err)
	}
	_, err = fmt.Fprint(f, os.Getpid())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("Failed to write to %s: %v", pidFile, err)
	}

	var cpu unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &cpu)
	cpuUS := cpu.Utime.Nano()/1000 + cpu.Stime.Nano()/1000
	argv := append([]string{"/" + j.execName,
		"--id", j.id,
		"--start-time-us", strconv.FormatInt(start.UnixMicro(), 10),
		"--start-time-cpu-us", strconv.FormatInt(cpuUS, 10),
		"--parent-cpu-time-us", strconv.FormatInt(cpuUS, 10),
	}, j.extra...)
	env := []string{fcshim.EnvChroot + "=" + j.chrootDir}
	if path, ok := os.LookupEnv("PATH"); ok {
		env = append(env, "PATH="+path)
	}
	// Only stdin, stdout and stderr go to the exec file.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("closing inherited descriptors: %v", err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %v", err)
	}
	if err := syscall.Setgid(j.gid); err != nil {
		return fmt.Errorf("setgid %d: %v", j.gid, err)
	}
	if err := syscall.Setuid(j.uid); err != nil {
		return fmt.Errorf("setuid %d: %v", j.uid, err)
	}
	err = syscall.Exec(inJail, argv, env)
	return fmt.Errorf("Failed to exec into Firecracker: %v", err)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// copyFile is Rust's fs::copy: contents and permission bits.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(st.Mode().Perm()); err != nil {
		out.Close()
		return err
	}
	return errors.Join(out.Close())
}
