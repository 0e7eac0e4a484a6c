package guestinit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// drainGrace is how long output is still relayed after the command exited
// while nothing arrives: a background process may hold the pipe or the
// terminal open forever, and the session must end anyway.
const drainGrace = 200 * time.Millisecond

// exitResult is how a command ended, as the client will hear it.
type exitResult struct {
	code   int
	signal string // SSH signal name when killed by a signal
	core   bool
	after  func() // run once the client has been told (poweroff)
}

// job is a started command.
type job struct {
	wait func() exitResult // blocks until it ended and its output is relayed
}

// start prepares and starts the session's command. A command that cannot
// start still yields a job, which reports why on stderr.
func (sess *session) start(cmdline string, shell bool) *job {
	c, err := sess.prepare(cmdline, shell)
	if err == nil {
		var j *job
		switch {
		case c.builtin:
			return sess.startBuiltin(c)
		case sess.winsize != nil:
			j, err = sess.startPTY(c)
		default:
			j, err = sess.startPipes(c)
		}
		if err == nil {
			return j
		}
		err = &startError{exitCodeFor(err), fmt.Errorf("%s: %w", c.argv[0], err)}
	}
	var se *startError
	if !errors.As(err, &se) {
		se = &startError{1, err}
	}
	return &job{wait: func() exitResult {
		fmt.Fprintf(sess.ch.Stderr(), "%s%v\n", logPrefix, se.err)
		return exitResult{code: se.code}
	}}
}

// startPipes runs c with stdin, stdout and stderr on pipes to the channel.
func (sess *session) startPipes(c *command) (*job, error) {
	var fds [6]*os.File // stdin r/w, stdout r/w, stderr r/w
	closeAll := func() {
		for _, f := range fds {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll()
			return nil, err
		}
		fds[i], fds[i+1] = r, w
	}
	stdinR, stdinW, stdoutR, stdoutW, stderrR, stderrW := fds[0], fds[1], fds[2], fds[3], fds[4], fds[5]
	p, err := spawn(sess.srv.cfg.Reaper, spawnSpec{
		path: c.path, argv: c.argv, env: c.env, dir: c.dir, cred: c.cred,
		files: [3]*os.File{stdinR, stdoutW, stderrW},
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	stdinR.Close()
	stdoutW.Close()
	stderrW.Close()
	sess.proc = p

	go func() {
		_, _ = io.Copy(stdinW, sess.ch)
		stdinW.Close()
	}()
	exited := make(chan struct{})
	var relays sync.WaitGroup
	relays.Add(2)
	go func() { defer relays.Done(); relay(sess.ch, stdoutR, exited) }()
	go func() { defer relays.Done(); relay(sess.ch.Stderr(), stderrR, exited) }()
	return &job{wait: func() exitResult {
		ws, ok := p.wait()
		close(exited)
		graceDeadline(stdoutR, stderrR)
		relays.Wait()
		stdoutR.Close()
		stderrR.Close()
		stdinW.Close()
		return resultOf(ws, ok)
	}}, nil
}

// startPTY runs c on a new pseudo-terminal, its controlling terminal.
func (sess *session) startPTY(c *command) (*job, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, err
	}
	_ = pty.Setsize(ptmx, sess.winsize)
	p, err := spawn(sess.srv.cfg.Reaper, spawnSpec{
		path: c.path, argv: c.argv, env: c.env, dir: c.dir, cred: c.cred,
		files: [3]*os.File{tty, tty, tty}, tty: true,
	})
	tty.Close()
	if err != nil {
		ptmx.Close()
		return nil, err
	}
	sess.proc, sess.ptmx = p, ptmx

	go func() { _, _ = io.Copy(ptmx, sess.ch) }()
	exited := make(chan struct{})
	relayed := make(chan struct{})
	go func() { defer close(relayed); relay(sess.ch, ptmx, exited) }()
	return &job{wait: func() exitResult {
		ws, ok := p.wait()
		close(exited)
		graceDeadline(ptmx)
		<-relayed
		ptmx.Close()
		return resultOf(ws, ok)
	}}, nil
}

// relay copies src to dst until src ends (EOF; EIO for a terminal whose
// last user closed it) or, once exited is closed, stays quiet for
// drainGrace.
func relay(dst io.Writer, src *os.File, exited <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		select {
		case <-exited:
			graceDeadline(src)
		default:
		}
	}
}

func graceDeadline(files ...*os.File) {
	for _, f := range files {
		_ = f.SetReadDeadline(time.Now().Add(drainGrace))
	}
}

// resultOf turns a wait status into what the client hears.
func resultOf(ws unix.WaitStatus, ok bool) exitResult {
	switch {
	case !ok:
		return exitResult{code: 255}
	case ws.Signaled():
		return exitResult{signal: sshSignalName(ws.Signal()), core: ws.CoreDump()}
	default:
		return exitResult{code: ws.ExitStatus()}
	}
}
