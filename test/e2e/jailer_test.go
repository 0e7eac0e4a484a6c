package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/testing/guestkernel"
)

// The uid and gid the jailed VMM runs as in TestFirecrackerUnderJailer:
// numbers no account should have, so nothing else runs as them.
const jailUID, jailGID = 64201, 64202

var (
	jailBuildOnce sync.Once
	jailBinDir    string
	jailBuildErr  error
)

// jailerBinaries builds the test-only jailer shim and the Firecracker shim
// named "firecracker" (the jailer takes only an exec file of that name),
// once, below the directory of binaries (which TestMain removes).
func jailerBinaries(t *testing.T) (jailer, firecracker string) {
	t.Helper()
	binaries(t)
	jailBuildOnce.Do(func() {
		jailBinDir = filepath.Join(binDir, "jailer")
		if jailBuildErr = os.Mkdir(jailBinDir, 0o755); jailBuildErr != nil {
			return
		}
		for out, pkg := range map[string]string{"jailer": "./internal/testing/jailershim/cmd/jailershim", "firecracker": "./internal/testing/fcshim/cmd/fcshim"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(jailBinDir, out), pkg)
			cmd.Dir = guestkernel.RepoRoot(t)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				jailBuildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if jailBuildErr != nil {
		t.Fatal(jailBuildErr)
	}
	return filepath.Join(jailBinDir, "jailer"), filepath.Join(jailBinDir, "firecracker")
}

// TestFirecrackerUnderJailer runs the daemon's Firecracker path under the
// jailer: the test-only jailer shim makes the jail, joins the namespace,
// drops to an unprivileged uid and gid and execs the Firecracker shim,
// which sees only the jail's files (it resolves every path inside the
// jail) and boots them under QEMU as that user. So the jail's contents,
// their owners, the chroot-relative paths, the socket's place and the TAP
// made for that user are all exercised; the chroot itself is not (see
// package jailershim).
func TestFirecrackerUnderJailer(t *testing.T) {
	requireTier3(t)
	jailer, fc := jailerBinaries(t)
	base := "" // set once the env's directory exists
	e := newEnvWith(t, func(dir string) string {
		base = filepath.Join(dir, "jail")
		return fmt.Sprintf("vmm = \"firecracker\"\nfirecracker_binary = %q\njailer_binary = %q\njailer_uid = %d\njailer_gid = %d\njailer_chroot_base = %q\n",
			fc, jailer, jailUID, jailGID, base)
	})
	e.setupImages()
	_, id, took := e.create("jailed")
	t.Logf("create under the jailer took %v", took.Round(10*time.Millisecond))
	jailDir := filepath.Join(base, "firecracker", id)
	root := filepath.Join(jailDir, "root")
	tap := "bgt" + id[:12]

	pid := e.handlesPID(id)
	checkJailed(t, e, id, root, pid, tap)
	if out := e.ok("exec", "jailed", "--", "/bin/probe", "echo", "from", "the", "jail"); out != "from the jail\n" {
		t.Errorf("exec printed %q", out)
	}
	e.ok("exec", "jailed", "--", "/bin/probe", "write", "/root/kept", "survives the jail")
	if logs := e.ok("logs", "jailed"); !strings.Contains(logs, "BANGER-READY") {
		t.Errorf("the serial console did not reach the VM's console log:\n%s", tail(logs, 10))
	}

	// stop: the VMM, its jail and its TAP go; the disk (hard-linked into
	// the jail) keeps what the guest wrote.
	e.ok("stop", "jailed")
	checkGone(t, e, jailDir, pid, tap)
	e.ok("start", "jailed")
	pid = e.handlesPID(id)
	checkJailed(t, e, id, root, pid, tap)
	if out := e.ok("exec", "jailed", "--", "/bin/probe", "read", "/root/kept"); out != "survives the jail" {
		t.Errorf("after stop and start the file reads %q", out)
	}

	// A daemon restart adopts the jailed Firecracker (its API socket is in
	// the jail); a stop after it still takes the jail with it.
	e.daemon.Process.Signal(syscall.SIGTERM)
	e.waitDaemon()
	e.startDaemon()
	if got := e.handlesPID(id); got != pid {
		t.Errorf("after a daemon restart the VMM is pid %d, want the same %d", got, pid)
	}
	if out := e.ok("exec", "jailed", "--", "/bin/probe", "read", "/root/kept"); out != "survives the jail" {
		t.Errorf("after a daemon restart the file reads %q", out)
	}
	e.ok("stop", "jailed")
	checkGone(t, e, jailDir, pid, tap)
	e.ok("start", "jailed")
	pid = e.handlesPID(id)

	// The jailer's chroot base changes under a running jailed VM (a new
	// config, a daemon restart): the VM's handles say where its jail is,
	// so the restart adopts it there and rm removes that jail.
	cfgPath := filepath.Join(e.dir, "config.toml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	newBase := base + "-new"
	os.MkdirAll(newBase, 0o755)
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), fmt.Sprintf("jailer_chroot_base = %q", base), fmt.Sprintf("jailer_chroot_base = %q", newBase), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.daemon.Process.Signal(syscall.SIGTERM)
	e.waitDaemon()
	e.startDaemon()
	if got := e.handlesPID(id); got != pid {
		t.Errorf("after a restart with another chroot base the VMM is pid %d, want the same %d", got, pid)
	}

	e.ok("rm", "--force", "jailed")
	checkGone(t, e, jailDir, pid, tap)
	if _, err := os.Stat(filepath.Join(e.dir, "root", "vms", id)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the VM's directory after rm: %v", err)
	}
	// Only the binary's directory, shared by every VM's jail, stays.
	if entries, err := os.ReadDir(filepath.Join(base, "firecracker")); err != nil || len(entries) != 0 {
		t.Errorf("the jail base after rm holds %v (%v)", entries, err)
	}
}

// newEnvWith is newEnv with extra configuration naming paths in a
// directory of the test's own (newEnv writes the config before it starts
// the daemon, so those paths must exist first), removed at the end.
func newEnvWith(t *testing.T, config func(dir string) string) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgj")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return newEnv(t, config(dir))
}

// checkJailed checks a running jailed VM: its jail, its VMM's user,
// argv and namespace, its API socket's place and its TAP's owner.
func checkJailed(t *testing.T, e *env, id, root string, pid int, tap string) {
	t.Helper()
	owner := func(p string) string {
		st, err := os.Lstat(p)
		if err != nil {
			return err.Error()
		}
		s := st.Sys().(*syscall.Stat_t)
		return fmt.Sprintf("%d:%d", s.Uid, s.Gid)
	}
	jailed := fmt.Sprintf("%d:%d", jailUID, jailGID)
	for _, p := range []string{"", "rootfs", "vmm.log", "run", "dev/net/tun"} {
		if got := owner(filepath.Join(root, p)); got != jailed {
			t.Errorf("jail /%s owned by %s, want %s", p, got, jailed)
		}
	}
	for _, p := range []string{"firecracker", "vmlinux"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("jail /%s: %v", p, err)
		}
	}
	if st, err := os.Lstat(filepath.Join(root, "run", "firecracker.socket")); err != nil || st.Mode().Type() != fs.ModeSocket {
		t.Errorf("the API socket is not at /run/firecracker.socket in the jail: %v", err)
	}
	// The disk is the VM's own file, hard-linked: what the guest writes
	// stays when the jail goes.
	var h struct {
		Disk string `json:"disk"`
	}
	data, _ := os.ReadFile(filepath.Join(e.dir, "root", "vms", id, "handles.json"))
	json.Unmarshal(data, &h)
	if a, b := inodeOf(filepath.Join(root, "rootfs")), inodeOf(h.Disk); a == 0 || a != b {
		t.Errorf("jail /rootfs (inode %d) is not the VM's disk %s (inode %d)", a, h.Disk, b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "firecracker.pid")); string(b) != strconv.Itoa(pid) {
		t.Errorf("the jail's firecracker.pid holds %q; the daemon tracks pid %d", b, pid)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !strings.Contains(string(status), fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", jailUID, jailUID, jailUID, jailUID)) {
		t.Errorf("pid %d does not run as uid %d:\n%s", pid, jailUID, status)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if argv := strings.Split(string(cmdline), "\x00"); argv[0] != "/firecracker" || !strings.Contains(string(cmdline), "\x00--id\x00"+id+"\x00") {
		t.Errorf("pid %d runs %q, want the jailer's exec of /firecracker --id %s", pid, argv, id)
	}
	if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil || ns != nsOf(t, e.netns) {
		t.Errorf("pid %d is in %s (%v), not in netns %s", pid, ns, err, e.netns)
	}
	out, err := exec.Command("ip", "netns", "exec", e.netns, "cat", "/sys/class/net/"+tap+"/owner", "/sys/class/net/"+tap+"/group").CombinedOutput()
	if err != nil || strings.Fields(string(out))[0] != strconv.Itoa(jailUID) || strings.Fields(string(out))[1] != strconv.Itoa(jailGID) {
		t.Errorf("TAP %s owner and group: %q (%v); want %d %d", tap, out, err, jailUID, jailGID)
	}
}

// checkGone checks that a stopped or removed jailed VM left no jail, no
// process and no TAP.
func checkGone(t *testing.T, e *env, jailDir string, pid int, tap string) {
	t.Helper()
	if _, err := os.Lstat(jailDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the jail %s is still there (%v)", jailDir, err)
	}
	if pidAlive(pid) {
		t.Errorf("the jailed VMM (pid %d) is still running", pid)
	}
	if out, _ := exec.Command("ip", "-n", e.netns, "-o", "link", "show").CombinedOutput(); strings.Contains(string(out), tap) {
		t.Errorf("TAP %s is still there:\n%s", tap, out)
	}
}

func inodeOf(p string) uint64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// nsOf is the namespace link (net:[inode]) of the named netns.
func nsOf(t *testing.T, name string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}
