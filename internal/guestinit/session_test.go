package guestinit

import (
	"bytes"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestSignalDelivered(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(EncodeArgv([]string{"sleep", "30"})); err != nil {
		t.Fatal(err)
	}
	if err := s.Signal(ssh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err := <-done:
		var ee *ssh.ExitError
		if !errors.As(err, &ee) || ee.Signal() != "TERM" {
			t.Errorf("Wait = %v, want exit-signal TERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sleep was not killed by SIGTERM")
	}
}

func TestDisconnectHangsUp(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(EncodeArgv([]string{"sh", "-c", "echo $$; exec sleep 30"})); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, err := out.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		t.Fatalf("pid: %q", buf[:n])
	}
	c.Close()
	waitGone(t, pid, 10*time.Second)
}

func TestBackgroundHolderDoesNotBlockExit(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.dial(t)
	start := time.Now()
	got := run(t, c, "sleep 3 & echo started", "")
	if got != (result{stdout: "started\n"}) {
		t.Errorf("got %+v", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("session took %v: it waited for the background sleep holding stdout", d)
	}
}

func TestPTY(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.dial(t)

	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm-256color", 40, 100, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	out, err := s.Output(EncodeArgv([]string{"sh", "-c", `tty; stty size; echo "$TERM"`}))
	if err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	if !regexp.MustCompile(`^/dev/pts/\d+\r\n40 100\r\nxterm-256color\r\n$`).Match(out) {
		t.Errorf("output %q, want the tty, 40 100, xterm-256color", out)
	}

	// window-change reaches the running command's terminal.
	s, err = c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RequestPty("xterm", 40, 100, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	var buf syncBuffer
	s.Stdout = &buf
	if err := s.Start(EncodeArgv([]string{"sh", "-c", "while :; do stty size; sleep 0.05; done"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &buf, "40 100")
	if err := s.WindowChange(50, 120); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &buf, "50 120")
	if err := s.Signal(ssh.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var ee *ssh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.Signal() != "KILL" {
		t.Errorf("Wait = %v, want exit-signal KILL", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitFor(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q never showed %q", b.String(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestShell(t *testing.T) {
	etc := t.TempDir()
	writeTestFile(t, etc+"/passwd", "root:x:0:0:root:/:/bin/sh\n")
	ts := startTestServer(t, func(c *ServerConfig) { c.etcDir = etc })
	c := ts.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out bytes.Buffer
	s.Stdin, s.Stdout = strings.NewReader("echo \"$0|$SHELL\"; exit 3\n"), &out
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	var ee *ssh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 3 {
		t.Errorf("Wait = %v, want exit status 3", err)
	}
	if out.String() != "-sh|/bin/sh\n" {
		t.Errorf("login shell said %q, want -sh|/bin/sh", out.String())
	}
}

func TestNoShellInImage(t *testing.T) {
	etc := t.TempDir()
	writeTestFile(t, etc+"/passwd", "root:x:0:0:root:/root:/no/such/bash\n")
	ts := startTestServer(t, func(c *ServerConfig) { c.etcDir, c.shell = etc, "/no/such/sh" })
	c := ts.dial(t)

	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	s.Stderr = &errb
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	var ee *ssh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 127 {
		t.Errorf("shell: Wait = %v, want exit status 127", err)
	}
	if !strings.Contains(errb.String(), "this image has no shell") {
		t.Errorf("shell: stderr %q", errb.String())
	}

	got := run(t, c, "echo hi", "")
	if got.code != 127 || !strings.Contains(got.stderr, "has no /no/such/sh to run a command string") {
		t.Errorf("plain command: %+v", got)
	}
	// An argv still works.
	if got := run(t, c, EncodeArgv([]string{"echo", "ok"}), ""); got != (result{stdout: "ok\n"}) {
		t.Errorf("argv: %+v", got)
	}
}

func TestLoginNameSelectsUser(t *testing.T) {
	etc := t.TempDir()
	writeTestFile(t, etc+"/passwd", "root:x:0:0:root:/root:/bin/sh\nme:x:"+strconv.Itoa(os.Geteuid())+":"+strconv.Itoa(os.Getegid())+"::/:/bin/sh\n")
	ts := startTestServer(t, func(c *ServerConfig) { c.etcDir = etc })
	c, err := ts.dialAs(t, "me", ts.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, c, `echo "$USER $HOME"`, ""); got != (result{stdout: "me /\n"}) {
		t.Errorf("as me: %+v", got)
	}
	c, err = ts.dialAs(t, "stranger", ts.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, c, `echo "$USER"`, ""); got.stdout != "root\n" && os.Geteuid() == 0 {
		t.Errorf("an unknown login name should run as the init's user: %+v", got)
	}
}
