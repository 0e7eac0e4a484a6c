package e2e

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"banger/internal/testing/guestkernel"
)

// importBusybox imports scripts/base-image.sh's tree (Debian's
// busybox-static, downloaded by the script) as the image "busybox": the
// probe image has no shell.
func (e *env) importBusybox() {
	e.t.Helper()
	tree := filepath.Join(e.dir, "busybox")
	script := filepath.Join(guestkernel.RepoRoot(e.t), "scripts", "base-image.sh")
	if out, err := exec.Command("bash", script, tree).CombinedOutput(); err != nil {
		e.t.Fatalf("base-image.sh: %v\n%s", err, out)
	}
	e.ok("image", "import", tree, "--name", "busybox")
}

// ptyCLI is the CLI running on a pseudo-terminal, as in a user's terminal
// window: the terminal is its controlling one, so resizing it sends the
// CLI SIGWINCH.
type ptyCLI struct {
	t    *testing.T
	ptmx *os.File // the terminal emulator's end
	tty  *os.File // kept open here to read its settings
	// before is the terminal's settings before the CLI started.
	before unix.Termios
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
}

func (e *env) startInPTY(args ...string) *ptyCLI {
	e.t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 80, Rows: 24}); err != nil {
		e.t.Fatal(err)
	}
	p := &ptyCLI{t: e.t, ptmx: ptmx, tty: tty, out: &syncBuffer{}, done: make(chan struct{})}
	p.before = p.termios()
	p.cmd = exec.Command(e.bin, append(append([]string{}, e.args...), args...)...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = tty, tty, tty
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		io.Copy(p.out, ptmx)
	}()
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	e.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		ptmx.Close()
		tty.Close()
	})
	return p
}

func (p *ptyCLI) termios() unix.Termios {
	p.t.Helper()
	tio, err := unix.IoctlGetTermios(int(p.tty.Fd()), unix.TCGETS)
	if err != nil {
		p.t.Fatal(err)
	}
	return *tio
}

func (p *ptyCLI) typeIn(s string) {
	p.t.Helper()
	if _, err := p.ptmx.Write([]byte(s)); err != nil {
		p.t.Fatal(err)
	}
}

// waitFor waits until the terminal shows want after byte offset from.
func (p *ptyCLI) waitFor(from int, want string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if s := p.out.String(); len(s) >= from && strings.Contains(s[from:], want) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// exitCode waits for the CLI to exit.
func (p *ptyCLI) exitCode(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		p.t.Fatalf("the CLI did not exit within %v; the terminal shows:\n%q", d, p.out.String())
	}
	return -1
}

// TestShell drives `banger shell` as a user would, on a terminal: a shell
// prompt, arithmetic, a resize seen by the guest, the exit status, and the
// terminal's settings given back. Then the same shell without a terminal,
// and `banger run --rm` with no command. On each backend.
func TestShell(t *testing.T) {
	forEachBackend(t, testShell)
}

func testShell(t *testing.T, b backend) {
	e := newEnv(t, b.config)
	e.setupImages()
	e.importBusybox()
	e.ok("create", "--image", "busybox", "--name", "sh1")

	p := e.startInPTY("shell", "sh1")
	if !p.waitFor(0, "# ", 30*time.Second) {
		t.Fatalf("no root prompt; the terminal shows %q", p.out.String())
	}
	if raw := p.termios(); raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Errorf("the local terminal is not raw during the shell: lflag %#x", raw.Lflag)
	}
	mark := len(p.out.String())
	p.typeIn("echo $((6*7))\r")
	if !p.waitFor(mark, "42\r\n", 20*time.Second) {
		t.Errorf("echo $((6*7)) did not print 42; the terminal shows %q", p.out.String()[mark:])
	}
	// The pty is the CLI's controlling terminal: the kernel sends it
	// SIGWINCH, and the CLI passes the size on.
	if err := pty.Setsize(p.ptmx, &pty.Winsize{Cols: 111, Rows: 37}); err != nil {
		t.Fatal(err)
	}
	resized := false
	for i := 0; i < 10 && !resized; i++ {
		mark = len(p.out.String())
		p.typeIn("stty size\r")
		resized = p.waitFor(mark, "37 111\r\n", 2*time.Second)
	}
	if !resized {
		t.Errorf("stty size never showed 37 111 after the resize; the terminal shows %q", p.out.String())
	}
	p.typeIn("exit 3\r")
	if code := p.exitCode(20 * time.Second); code != 3 {
		t.Errorf("banger shell exited %d after `exit 3`; the terminal shows %q", code, p.out.String())
	}
	if after := p.termios(); after != p.before {
		t.Errorf("the terminal's settings were not restored:\nbefore %+v\nafter  %+v", p.before, after)
	}

	// Without a terminal the shell reads its commands from stdin.
	cmd := exec.Command(e.bin, append(append([]string{}, e.args...), "shell", "--workdir", "/tmp", "sh1")...)
	cmd.Stdin = strings.NewReader("echo $((6*7)); pwd; exit 5\n")
	out, _ := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != 5 || string(out) != "42\n/tmp\n" {
		t.Errorf("shell with stdin a pipe: exit %d, stdout %q; want 5, \"42\\n/tmp\\n\"", code, out)
	}
	e.ok("rm", "--force", "sh1")

	// run with no command opens the same shell; --rm removes the VM.
	p = e.startInPTY("run", "--rm", "--no-workspace", "--image", "busybox")
	if !p.waitFor(0, "# ", 90*time.Second) {
		t.Fatalf("run --rm: no root prompt; the terminal shows %q", p.out.String())
	}
	p.typeIn("exit 5\r")
	if code := p.exitCode(60 * time.Second); code != 5 {
		t.Errorf("run --rm with a shell exited %d, want 5; the terminal shows %q", code, p.out.String())
	}
	e.noVMs("after run --rm with a shell")
}

