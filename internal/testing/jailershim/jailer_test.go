package jailershim

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testing/fcshim"
)

// TestMain doubles as the exec file: run as "/...firecracker..." (the
// jailer's argv[0] for it), the test binary reports what it was given.
func TestMain(m *testing.M) {
	if strings.Contains(filepath.Base(os.Args[0]), "firecracker") {
		wd, _ := os.Getwd()
		json.NewEncoder(os.Stdout).Encode(map[string]any{
			"argv": os.Args, "env": os.Environ(), "uid": os.Getuid(), "gid": os.Getgid(),
			"groups": must(os.Getgroups()), "pid": os.Getpid(), "wd": wd,
		})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func must[T any](v T, _ error) T { return v }

func TestParseArgs(t *testing.T) {
	req := []string{"--id", "vm-1", "--exec-file", "/x", "--uid", "1", "--gid", "2"}
	tests := []struct {
		name string
		argv []string
		want string // error substring; "" for none
	}{
		{"minimal", req, ""},
		{"extra args", append(append([]string{}, req...), "--", "--api-sock", "/run/fc.sock"), ""},
		{"missing id", req[2:], "'id' required"},
		{"missing gid", req[:6], "'gid' required"},
		{"unknown flag", append([]string{"--frob", "x"}, req...), "'frob'"},
		{"equals form", append([]string{"--netns=/x"}, req...), "'netns=/x'"},
		{"twice", append([]string{"--id", "vm-2"}, req...), "more than once"},
		{"missing value", append(append([]string{}, req...), "--netns"), "requires a value"},
		{"value that is a flag", append([]string{"--netns", "--daemonize"}, req...), "requires a value"},
		{"positional", append([]string{"x"}, req...), "'x'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := parseArgs(tt.argv)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if a.get("chroot-base-dir") != "/srv/jailer" || a.get("cgroup-version") != "1" {
					t.Errorf("defaults: %v", a.values)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	a, _ := parseArgs(append(append([]string{}, req...), "--", "--api-sock", "/s"))
	if strings.Join(a.extra, " ") != "--api-sock /s" {
		t.Errorf("extra = %q", a.extra)
	}
	for _, flag := range []string{"--daemonize", "--new-pid-ns"} {
		a, _ := parseArgs(append([]string{flag}, req...))
		if name, _ := a.unsupported(); name != strings.TrimPrefix(flag, "--") {
			t.Errorf("%s is not refused as not emulated", flag)
		}
	}
}

func TestNewJailValidates(t *testing.T) {
	dir := t.TempDir()
	fc := filepath.Join(dir, "firecracker-v1")
	other := filepath.Join(dir, "vmm")
	for _, p := range []string{fc, other} {
		os.WriteFile(p, []byte("x"), 0o755)
	}
	link := filepath.Join(dir, "link-to-vmm-firecracker")
	os.Symlink(other, link)
	base := filepath.Join(dir, "base")
	os.Mkdir(base, 0o755)
	good := map[string]string{"id": "vm-1", "exec-file": fc, "uid": "10", "gid": "20", "chroot-base-dir": base, "cgroup-version": "1"}
	with := func(k, v string) args {
		a := args{values: map[string][]string{}}
		for kk, vv := range good {
			a.values[kk] = []string{vv}
		}
		a.values[k] = []string{v}
		return a
	}
	j, err := newJail(with("id", "vm-1"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(base, "firecracker-v1", "vm-1", "root"); j.chrootDir != want || j.uid != 10 || j.gid != 20 {
		t.Errorf("jail %+v; want root %s, 10:20", j, want)
	}
	for _, tt := range []struct{ key, val, want string }{
		{"id", "", "Invalid len"},
		{"id", strings.Repeat("a", 65), "Invalid len"},
		{"id", "../x", "Invalid char"},
		{"id", "vm_1", "Invalid char"},
		{"exec-file", other, "must contain \"firecracker\""},
		{"exec-file", link, "must contain \"firecracker\""}, // the name after resolving links counts
		{"exec-file", dir, "not a file"},
		{"exec-file", filepath.Join(dir, "nope-firecracker"), "canonicalize"},
		{"chroot-base-dir", filepath.Join(dir, "nope"), "canonicalize"},
		{"chroot-base-dir", fc, "not a directory"},
		{"uid", "-1", "Invalid uid"},
		{"gid", "4294967296", "Invalid gid"},
		{"cgroup-version", "3", "invalid cgroup version"},
	} {
		if _, err := newJail(with(tt.key, tt.val)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("--%s %q: %v; want an error mentioning %q", tt.key, tt.val, err, tt.want)
		}
	}
}

// TestJailerShimExecs runs the shim in a child process (this test binary,
// through TestJailerShimHelper) with a copy of this test binary as the
// exec file, and checks the jail it made and what the exec file received. It needs root (chown,
// mknod, setuid).
func TestJailerShimExecs(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("skipping: the jailer's chown, mknod and setuid need root")
	}
	// Nothing is chrooted: the jail's user must pass through the
	// directories above the jail (t.TempDir makes its parent 0700).
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fc := filepath.Join(dir, "firecracker")
	if err := copyFile(self, fc); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "jail")
	os.Mkdir(base, 0o711)
	cmd := exec.Command(self, "-test.run=^TestJailerShimHelper$")
	cmd.Env = append(os.Environ(), "JAILERSHIM_ARGS="+strings.Join([]string{
		"--id", "vm-7", "--exec-file", fc, "--uid", "4321", "--gid", "4322", "--chroot-base-dir", base,
		"--", "--api-sock", "/run/firecracker.socket"}, "\x1f"), "SECRET=leak")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("jailer shim: %v\n%s\n%s", err, out.String(), errb.String())
	}
	var got struct {
		Argv, Env []string
		UID, GID  int
		Groups    []int
		PID       int
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("exec file output %q: %v (stderr %s)", out.String(), err, errb.String())
	}
	root := filepath.Join(base, "firecracker", "vm-7", "root")
	if got.PID != cmd.Process.Pid {
		t.Errorf("exec file ran as pid %d, the jailer was %d: not exec'd in place", got.PID, cmd.Process.Pid)
	}
	if got.UID != 4321 || got.GID != 4322 || len(got.Groups) != 0 {
		t.Errorf("exec file ran as %d:%d groups %v; want 4321:4322 and no groups", got.UID, got.GID, got.Groups)
	}
	wantArgv := "/firecracker --id vm-7 --start-time-us"
	if a := strings.Join(got.Argv, " "); !strings.HasPrefix(a, wantArgv) || !strings.HasSuffix(a, "--api-sock /run/firecracker.socket") || !strings.Contains(a, "--parent-cpu-time-us") {
		t.Errorf("argv %q", got.Argv)
	}
	for _, kv := range got.Env {
		if !strings.HasPrefix(kv, "PATH=") && kv != fcshim.EnvChroot+"="+root {
			t.Errorf("the exec file got %q in its environment", kv)
		}
	}
	if pid, _ := os.ReadFile(filepath.Join(root, "firecracker.pid")); string(pid) != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("firecracker.pid holds %q", pid)
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
		rdev uint64
	}{
		{"", os.ModeDir | 0o700, 0},
		{"dev", os.ModeDir | 0o700, 0},
		{"dev/net", os.ModeDir | 0o700, 0},
		{"run", os.ModeDir | 0o700, 0},
		{"dev/net/tun", os.ModeDevice | os.ModeCharDevice | 0o600, 10<<8 | 200},
	} {
		st, err := os.Lstat(filepath.Join(root, p.path))
		if err != nil {
			t.Error(err)
			continue
		}
		s := st.Sys().(*syscall.Stat_t)
		if st.Mode() != p.mode || s.Uid != 4321 || s.Gid != 4322 || (p.rdev != 0 && s.Rdev != p.rdev) {
			t.Errorf("/%s: %v %d:%d rdev %#x; want %v 4321:4322", p.path, st.Mode(), s.Uid, s.Gid, s.Rdev, p.mode)
		}
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		if _, err := os.Lstat(filepath.Join(root, "dev/kvm")); err == nil {
			t.Error("dev/kvm made on a host without /dev/kvm")
		}
	}
	// A second run over the same jail fails (on the device nodes and the
	// pid file it made), as the jailer's does: the daemon must start from
	// a fresh jail.
	cmd = exec.Command(self, "-test.run=^TestJailerShimHelper$")
	cmd.Env = append(os.Environ(), "JAILERSHIM_ARGS="+strings.Join([]string{
		"--id", "vm-7", "--exec-file", fc, "--uid", "4321", "--gid", "4322", "--chroot-base-dir", base}, "\x1f"))
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "exists") {
		t.Errorf("second run over the same jail: %v\n%s", err, b)
	}
}

// TestJailerShimHelper is the jailer shim itself when JAILERSHIM_ARGS is
// set (TestJailerShimExecs runs it in a child process); it never returns
// on success, as the exec file replaces it.
func TestJailerShimHelper(t *testing.T) {
	argv := os.Getenv("JAILERSHIM_ARGS")
	if argv == "" {
		t.Skip("helper for TestJailerShimExecs")
	}
	os.Exit(Main(append([]string{"jailer"}, strings.Split(argv, "\x1f")...)))
}
