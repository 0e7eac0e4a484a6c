package guestinit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func devNull(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func spawnSh(t *testing.T, r *Reaper, script string, stdout *os.File) *process {
	t.Helper()
	null := devNull(t)
	if stdout == nil {
		stdout = null
	}
	p, err := spawn(r, spawnSpec{
		path: "/bin/sh", argv: []string{"sh", "-c", script}, env: []string{"PATH=" + defaultPath},
		files: [3]*os.File{null, stdout, null},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReaperReapAll runs the PID-1 mode of the reaper in a child process
// of the test binary, made a child subreaper so orphans come back to it:
// wait4(-1) there must not steal statuses from os/exec here.
func TestReaperReapAll(t *testing.T) {
	if os.Getenv("GUESTINIT_REAPER_CHILD") == "1" {
		reapAllChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReaperReapAll$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GUESTINIT_REAPER_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "reap-all child: ok") {
		t.Fatalf("child test failed: %v\n%s", err, out)
	}
	t.Logf("child test:\n%s", out)
}

func reapAllChild(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	r := NewReaper(true, nil)
	defer r.Close()

	// Many short children, started concurrently, each status to its waiter.
	const n = 60
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := spawnSh(t, r, fmt.Sprintf("exit %d", i), nil)
			ws, ok := p.wait()
			if !ok || !ws.Exited() || ws.ExitStatus() != i {
				errs <- fmt.Errorf("child %d (pid %d): status %v ok=%v", i, p.pid, describeStatus(ws), ok)
			}
		}()
	}

	// An orphan: the child prints its background grandchild's PID and
	// exits; the grandchild comes back to us and must be reaped.
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := spawnSh(t, r, "sleep 0.3 & echo $!", wr)
	wr.Close()
	line, err := bufio.NewReader(rd).ReadString('\n')
	rd.Close()
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("grandchild pid %q", line)
	}
	if ws, ok := p.wait(); !ok || ws.ExitStatus() != 0 {
		t.Errorf("orphan's parent: %v %v", describeStatus(ws), ok)
	}
	// A killed child reports its signal.
	k := spawnSh(t, r, "exec sleep 30", nil)
	k.signal(unix.SIGKILL)
	if ws, ok := k.wait(); !ok || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Errorf("killed child: %v %v", describeStatus(ws), ok)
	}

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitGone(t, orphan, 10*time.Second)
	if z := zombieChildren(); len(z) > 0 {
		t.Errorf("zombie children left: %v", z)
	}
	if !t.Failed() {
		fmt.Println("reap-all child: ok")
	}
}

// zombieChildren lists our children in state Z.
func zombieChildren() []int {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if st, err := parseStat(data); err == nil && st.ppid == self && st.state == 'Z' {
			out = append(out, pid)
		}
	}
	return out
}

// TestReaperScopedLeavesOthersAlone: without ReapAll the reaper only waits
// for its own children, so os/exec keeps working beside it.
func TestReaperScopedLeavesOthersAlone(t *testing.T) {
	r := NewReaper(false, nil)
	defer r.Close()
	for i := 0; i < 5; i++ {
		p := spawnSh(t, r, "exit 4", nil)
		err := exec.Command("/bin/sh", "-c", "exit 5").Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 5 {
			t.Fatalf("os/exec beside the reaper: %v", err)
		}
		if ws, ok := p.wait(); !ok || ws.ExitStatus() != 4 {
			t.Fatalf("reaper child: %v %v", describeStatus(ws), ok)
		}
	}
	if z := zombieChildren(); len(z) > 0 {
		t.Errorf("zombie children left: %v", z)
	}
}

func TestReaperClose(t *testing.T) {
	r := NewReaper(false, nil)
	p := spawnSh(t, r, "exec sleep 30", nil)
	r.Close()
	if _, ok := p.wait(); ok {
		t.Error("a waiter got a status after Close")
	}
	_ = unix.Kill(p.pid, unix.SIGKILL)
	var ws unix.WaitStatus
	_, _ = unix.Wait4(p.pid, &ws, 0, nil)
	if _, _, err := r.Start(func() (int, error) { return 0, nil }); err == nil {
		t.Error("Start after Close succeeded")
	}
}