// noVMs fails the test unless `banger ls` is empty.
func (e *env) noVMs(when string) {
	e.t.Helper()
	if out := e.ok("ls", "-o", "json"); strings.TrimSpace(out) != "[]" {
		e.t.Errorf("%s, ls -o json = %s; want []", when, out)
	}
}

// TestRun: `banger run` creates a VM, runs a command with its exit status,
// and with --rm removes the VM also when interrupted during the command or
// the create.
func TestRun(t *testing.T) {
	requireTier3(t)
	e := newEnv(t, "vmm = \"qemu\"\n")
	e.setupImages()

	out, errs, code := e.run("run", "--rm", "--no-workspace", "--image", "probe", "--", "/bin/probe", "echo", "hi")
	if code != 0 || out != "hi\n" {
		t.Errorf("run --rm echo hi: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	e.noVMs("after run --rm")

	// Ctrl-C during the command reaches it as SIGINT; the VM goes anyway.
	intOut := &syncBuffer{}
	cmd := exec.Command(e.bin, append(append([]string{}, e.args...), "run", "--rm", "--no-workspace", "--image", "probe", "--", "/bin/probe", "wait-int")...)
	cmd.Stdout = intOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1800 && !strings.Contains(intOut.String(), "waiting"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 42 || !strings.Contains(intOut.String(), "got SIGINT") {
		t.Errorf("run --rm interrupted: exit %d, stdout %q; want 42 and the command seeing SIGINT", code, intOut.String())
	}
	e.noVMs("after run --rm interrupted during the command")

	// Ctrl-C during the create cancels it.
	createErr := &syncBuffer{}
	cmd = exec.Command(e.bin, append(append([]string{}, e.args...), "run", "--rm", "--no-workspace", "--image", "probe", "--name", "cut", "--", "/bin/probe", "echo", "never")...)
	cmd.Stderr = createErr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 600 && !strings.Contains(createErr.String(), "create cut"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(createErr.String(), "cancelling") {
		t.Errorf("run --rm interrupted during the create: exit %d, stderr %q; want 130 and a cancel", code, createErr.String())
	}
	e.noVMs("after run --rm interrupted during the create")

	// Without --rm the VM stays, and the exit status is the command's.
	if out, errs, code := e.run("run", "--no-workspace", "--image", "probe", "--name", "keep", "--", "/bin/probe", "exit", "4"); code != 4 {
		t.Errorf("run exit 4: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if m := e.show("keep"); m["state"] != "running" {
		t.Errorf("keep is %v after run without --rm", m["state"])
	}

	// A shell in an image without one says so, and gives the terminal back.
	p := e.startInPTY("shell", "keep")
	// The terminal's last output may still be on its way to p.out when
	// the CLI has exited: wait for it.
	if code := p.exitCode(30 * time.Second); code != 127 || !p.waitFor(0, "needs /bin/sh", 5*time.Second) {
		t.Errorf("shell in the probe image: exit %d, terminal %q; want 127 and a word on /bin/sh", code, p.out.String())
	}
	if after := p.termios(); after != p.before {
		t.Errorf("the terminal's settings were not restored:\nbefore %+v\nafter  %+v", p.before, after)
	}
	var vms []struct{ Name string }
	json.Unmarshal([]byte(e.ok("ls", "-o", "json")), &vms)
	if len(vms) != 1 || vms[0].Name != "keep" {
		t.Errorf("VMs at the end: %+v; want only keep", vms)
	}
}
