package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonUpgradeKeepsGuestRunning: a real guest under QEMU (TCG) keeps
// running while the daemon stops (SIGTERM, as `systemctl stop` sends) and
// a new daemon starts from a copy of the binary at another path (a binary
// upgrade). The new daemon adopts the same QEMU process: exec works,
// stop and start work, and rm leaves nothing.
func TestDaemonUpgradeKeepsGuestRunning(t *testing.T) {
	requireTier3(t)
	e := newEnv(t, "vmm = \"qemu\"\n")
	e.setupImages()
	_, id, took := e.create("upgraded")
	t.Logf("create (QEMU, TCG) took %v", took.Round(10*time.Millisecond))
	pid := e.handlesPID(id)

	e.daemon.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { e.waitDaemon(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon did not exit 30s after SIGTERM:\n%s", tail(e.log.String(), 20))
	}
	if !pidAlive(pid) {
		t.Fatalf("the VMM (pid %d) died with the daemon", pid)
	}

	// The upgrade: the same binary, installed at another path.
	newBin := filepath.Join(e.dir, "upgrade", "banger")
	data, err := os.ReadFile(e.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(newBin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(newBin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	e.startDaemonFrom(newBin)
	if exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(e.daemon.Process.Pid), "exe")); err != nil || exe != newBin {
		t.Fatalf("the new daemon runs %q (%v), want %s", exe, err, newBin)
	}

	if m := e.show("upgraded"); m["state"] != "running" {
		t.Fatalf("after the upgrade the VM is %v (%v)", m["state"], m["state_reason"])
	}
	if got := e.handlesPID(id); got != pid || !pidAlive(pid) {
		t.Fatalf("after the upgrade the VMM is pid %d (alive %v), want the same pid %d", got, pidAlive(pid), pid)
	}
	if out := e.ok("exec", "upgraded", "--", "/bin/probe", "echo", "still", "here"); out != "still here\n" {
		t.Errorf("exec after the upgrade printed %q", out)
	}

	// The adopted VM is a VM like any other: stop ends that QEMU, start
	// boots a new one.
	e.ok("exec", "upgraded", "--", "/bin/probe", "write", "/root/kept", "across the upgrade")
	e.ok("stop", "upgraded")
	if !exitedWithin(pid, 5*time.Second) {
		t.Errorf("the adopted VMM (pid %d) survived stop: %s", pid, procState(pid))
	}
	e.ok("start", "upgraded")
	if got := e.handlesPID(id); got == pid {
		t.Errorf("start after stop reports the old VMM pid %d", pid)
	}
	if out := e.ok("exec", "upgraded", "--", "/bin/probe", "read", "/root/kept"); out != "across the upgrade" {
		t.Errorf("after stop and start the file reads %q", out)
	}
	newPID := e.handlesPID(id)

	e.ok("rm", "--force", "upgraded")
	if pidAlive(newPID) {
		t.Errorf("the VMM (pid %d) survived rm", newPID)
	}
	e.noVMs("after rm")
	if _, err := os.Stat(filepath.Join(e.dir, "root", "vms", id)); !os.IsNotExist(err) {
		t.Errorf("the VM's directory survived rm: %v", err)
	}
	// No TAP, VMM process, directory, IP allocation or ledger orphan.
	if got := e.checkConsistent("after rm", "upgraded"); got != "gone" {
		t.Errorf("after rm the VM is %s", got)
	}
}

// exitedWithin waits up to d for pid to exit. An adopted VMM is not the
// daemon's child (the old daemon's exit gave it to init), so between its
// exit and init reaping it, it is a zombie: that counts as exited.
func exitedWithin(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if st := procState(pid); st == "" || st == "Z" || st == "X" {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procState is pid's state letter from /proc (R, S, Z…), "" when it is gone.
func procState(pid int) string {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(data), ')')
	if f := strings.Fields(string(data[i+1:])); i >= 0 && len(f) > 0 {
		return f[0]
	}
	return ""
}
