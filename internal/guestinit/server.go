package guestinit

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// defaultPath is the PATH of sessions and of the entrypoint unless the
// image says otherwise.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ServerConfig configures the guest's SSH server.
type ServerConfig struct {
	// HostKey is the server's host key.
	HostKey ssh.Signer
	// AuthorizedKeys are the only client keys accepted. There are no
	// passwords.
	AuthorizedKeys []ssh.PublicKey
	// Reaper starts and waits for every session's processes.
	Reaper *Reaper
	// Env is every session's base environment; nil means PATH only.
	// HOME, USER, LOGNAME, SHELL (and TERM with a PTY) are added per user.
	Env []string
	// ImageEnv is the image's environment, added for sessions that send
	// the env request BANGER_IMAGE_ENV=1.
	ImageEnv []string
	// UserKeysFile lists further authorized keys (the authorize
	// built-in appends to it); "" accepts only AuthorizedKeys.
	UserKeysFile string
	// Poweroff is called after the poweroff built-in has replied; nil
	// makes the built-in fail.
	Poweroff func()
	// Logger; nil discards.
	Logger *slog.Logger

	// etcDir holds the passwd and group files; "" means /etc. Tests only.
	etcDir string
	// shell is the shell for plain commands and the fallback login shell;
	// "" means /bin/sh. Tests only.
	shell string
}

// Server is the guest's SSH server.
type Server struct {
	cfg ServerConfig
	ssh *ssh.ServerConfig
	log *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu
	conns     map[net.Conn]struct{}     // guarded by mu
	closed    bool                      // guarded by mu

	connWG sync.WaitGroup // connection handlers
}

// NewServer checks cfg and builds a server; it listens nowhere until Serve.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.HostKey == nil {
		return nil, errors.New("guest SSH server: no host key")
	}
	if cfg.Reaper == nil {
		return nil, errors.New("guest SSH server: no reaper")
	}
	if cfg.Env == nil {
		cfg.Env = []string{"PATH=" + defaultPath}
	}
	if cfg.etcDir == "" {
		cfg.etcDir = "/etc"
	}
	if cfg.shell == "" {
		cfg.shell = "/bin/sh"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	authorized := make([][]byte, 0, len(cfg.AuthorizedKeys))
	for _, k := range cfg.AuthorizedKeys {
		authorized = append(authorized, k.Marshal())
	}
	sc := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			wire := key.Marshal()
			for _, a := range authorized {
				if bytes.Equal(a, wire) {
					return &ssh.Permissions{}, nil
				}
			}
			if cfg.UserKeysFile != "" {
				if ok, _ := fileHasKey(cfg.UserKeysFile, key); ok {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, fmt.Errorf("key %s is not authorized", ssh.FingerprintSHA256(key))
		},
	}
	sc.AddHostKey(cfg.HostKey)
	return &Server{
		cfg:       cfg,
		ssh:       sc,
		log:       log,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
	}, nil
}

// Serve accepts connections on l until Close; it returns nil once the
// server is closed, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		if !s.track(c) {
			c.Close()
			return nil
		}
		s.connWG.Add(1)
		go func() {
			defer s.connWG.Done()
			defer s.untrack(c)
			defer s.recoverLog("connection")
			s.handleConn(c)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops listening and drops every connection; the processes of
// their sessions get SIGHUP. It waits for the connection handlers.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.connWG.Wait()
}

// drain stops listening and waits up to timeout for the clients to hang
// up, then closes what is left. Used before poweroff, so that the reply
// to the poweroff built-in gets out before the VM stops.
func (s *Server) drain(timeout time.Duration) {
	s.mu.Lock()
	for l := range s.listeners {
		l.Close()
	}
	s.closed = true
	s.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Close()
}

const handshakeTimeout = 30 * time.Second

func (s *Server) handleConn(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	conn, chans, reqs, err := ssh.NewServerConn(c, s.ssh)
	if err != nil {
		s.log.Warn("ssh handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	defer conn.Close()
	s.log.Debug("ssh connection", "remote", c.RemoteAddr().String(), "user", conn.User())
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			go func() {
				defer s.recoverLog("session")
				s.handleSession(conn.User(), nc)
			}()
		case "direct-tcpip":
			go func() {
				defer s.recoverLog("direct-tcpip")
				handleDirectTCPIP(nc)
			}()
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "unsupported channel type")
		}
	}
}

// recoverLog keeps a panic in one goroutine from killing the init (a PID 1
// exit panics the kernel).
func (s *Server) recoverLog(what string) {
	if r := recover(); r != nil {
		s.log.Error("panic in "+what, "panic", r, "stack", string(debug.Stack()))
	}
}
