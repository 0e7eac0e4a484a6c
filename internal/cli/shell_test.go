package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"banger/internal/rpc"
)

// lockedBuffer is a bytes.Buffer safe to read while another goroutine
// writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveFake serves h on a unix socket until the test ends and returns the
// socket's path.
func serveFake(t *testing.T, h rpc.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(shortDir(t), "fake.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &rpc.Server{Handler: h}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		// Let the server see the CLI's disconnect first: a graceful
		// Shutdown stops reading and would wait for a call whose client
		// already left.
		for deadline := time.Now().Add(5 * time.Second); srv.ConnCount() > 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return sock
}

func dialFake(t *testing.T, h rpc.HandlerFunc) *rpc.Client {
	t.Helper()
	c, err := rpc.Dial(context.Background(), serveFake(t, h))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type sessionResult struct {
	code int
	err  error
}

// startTTYSession runs ttySession on a new pty (80x24) against h and
// returns the pty's master, the terminal's settings before the session,
// what the session writes, and its result once it ends.
func startTTYSession(t *testing.T, h rpc.HandlerFunc) (ptmx, tty *os.File, before unix.Termios, stdout, stderr *lockedBuffer, done <-chan sessionResult) {
	t.Helper()
	ptmx, tty = openPTY(t)
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 80, Rows: 24}); err != nil {
		t.Fatal(err)
	}
	before = termios(t, tty)
	c := dialFake(t, h)
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{}
	a := &app{stdout: stdout, stderr: stderr}
	ch := make(chan sessionResult, 1)
	go func() {
		code, err := a.ttySession(c, tty, rpc.VMExecParams{VM: "dev", Argv: shellArgv}, "dev")
		ch <- sessionResult{code, err}
	}()
	return ptmx, tty, before, stdout, stderr, ch
}

func waitSession(t *testing.T, done <-chan sessionResult) sessionResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
	}
	return sessionResult{}
}

// TestShellTTYSession: the session asks for a terminal of the local size,
// puts the local terminal in raw mode (Ctrl-C is a byte for the guest, no
// newline needed), sends the new size on SIGWINCH, returns the exit status
// and restores the terminal.
func TestShellTTYSession(t *testing.T) {
	t.Setenv("TERM", "xterm-test")
	params := make(chan rpc.VMExecParams, 1)
	var mu sync.Mutex
	var stdin []byte
	var resized rpc.ExecResize
	h := func(ctx context.Context, call *rpc.Call) (any, error) {
		var p rpc.VMExecParams
		if err := call.Bind(&p); err != nil {
			return nil, err
		}
		params <- p
		call.Send(rpc.EventStdout, []byte("ready\r\n"))
		for {
			select {
			case ev := <-call.Input():
				mu.Lock()
				switch ev.Kind {
				case rpc.InputStdin:
					var b []byte
					json.Unmarshal(ev.Data, &b)
					stdin = append(stdin, b...)
				case rpc.InputResize:
					json.Unmarshal(ev.Data, &resized)
				}
				finished := bytes.HasSuffix(stdin, []byte{3}) && resized.Cols == 120
				mu.Unlock()
				if finished {
					return rpc.VMExecResult{ExitCode: 3}, nil
				}
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	ptmx, tty, before, stdout, _, done := startTTYSession(t, h)
	waitUntil(t, "the session's first output", func() bool { return strings.Contains(stdout.String(), "ready") })
	if tio := termios(t, tty); tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Errorf("the terminal is not raw during the session: lflag %#x", tio.Lflag)
	}
	if _, err := ptmx.Write([]byte("abc\x03")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the keys to reach the guest", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return bytes.HasSuffix(stdin, []byte{3})
	})
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 120, Rows: 40}); err != nil {
		t.Fatal(err)
	}
	// The pty is not this process's controlling terminal: send the
	// SIGWINCH the kernel would.
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
	r := waitSession(t, done)
	if r.err != nil || r.code != 3 {
		t.Errorf("ttySession = %d, %v; want 3, nil", r.code, r.err)
	}
	p := <-params
	if !p.TTY || p.Cols != 80 || p.Rows != 24 || p.Term != "xterm-test" || strings.Join(p.Argv, " ") != strings.Join(shellArgv, " ") {
		t.Errorf("vm.exec params %+v; want a TTY of 80x24, TERM xterm-test, argv %q", p, shellArgv)
	}
	mu.Lock()
	if string(stdin) != "abc\x03" || resized != (rpc.ExecResize{Cols: 120, Rows: 40}) {
		t.Errorf("the guest got stdin %q and resize %+v; want \"abc\\x03\" and 120x40", stdin, resized)
	}
	mu.Unlock()
	if after := termios(t, tty); after != before {
		t.Errorf("the terminal was not restored:\nbefore %+v\nafter  %+v", before, after)
	}
}

// TestShellNoShellInImage: the guest init's complaint (stderr, the only
// stderr with a terminal) is shown with a hint once the terminal is back.
func TestShellNoShellInImage(t *testing.T) {
	h := func(ctx context.Context, call *rpc.Call) (any, error) {
		call.Send(rpc.EventStderr, []byte("banger-init: /bin/sh: command not found\n"))
		return rpc.VMExecResult{ExitCode: 127}, nil
	}
	_, tty, before, _, stderr, done := startTTYSession(t, h)
	r := waitSession(t, done)
	if r.err != nil || r.code != 127 {
		t.Errorf("ttySession = %d, %v; want 127, nil", r.code, r.err)
	}
	for _, want := range []string{"the shell did not start", "/bin/sh: command not found", "needs /bin/sh", "banger exec dev"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q does not contain %q", stderr, want)
		}
	}
	if after := termios(t, tty); after != before {
		t.Error("the terminal was not restored")
	}
}

// TestShellHangUp: SIGHUP ends the session (the daemon's call is
// cancelled), restores the terminal, and exits 128+1.
func TestShellHangUp(t *testing.T) {
	cancelled := make(chan struct{})
	h := func(ctx context.Context, call *rpc.Call) (any, error) {
		call.Send(rpc.EventStdout, []byte("ready\r\n"))
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}
	_, tty, before, stdout, stderr, done := startTTYSession(t, h)
	waitUntil(t, "the session's first output", func() bool { return strings.Contains(stdout.String(), "ready") })
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	r := waitSession(t, done)
	if r.err != nil || r.code != 129 {
		t.Errorf("ttySession = %d, %v; want 129, nil", r.code, r.err)
	}
	if !strings.Contains(stderr.String(), "hangup") {
		t.Errorf("stderr %q does not say the session hung up", stderr)
	}
	if after := termios(t, tty); after != before {
		t.Error("the terminal was not restored")
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the daemon's call was not cancelled")
	}
}
