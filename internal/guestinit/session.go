package guestinit

import (
	"os"
	"strings"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// session is one SSH "session" channel: env and pty requests, then one
// exec or shell, signals and window changes while it runs.
//
// Everything but the running command's relays is touched only by the
// goroutine that reads the channel's requests (handleSession).
type session struct {
	srv   *Server
	ch    ssh.Channel
	login string // the SSH user name

	env     []string // from env requests, in order
	term    string
	winsize *pty.Winsize // non-nil once a PTY was requested
	started bool

	// Set when the command starts, before its relay goroutines.
	proc *process
	ptmx *os.File
}

type ptyRequestMsg struct {
	Term          string
	Cols, Rows    uint32
	Width, Height uint32
	Modes         string
}

type windowChangeMsg struct {
	Cols, Rows    uint32
	Width, Height uint32
}

func (s *Server) handleSession(login string, nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	sess := &session{srv: s, ch: ch, login: login}
	for req := range reqs {
		sess.handle(req)
	}
	// The client closed the channel or the connection dropped: hang up on
	// a command still running, as a terminal would.
	if sess.proc != nil {
		sess.proc.signal(unix.SIGHUP)
	}
	ch.Close()
}

func (sess *session) handle(req *ssh.Request) {
	ok := false
	switch req.Type {
	case "env":
		var m struct{ Name, Value string }
		if ssh.Unmarshal(req.Payload, &m) == nil && !sess.started && m.Name != "" && !strings.Contains(m.Name, "=") {
			sess.env = append(sess.env, m.Name+"="+m.Value)
			ok = true
		}
	case "pty-req":
		var m ptyRequestMsg
		if ssh.Unmarshal(req.Payload, &m) == nil && !sess.started {
			sess.term = m.Term
			sess.winsize = &pty.Winsize{Cols: clamp16(m.Cols), Rows: clamp16(m.Rows), X: clamp16(m.Width), Y: clamp16(m.Height)}
			ok = true
		}
	case "window-change":
		var m windowChangeMsg
		if ssh.Unmarshal(req.Payload, &m) == nil && sess.winsize != nil {
			*sess.winsize = pty.Winsize{Cols: clamp16(m.Cols), Rows: clamp16(m.Rows), X: clamp16(m.Width), Y: clamp16(m.Height)}
			if sess.ptmx != nil {
				_ = pty.Setsize(sess.ptmx, sess.winsize)
			}
			ok = true
		}
	case "signal":
		var m struct{ Signal string }
		if ssh.Unmarshal(req.Payload, &m) == nil && sess.proc != nil {
			if sig, known := parseSSHSignal(m.Signal); known {
				sess.proc.signal(sig)
				ok = true
			}
		}
	case "exec", "shell":
		var m struct{ Command string }
		if sess.started || (req.Type == "exec" && ssh.Unmarshal(req.Payload, &m) != nil) {
			break
		}
		sess.started = true
		// Start before replying, so that a signal request that follows
		// finds the process.
		job := sess.start(m.Command, req.Type == "shell")
		if req.WantReply {
			_ = req.Reply(true, nil)
		}
		go func() {
			defer sess.srv.recoverLog("session command")
			sess.finish(job.wait())
		}()
		return
	}
	if req.WantReply {
		_ = req.Reply(ok, nil)
	}
}

// finish reports how the command ended and closes the channel.
func (sess *session) finish(res exitResult) {
	_ = sess.ch.CloseWrite()
	if res.signal != "" {
		_, _ = sess.ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{res.signal, res.core, "", ""}))
	} else {
		_, _ = sess.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(res.code)}))
	}
	_ = sess.ch.Close()
	if res.after != nil {
		res.after()
	}
}

func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}
