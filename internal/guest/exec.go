package guest

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/ssh"
)

// Command is one command to run in the guest.
type Command struct {
	// Command is the SSH exec string; use guestinit.EncodeArgv for an
	// exact argv the guest runs without a shell.
	Command string
	Env     map[string]string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	// TTY asks for a pseudo-terminal of the given size.
	TTY        bool
	Term       string
	Cols, Rows int
}

// Session is a running command.
type Session struct {
	s *ssh.Session
}

// Start starts cmd on client.
func Start(client *ssh.Client, cmd Command) (*Session, error) {
	s, err := client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("open a session in the guest: %w", err)
	}
	for k, v := range cmd.Env {
		if err := s.Setenv(k, v); err != nil {
			s.Close()
			return nil, fmt.Errorf("set %s in the guest: %w", k, err)
		}
	}
	if cmd.TTY {
		term := cmd.Term
		if term == "" {
			term = "xterm-256color"
		}
		if err := s.RequestPty(term, max(cmd.Rows, 1), max(cmd.Cols, 1), ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			s.Close()
			return nil, fmt.Errorf("allocate a terminal in the guest: %w", err)
		}
	}
	s.Stdin, s.Stdout, s.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
	if err := s.Start(cmd.Command); err != nil {
		s.Close()
		return nil, fmt.Errorf("start the command in the guest: %w", err)
	}
	return &Session{s: s}, nil
}

// Resize tells the guest the terminal's new size.
func (s *Session) Resize(cols, rows int) error { return s.s.WindowChange(rows, cols) }

// Signal sends a signal ("INT", "TERM", ...) to the command.
func (s *Session) Signal(sig string) error { return s.s.Signal(ssh.Signal(sig)) }

// Wait waits for the command and returns its exit status; a command killed
// by a signal gives 128+signal number as a shell would, and its name.
func (s *Session) Wait() (code int, signal string, err error) {
	defer s.s.Close()
	err = s.s.Wait()
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return 0, "", nil
	case errors.As(err, &ee):
		if sig := ee.Signal(); sig != "" {
			return 128 + signalNumber(sig), sig, nil
		}
		return ee.ExitStatus(), "", nil
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		return -1, "", fmt.Errorf("the guest closed the session without an exit status")
	}
	return -1, "", err
}

// Close abandons the session.
func (s *Session) Close() error { return s.s.Close() }

var signalNumbers = map[string]int{"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "ABRT": 6, "FPE": 8, "KILL": 9, "SEGV": 11, "PIPE": 13, "ALRM": 14, "TERM": 15, "USR1": 10, "USR2": 12}

func signalNumber(name string) int {
	if n, ok := signalNumbers[name]; ok {
		return n
	}
	return 0
}
